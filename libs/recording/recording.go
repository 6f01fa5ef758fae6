// Package recording is the workers' side of the audit contract: a worker
// opens a Session, emits its events (start, commands, decisions, results,
// I/O, end) to the SESSIONS stream, and learns when they are durable. A
// worker holds a statement until Durable returns (write-ahead), and refuses
// to run statements when it cannot record: every failure is sticky, so a
// session that lost its recorder stays closed.
//
// Events are published asynchronously in order, numbered per session from
// 1 without gaps, with the event id as the JetStream message id, so a retry
// never writes twice. The recorder service chains them into AUDIT.
package recording

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"sluice.dev/sluice/libs/bus"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
)

// ErrNotRecording means the session's events could not be made durable; the
// worker must not run further commands.
var ErrNotRecording = errors.New("recording: the audit stream is not accepting events")

// Recorder publishes session events.
type Recorder struct {
	js jetstream.JetStream
	// Timeout bounds how long Durable waits; default 5s.
	Timeout time.Duration
}

// New returns a recorder on a JetStream context.
func New(js jetstream.JetStream) *Recorder {
	return &Recorder{js: js, Timeout: 5 * time.Second}
}

// Session is one recorded session. It is safe for concurrent use.
type Session struct {
	ID string
	r  *Recorder

	mu      sync.Mutex
	seq     uint64
	durable uint64 // every event up to this seq is stored
	pending []pending
	err     error
}

type pending struct {
	seq uint64
	msg *nats.Msg
	id  string
	fut jetstream.PubAckFuture
}

// NewSessionID returns a fresh session id: a ULID in lowercase, so that it
// is a subject token as is.
func NewSessionID() string { return strings.ToLower(ulid.Make().String()) }

// Open starts recording a session with the given id.
func (r *Recorder) Open(id string) *Session {
	return &Session{ID: id, r: r}
}

// Kind is the subject token of an event body.
func Kind(ev *sessionv1.Event) string {
	switch ev.GetBody().(type) {
	case *sessionv1.Event_Started:
		return "started"
	case *sessionv1.Event_Command:
		return "command"
	case *sessionv1.Event_Decided:
		return "decided"
	case *sessionv1.Event_Approval:
		return "approval"
	case *sessionv1.Event_Result:
		return "result"
	case *sessionv1.Event_Masking:
		return "masking"
	case *sessionv1.Event_Io:
		return "io"
	case *sessionv1.Event_Ended:
		return "ended"
	case *sessionv1.Event_AuthFailed:
		return "auth_failed"
	}
	return "event"
}

// Subject is where a session's event is published:
// sluice.rec.<session>.<seq>.<kind>. The seq in the subject lets the
// recorder see whether a missing predecessor is still waiting in SESSIONS.
func Subject(session string, seq uint64, kind string) string {
	return bus.Subject(bus.SubjectSessions, bus.Token(session), strconv.FormatUint(seq, 10), kind)
}

// PendingSubject matches a session's event with a given seq, any kind.
func PendingSubject(session string, seq uint64) string {
	return bus.Subject(bus.SubjectSessions, bus.Token(session), strconv.FormatUint(seq, 10), "*")
}

// Emit numbers ev, stamps it and publishes it without waiting; it returns
// the event's seq, or the sticky error of an earlier failure.
func (s *Session) Emit(ev *sessionv1.Event) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return 0, s.err
	}
	s.seq++
	ev.Id = ulid.Make().String()
	ev.SessionId = s.ID
	ev.Seq = s.seq
	if ev.Time == nil {
		ev.Time = timestamppb.Now()
	}
	data, err := proto.Marshal(ev)
	if err != nil {
		s.err = fmt.Errorf("%w: encode: %v", ErrNotRecording, err)
		return 0, s.err
	}
	m := nats.NewMsg(Subject(s.ID, s.seq, Kind(ev)))
	m.Data = data
	fut, err := s.r.js.PublishMsgAsync(m, jetstream.WithMsgID(ev.Id), jetstream.WithExpectStream(bus.StreamSessions))
	if err != nil {
		fut = nil // Durable retries it synchronously
	}
	s.pending = append(s.pending, pending{seq: s.seq, msg: m, id: ev.Id, fut: fut})
	return s.seq, nil
}

// Durable waits until every event emitted so far is stored.
func (s *Session) Durable(ctx context.Context) error {
	return s.WaitFor(ctx, s.Seq())
}

// WaitFor waits until every event up to seq is stored, retrying failed
// publishes (deduplicated by event id). Emit is not blocked meanwhile. On
// failure the session is closed for good.
func (s *Session) WaitFor(ctx context.Context, seq uint64) error {
	s.mu.Lock()
	if s.err != nil || seq <= s.durable {
		err := s.err
		s.mu.Unlock()
		return err
	}
	var wait []pending
	for _, p := range s.pending {
		if p.seq > seq {
			break
		}
		wait = append(wait, p)
	}
	s.mu.Unlock()

	timeout := s.r.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for _, p := range wait {
		if p.fut != nil {
			select {
			case <-p.fut.Ok():
				continue
			case <-p.fut.Err():
			case <-ctx.Done():
				return s.fail(ctx.Err())
			}
		}
		if err := s.retry(ctx, p); err != nil {
			return s.fail(err)
		}
	}
	s.mu.Lock()
	if seq > s.durable {
		s.durable = seq
	}
	i := 0
	for i < len(s.pending) && s.pending[i].seq <= s.durable {
		i++
	}
	s.pending = append(s.pending[:0], s.pending[i:]...)
	s.mu.Unlock()
	return nil
}

func (s *Session) fail(err error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		s.err = fmt.Errorf("%w: %v", ErrNotRecording, err)
	}
	return s.err
}

func (s *Session) retry(ctx context.Context, p pending) error {
	var err error
	for attempt := 0; ; attempt++ {
		_, err = s.r.js.PublishMsg(ctx, p.msg, jetstream.WithMsgID(p.id), jetstream.WithExpectStream(bus.StreamSessions))
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Duration(10*(attempt+1)) * time.Millisecond):
		}
	}
}

// Record emits ev and waits until it, and everything before it, is durable.
func (s *Session) Record(ctx context.Context, ev *sessionv1.Event) error {
	seq, err := s.Emit(ev)
	if err != nil {
		return err
	}
	return s.WaitFor(ctx, seq)
}

// Seq is the number of events emitted.
func (s *Session) Seq() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seq
}

// Err reports the sticky failure, if any.
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}
