// Package gateway is the protocol-neutral kernel every protocol worker
// plugs into (the PostgreSQL, SSH and MCP workers). It owns what a
// worker does whatever the wire protocol:
//
//   - the control-plane views a worker follows (configuration, approvals
//     and grants), served only once loaded;
//   - the listener, session slots (a bound on concurrent sessions, refused
//     with the protocol's own error) and panic containment per connection;
//   - verifying the caller through the identity service, and verifying
//     every open session again when the identity configuration changes;
//   - asking the policy service, with a protocol-specific classification
//     and a protocol-chosen cache key, and caching decisions per principal,
//     target and key until the policy or the grants change;
//   - write-ahead recording (libs/recording) and authentication failures
//     as events;
//   - approval holds: open the request, tell the client (the protocol
//     says how), wait while the client waits, consume the approval, and
//     withdraw the request when the client stops waiting;
//   - session registry for kill and shutdown, and token expiry.
//
// A worker supplies only its protocol: how a connection starts, how a
// command is classified and how decisions are shown to the client.
package gateway
