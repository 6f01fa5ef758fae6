// Package mcpworker is Sluice's Model Context Protocol endpoint: coding
// agents (any MCP client) discover Sluice's tools at /mcp (streamable HTTP)
// and call them under the same controls as the native protocols.
//
//   - Authorization as the MCP specification asks: OAuth 2.0 Protected
//     Resource Metadata (RFC 9728) names the trusted issuers, every request
//     carries a bearer access token that the identity service verifies, a
//     401 says where the metadata is (WWW-Authenticate), and no token ever
//     reaches a target (Sluice logs in with the credentials it holds).
//   - An MCP session belongs to the principal that opened it: a session id
//     presented with another principal's token is refused. Requests from a
//     browser origin other than the endpoint's own (DNS rebinding) are
//     refused.
//   - Each MCP session is an audit session with protocol mcp; each tool call
//     is a command in it, ruled on by the policy service as the command it
//     runs (run_sql as SQL, run_command as an SSH exec) with `mcp` (the tool
//     and its arguments) beside it, recorded before it runs, its results
//     masked before they leave Sluice.
//   - A held call answers at once with the approval id, who may approve and
//     how; the agent collects the outcome with collect_result (waiting a
//     bounded time, with progress notifications when it asked for them).
//
// The worker runs on the gateway kernel (libs/gateway) like the PostgreSQL
// and SSH workers: tools.go declares the tools, session.go binds MCP
// sessions to principals and audit sessions, sql.go and command.go run the
// calls, hold.go holds and collects them, auth.go is the HTTP side.
package mcpworker
