// Package pgworker is the PostgreSQL worker: a wire-protocol gateway on
// :15432 that psql, pgbench and every driver connect to with an OIDC access
// token as the password and the target's name as the database.
//
// Per connection it terminates TLS (SSLRequest or PostgreSQL 17 direct TLS
// with ALPN "postgresql"; plaintext and GSS encryption are refused before any
// password is asked for), verifies the token through the identity service,
// connects to the target with the credential Sluice holds, and then relays
// messages. Every statement - a simple Query, or the SQL of a Parse in the
// extended protocol - is ruled on by the policy service before it reaches
// the server. A denied statement never reaches it: the worker sends a
// harmless statement that fails instead ("probe"), so that the server's own
// error handling keeps the protocol, pipelining and transaction state exact,
// and rewrites the server's error into the denial the client sees (SQLSTATE
// 42501, naming the rule).
//
// Recording is write-ahead: a write is forwarded only once its event is
// durable in JetStream; for reads, the result is held until the event is
// durable. A session whose recording fails refuses every further statement.
//
// Frames are forwarded without decoding unless the worker must look inside
// (Query, Parse, Bind, Execute, Close from the client; CommandComplete,
// ErrorResponse, ReadyForQuery, ParameterStatus and - when masking applies -
// row data from the server).
//
// Identity: the startup "user" parameter is recorded but never trusted; who
// the client is comes from the token alone. A session ends when its token
// expires (FATAL 57P01), unless a fresh token of the same principal renews
// it first (renew.go; the client learns its session id from the
// ParameterStatus sluice.session_id).
package pgworker
