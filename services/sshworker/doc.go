// Package sshworker is the SSH worker: an SSH server on :12222 that an
// unmodified OpenSSH client (ssh, scp, sftp) connects to, in front of
// targets of kind ssh, built on the gateway kernel (libs/gateway).
//
// Who you are: OpenSSH cannot present an OIDC access token, so clients log
// in with a short-lived SSH user certificate that Sluice issued for a
// verified token (sluice ssh login; libs/sshca). The worker accepts only
// certificates its user authority signed, valid now, and verifies the
// token the certificate carries through the identity service, as the
// PostgreSQL worker verifies its password: the session ends when the token
// expires. The login name is the target's name (ssh demo-ssh@gateway).
//
// Target credentials stay with Sluice: the worker logs in to the target
// with the private key configured for it, and checks the target's host key
// against the one pinned in configuration.
//
// Every request is a policy decision: exec commands (classified by
// libs/shellclass: every program run, through pipelines, substitutions,
// nested shells and wrappers), shells, subsystems (sftp, hence scp),
// environment variables, port forwarding, agent and X11 forwarding. A
// denial is written to the client's stderr with the rule and reason, and
// the command exits with status 77 (EX_NOPERM). A held command says on
// stderr which approval to ask for, waits (bounded), then runs exactly the
// approved command once, or exits 77. A client that disconnects while held
// withdraws its request.
//
// Recording is write-ahead: a command's event is durable before the command
// reaches the target. Output (and, for shells, input) is recorded in chunks
// of at most 16 KiB without waiting for each; before the client learns that
// a command ended, every chunk is durable, and a session whose recording
// fails ends. The value detectors mask output before it leaves Sluice
// (libs/masking Stream: values split across chunks are found); binary
// channels (sftp, forwarding) cannot be masked and are refused when masking
// applies.
package sshworker
