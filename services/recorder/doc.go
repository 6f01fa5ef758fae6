// Package recorder is the recorder service. It consumes session events from
// the SESSIONS work queue (one durable consumer; one replica at a time is
// pinned to it and the others take over when it stops) and appends each,
// in per-session order, to the immutable AUDIT stream as a
// hash-chained record (libs/auditchain), with optimistic concurrency per
// session subject so that replicas never fork a chain. It periodically signs
// the chain heads it advanced (Ed25519 checkpoints, themselves chained), and
// keeps an index of sessions in the sluice_sessions bucket.
//
// Invariants: an event is acknowledged on SESSIONS only after its record is
// stored in AUDIT; a redelivered event is recognised by its seq and id and
// never stored twice; an event that arrives before its predecessor waits for
// it, and a predecessor that never arrives (the worker lost it) is recorded
// as a gap rather than silently skipped.
package recorder
