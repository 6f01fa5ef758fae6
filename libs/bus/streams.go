package bus

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Streams, subjects and buckets of the Sluice topology. Each context has one
// stream; see ARCHITECTURE.md for who writes and who reads each.
const (
	StreamControl  = "CONTROL"
	SubjectControl = "sluice.evt.control"

	StreamApprovals  = "APPROVALS"
	SubjectApprovals = "sluice.evt.approvals"

	// StreamSessions is the ingest queue of session events from workers.
	StreamSessions  = "SESSIONS"
	SubjectSessions = "sluice.rec"

	// StreamAudit is the immutable, hash-chained audit log.
	StreamAudit  = "AUDIT"
	SubjectAudit = "sluice.audit"

	// BucketControl holds the projection of the control stream.
	BucketControl = "sluice_control"
	// BucketApprovals holds the projection of the approvals stream: the
	// hot view (pending, deciding, in force, and recently decided).
	BucketApprovals = "sluice_approvals"
	// BucketApprovalsHistory holds the approvals retired from the hot
	// view, in the order they retired.
	BucketApprovalsHistory = "sluice_approvals_history"
	// BucketSessions indexes recorded sessions (written by the recorder).
	BucketSessions = "sluice_sessions"
	// BucketAuditKeys holds the recorders' checkpoint public keys.
	BucketAuditKeys = "sluice_audit_keys"
	// BucketWorkers holds the protocol workers' presence (WorkerKey →
	// WorkerPresence), written by each worker while it serves.
	BucketWorkers = "sluice_workers"
)

// WorkerPresenceEvery is how often a worker writes its presence again;
// WorkerSilence is how long one may be silent before it counts as gone
// (its open sessions are then shown lost). A worker that could not write
// its presence for WorkerFence ends its sessions and records nothing more
// until it writes it again, so that a session shown lost is one that can
// never go on. The bucket forgets a key after WorkerForget.
const (
	WorkerPresenceEvery = 5 * time.Second
	WorkerSilence       = 20 * time.Second
	WorkerFence         = WorkerSilence - WorkerPresenceEvery
	WorkerForget        = time.Minute
)

// WorkerKey is a worker name as a sluice_workers key: the characters a
// key may not hold become '_'.
func WorkerKey(name string) string {
	b := []byte(name)
	for i, c := range b {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_', c == '=':
		default:
			b[i] = '_'
		}
	}
	if len(b) == 0 {
		return "_"
	}
	return string(b)
}

// Topology says how streams are sized and replicated. The zero value is a
// single-node development setup.
type Topology struct {
	// Replicas is 1 for a single server, 3 for a production cluster.
	Replicas int
	// AuditMaxBytes caps the audit stream; when it is full, new records are
	// refused (discard-new) and workers stop running commands: fail closed.
	// Zero means unlimited (bounded by the server's JetStream storage).
	AuditMaxBytes int64
	// SessionsMaxBytes caps the ingest queue. Zero means unlimited.
	SessionsMaxBytes int64
}

func (t Topology) replicas() int {
	if t.Replicas <= 0 {
		return 1
	}
	return t.Replicas
}

// EventStream is the configuration of a control-plane event stream
// (CONTROL, APPROVALS): append-only, never deleted or purged.
func (t Topology) EventStream(name, subject string) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        name,
		Subjects:    []string{subject + ".>"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardNew,
		Duplicates:  2 * time.Minute,
		DenyDelete:  true,
		DenyPurge:   true,
		AllowRollup: false,
		Replicas:    t.replicas(),
	}
}

// SessionsStream is the ingest queue: workers publish session events here and
// learn they are durable from the publish acknowledgement; the recorder moves
// them into AUDIT and acknowledges, which removes them.
func (t Topology) SessionsStream() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:       StreamSessions,
		Subjects:   []string{SubjectSessions + ".>"},
		Storage:    jetstream.FileStorage,
		Retention:  jetstream.WorkQueuePolicy,
		Discard:    jetstream.DiscardNew,
		MaxBytes:   orUnlimited(t.SessionsMaxBytes),
		Duplicates: 2 * time.Minute,
		Replicas:   t.replicas(),
	}
}

// AuditStream is the immutable audit log: deny delete, deny purge, no rollup,
// discard new when full, a duplicate window.
func (t Topology) AuditStream() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        StreamAudit,
		Subjects:    []string{SubjectAudit + ".>"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardNew,
		MaxBytes:    orUnlimited(t.AuditMaxBytes),
		Duplicates:  2 * time.Minute,
		DenyDelete:  true,
		DenyPurge:   true,
		AllowRollup: false,
		Replicas:    t.replicas(),
	}
}

// KV is the configuration of a projection bucket.
func (t Topology) KV(bucket string) jetstream.KeyValueConfig {
	if bucket == BucketWorkers {
		// Presence: only the last word of each worker, forgotten soon.
		return jetstream.KeyValueConfig{Bucket: bucket, History: 1, TTL: WorkerForget, Storage: jetstream.FileStorage, Replicas: t.replicas()}
	}
	return jetstream.KeyValueConfig{
		Bucket:   bucket,
		History:  5,
		Storage:  jetstream.FileStorage,
		Replicas: t.replicas(),
	}
}

func orUnlimited(n int64) int64 {
	if n <= 0 {
		return -1
	}
	return n
}

// streams are the topology's streams, in the order they are provisioned.
func (t Topology) streams() []jetstream.StreamConfig {
	return []jetstream.StreamConfig{
		t.EventStream(StreamControl, SubjectControl),
		t.EventStream(StreamApprovals, SubjectApprovals),
		t.SessionsStream(),
		t.AuditStream(),
	}
}

// buckets are the topology's key-value buckets.
var buckets = []string{BucketControl, BucketApprovals, BucketApprovalsHistory, BucketSessions, BucketAuditKeys, BucketWorkers}

// stream returns the configuration of a stream of the topology.
func (t Topology) stream(name string) (jetstream.StreamConfig, bool) {
	for _, cfg := range t.streams() {
		if cfg.Name == name {
			return cfg, true
		}
	}
	return jetstream.StreamConfig{}, false
}

// Provision creates every stream and bucket of the topology, idempotently
// (tests, and an operator with the break-glass identity).
func Provision(ctx context.Context, js jetstream.JetStream, t Topology) error {
	var all []Store
	for _, cfg := range t.streams() {
		all = append(all, Store{Stream: cfg.Name})
	}
	for _, b := range buckets {
		all = append(all, Store{Bucket: b})
	}
	return ProvisionStores(ctx, js, t, all)
}

// ProvisionStores creates the given streams and buckets, idempotently. A
// component provisions what it owns (Component.Owns) and waits for what it
// needs from others (Missing), so no start order is required.
func ProvisionStores(ctx context.Context, js jetstream.JetStream, t Topology, stores []Store) error {
	for _, st := range stores {
		switch {
		case st.Stream != "":
			cfg, ok := t.stream(st.Stream)
			if !ok {
				return fmt.Errorf("provision: unknown stream %s", st.Stream)
			}
			if _, err := EnsureStream(ctx, js, cfg); err != nil {
				return err
			}
		case st.Bucket != "":
			if _, err := EnsureKV(ctx, js, t.KV(st.Bucket)); err != nil {
				return err
			}
		}
	}
	return nil
}
