// Package targets is how Sluice logs in to its targets with the credentials
// it holds: the target's credential is resolved (libs/secrets: sealed under
// the master key, or a reference to an environment variable or a file) only
// where the login happens, in a protocol worker, and never leaves it. Every
// worker that reaches a target of a kind logs in the same way, with the
// same checks: TLS as the target configuration asks for PostgreSQL, the
// pinned host key and AES-GCM ciphers for SSH.
package targets
