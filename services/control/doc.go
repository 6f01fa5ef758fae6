// Package control is the control service: it owns the CONTROL event stream.
// `sluice apply` reaches it through the HTTP API on
// sluice.api.control.config.apply; it validates the file (shape, then every
// policy rule type-checked by libs/policy; every error names its line and
// column in the file as sent, a CEL error the place inside its `when`),
// compares each piece with the stored aggregate by digest and appends only
// what changed, so applying the same file twice changes nothing. It runs
// the projection of CONTROL into the sluice_control bucket that every other
// service reads (libs/controlstate).
//
// Invariants: credentials are stored as references or as sealed ciphertext,
// never in clear; listing targets never returns a credential.
package control
