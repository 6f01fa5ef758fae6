// Package auditlog reads the AUDIT stream: a session's records, every
// record with the checkpoints (for verification), a live tail (for SIEM
// export), the session index and the recorders' public keys. It also renders
// records for people (a transcript), for machines (JSON) and for SIEMs (OCSF),
// and, for SIEMs too, the control-plane events that happen outside sessions
// (approvals and their decisions, configuration changes; see Fact).
// It only reads: writing AUDIT is the recorder's alone.
package auditlog

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"sluice.dev/sluice/libs/auditchain"
	"sluice.dev/sluice/libs/bus"
	auditv1 "sluice.dev/sluice/proto/sluice/audit/v1"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
)

// Subjects of AUDIT.
const (
	SubjectCheckpoint = bus.SubjectAudit + ".checkpoint"
	subjectRecords    = bus.SubjectAudit + ".s"
)

// SessionSubject is where a session's records live.
func SessionSubject(session string) string {
	return bus.Subject(subjectRecords, bus.Token(session))
}

// Entry is one item of the stream: an event of a record, a gap record, or a
// checkpoint. A record that holds several events gives one entry per event,
// each pointing to the same Record.
type Entry struct {
	StreamSeq  uint64
	Time       time.Time
	Record     *auditv1.Record
	Checkpoint *auditv1.Checkpoint
	// Index is the event's position in its record; Seq and EventID are the
	// event's (for a gap, the first lost seq and no id).
	Index   int
	Seq     uint64
	EventID string
	// Event is the decoded session event (nil for gaps and for an event
	// that cannot be decoded).
	Event *sessionv1.Event
}

// First reports whether the entry is its record's first (or only) entry.
func (e Entry) First() bool { return e.Index == 0 }

// ErrUnreadable marks an entry that cannot be decoded.
var ErrUnreadable = errors.New("auditlog: unreadable entry")

// Decode reads one AUDIT message: a checkpoint, a gap, or a record's
// events, one entry each.
func Decode(m jetstream.Msg) ([]Entry, error) {
	md, err := m.Metadata()
	if err != nil {
		return nil, err
	}
	e := Entry{StreamSeq: md.Sequence.Stream, Time: md.Timestamp}
	if m.Subject() == SubjectCheckpoint {
		var c auditv1.Checkpoint
		if err := proto.Unmarshal(m.Data(), &c); err != nil {
			return nil, fmt.Errorf("%w: checkpoint at %d", ErrUnreadable, e.StreamSeq)
		}
		e.Checkpoint = &c
		return []Entry{e}, nil
	}
	var r auditv1.Record
	if err := proto.Unmarshal(m.Data(), &r); err != nil {
		return nil, fmt.Errorf("%w: record at %d", ErrUnreadable, e.StreamSeq)
	}
	e.Record, e.Seq = &r, r.GetSeq()
	if r.GetGapTo() > 0 || len(r.GetEvents()) == 0 {
		return []Entry{e}, nil
	}
	out := make([]Entry, len(r.GetEvents()))
	for i, b := range r.GetEvents() {
		x := e
		x.Index, x.Seq = i, r.GetSeq()+uint64(i)
		if i < len(r.GetEventIds()) {
			x.EventID = r.GetEventIds()[i]
		}
		var ev sessionv1.Event
		if proto.Unmarshal(b, &ev) == nil {
			x.Event = &ev
		}
		out[i] = x
	}
	return out, nil
}

// Options selects what Read returns.
type Options struct {
	// Session restricts to one session's records (no checkpoints).
	Session string
	// Checkpoints includes checkpoints (when Session is empty).
	Checkpoints bool
	// StartSeq starts at a stream sequence; StartTime at a time.
	StartSeq  uint64
	StartTime time.Time
	// Follow keeps reading new entries until ctx is done.
	Follow bool
}

