// Package eventstore keeps aggregates as streams of events in JetStream.
//
// An aggregate (a target, a policy set, an approval request) lives on the
// subjects <prefix>.<aggregate>.<id>.<event> of one stream. Append uses the
// server's per-subject optimistic concurrency (Expected-Last-Subject-Sequence
// over the aggregate's wildcard) and deduplicates on the event id, so a retried
// append never writes twice. Load folds an aggregate's events in order.
// Projections are durable consumers that apply events one at a time and resume
// where they stopped after a restart; their handlers must be idempotent.
package eventstore
