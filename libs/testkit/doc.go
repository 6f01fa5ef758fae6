// Package testkit starts the real dependencies Sluice's tests run against:
// embedded NATS servers (single or a three-node JetStream cluster) and a real
// PostgreSQL server (initdb in a temporary directory, random port). Nothing
// here is a mock.
package testkit