// Read calls fn for each entry in stream order. Without Follow it stops at
// the last entry present when it started.
func Read(ctx context.Context, js jetstream.JetStream, o Options, fn func(Entry) error) error {
	filters := []string{subjectRecords + ".>"}
	if o.Session != "" {
		filters = []string{SessionSubject(o.Session)}
	} else if o.Checkpoints {
		filters = append(filters, SubjectCheckpoint)
	}
	r := bus.StreamRead{Stream: bus.StreamAudit, Filters: filters, From: o.StartSeq, FromTime: o.StartTime, Follow: o.Follow, Batch: 512}
	err := bus.ReadStream(ctx, js, r, func(m jetstream.Msg) error {
		entries, err := Decode(m)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if err := fn(e); err != nil {
				return err
			}
		}
		return nil
	})
	if IsStop(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read audit: %w", err)
	}
	return nil
}

// Keys returns the recorders' checkpoint public keys by key id.
func Keys(ctx context.Context, js jetstream.JetStream) (map[string]ed25519.PublicKey, error) {
	kv, err := js.KeyValue(ctx, bus.BucketAuditKeys)
	if err != nil {
		return nil, err
	}
	keys := map[string]ed25519.PublicKey{}
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	for k := range lister.Keys() {
		e, err := kv.Get(ctx, k)
		if err != nil {
			continue
		}
		if pub := ed25519.PublicKey(e.Value()); len(pub) == ed25519.PublicKeySize && auditchain.KeyID(pub) == k {
			keys[k] = pub
		}
	}
	return keys, nil
}

// ErrNoCheckpoint: the stream holds no checkpoint yet.
var ErrNoCheckpoint = errors.New("no checkpoint")

// LastCheckpoint returns the newest checkpoint and its stream seq.
func LastCheckpoint(ctx context.Context, js jetstream.JetStream) (*auditv1.Checkpoint, uint64, error) {
	st, err := js.Stream(ctx, bus.StreamAudit)
	if err != nil {
		return nil, 0, err
	}
	m, err := st.GetLastMsgForSubject(ctx, SubjectCheckpoint)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, 0, ErrNoCheckpoint
	}
	if err != nil {
		return nil, 0, err
	}
	var cp auditv1.Checkpoint
	if err := proto.Unmarshal(m.Data, &cp); err != nil {
		return nil, 0, fmt.Errorf("checkpoint at stream seq %d: %w", m.Sequence, err)
	}
	return &cp, m.Sequence, nil
}

// Sessions returns the session index, newest first.
func Sessions(ctx context.Context, js jetstream.JetStream) ([]*sessionv1.Summary, error) {
	kv, err := js.KeyValue(ctx, bus.BucketSessions)
	if err != nil {
		return nil, err
	}
	lister, err := kv.ListKeys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []*sessionv1.Summary
	for k := range lister.Keys() {
		e, err := kv.Get(ctx, k)
		if err != nil {
			continue
		}
		var s sessionv1.Summary
		if proto.Unmarshal(e.Value(), &s) == nil {
			out = append(out, &s)
		}
	}
	sortNewestFirst(out)
	return out, nil
}

// Verify reads AUDIT (one session, or everything) and reports problems:
// the hash chains, the signed checkpoints, the anchors (checkpoints known
// from outside the stream) and the sessions index (every session it lists
// has its records).
func Verify(ctx context.Context, js jetstream.JetStream, session string, keys map[string]ed25519.PublicKey, anchors ...*auditchain.Anchor) (*auditchain.Verifier, []auditchain.Problem, error) {
	v := auditchain.NewVerifier(keys)
	v.Anchors = anchors
	// The index first: a session indexed while the stream is read has its
	// records in the stream already (the recorder indexes after storing).
	index, err := Sessions(ctx, js)
	if err != nil {
		return nil, nil, fmt.Errorf("sessions index: %w", err)
	}
	for _, s := range index {
		if session == "" || s.GetSessionId() == session {
			v.AddIndexed(s.GetSessionId(), s.GetStartedAt().AsTime(), s.GetLastSeq())
		}
	}
	err = Read(ctx, js, Options{Checkpoints: true}, func(e Entry) error {
		switch {
		case e.Checkpoint != nil:
			v.AddCheckpoint(e.Checkpoint)
		case e.First() && (session == "" || e.Record.GetSessionId() == session):
			v.Add(auditchain.Stored{Record: e.Record, StreamSeq: e.StreamSeq})
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return v, v.Problems(session), nil
}
