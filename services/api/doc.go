// Package api is Sluice's HTTP API on :8080: health and readiness, and the
// /api/v1 endpoints the CLI and integrations use (its metrics are the
// process's, served by the admin server of libs/telemetry). Every
// /api/v1 call carries a bearer token that the identity service verifies
// (through libs/authn); the API then forwards the request to the owning
// service over NATS. The API holds no state of its own.
//
// Errors are JSON objects {"error": code, "reason": text}; 401 answers also
// carry a WWW-Authenticate header with the same reason (RFC 6750).
package api
