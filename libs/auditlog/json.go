package auditlog

import (
	"context"
	"encoding/json"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/encoding/protojson"

	"sluice.dev/sluice/libs/recording"
	"sluice.dev/sluice/libs/visible"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
)

// Kind names an event body, as on the SESSIONS subjects; a lost event
// (a gap record) has none.
func Kind(ev *sessionv1.Event) string {
	if ev == nil {
		return "gap"
	}
	return recording.Kind(ev)
}

// EntryKind names an entry: its event's kind, "gap" or "lost".
func EntryKind(e Entry) string {
	if e.Event == nil && e.Record.GetLost() != "" {
		return "lost"
	}
	return Kind(e.Event)
}

var marshal = protojson.MarshalOptions{UseProtoNames: true}

// JSON is the machine-readable form of a record.
func JSON(e Entry) map[string]any {
	out := map[string]any{
		"stream_seq": e.StreamSeq,
		"session":    e.Record.GetSessionId(),
		"seq":        e.Seq,
		"event_id":   e.EventID,
		"kind":       EntryKind(e),
	}
	if e.Record.GetGapTo() > 0 {
		out["gap_to"] = e.Record.GetGapTo()
	}
	if lost := e.Record.GetLost(); lost != "" {
		out["lost"] = lost
		out["time"] = e.Record.GetRecordedAt().AsTime()
	}
	if e.Event != nil {
		out["time"] = e.Event.GetTime().AsTime()
		if b, err := marshal.Marshal(e.Event); err == nil {
			out["event"] = json.RawMessage(b)
		}
		if c := e.Event.GetCommand(); c != nil {
			// The command as a person must see it (a screen would reorder
			// or hide some of what the client sent).
			out["shown"] = visible.Text(c.GetText())
		}
	}
	return out
}

// Context remembers each session's Started event, looking it up in AUDIT
// for sessions that began before the reader started.
type Context struct {
	js jetstream.JetStream
	mu sync.Mutex
	m  map[string]*sessionv1.Started
}

// NewContext returns an empty context cache.
func NewContext(js jetstream.JetStream) *Context {
	return &Context{js: js, m: map[string]*sessionv1.Started{}}
}

// Started returns the session's Started event, or nil.
func (c *Context) Started(ctx context.Context, e Entry) *sessionv1.Started {
	id := e.Record.GetSessionId()
	if s, ok := e.Event.GetBody().(*sessionv1.Event_Started); ok {
		c.put(id, s.Started)
		return s.Started
	}
	c.mu.Lock()
	st, ok := c.m[id]
	c.mu.Unlock()
	if ok {
		return st
	}
	_ = Read(ctx, c.js, Options{Session: id}, func(first Entry) error {
		if s, ok := first.Event.GetBody().(*sessionv1.Event_Started); ok {
			st = s.Started
		}
		return errStop
	})
	c.put(id, st)
	return st
}

func (c *Context) put(id string, s *sessionv1.Started) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) > 100000 {
		c.m = map[string]*sessionv1.Started{}
	}
	c.m[id] = s
}

type stopErr struct{}

func (stopErr) Error() string { return "stop" }

var errStop error = stopErr{}

// IsStop reports the sentinel used to end a Read early.
func IsStop(err error) bool { _, ok := err.(stopErr); return ok }
