// Package sluice is the composition root: the `sluice` binary is the CLI
// (talking to the HTTP API), `sluice serve <service>` (one service against an
// external NATS) and `sluice dev` (every service in one process on embedded
// JetStream, with a development identity provider and a demo PostgreSQL).
// It is the only package that imports more than one service.
package sluice
