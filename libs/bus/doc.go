// Package bus owns Sluice's use of NATS: connecting (URL, credentials file,
// TLS), running an embedded JetStream server for `sluice dev` and tests,
// provisioning streams and key-value buckets idempotently, and building
// subjects safely from user-supplied strings.
//
// Invariants: a user-supplied string never becomes a subject token unencoded
// (see Token); provisioning never weakens an existing stream's protections.
package bus
