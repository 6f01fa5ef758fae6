package eventstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"
	"google.golang.org/protobuf/proto"

	"sluice.dev/sluice/libs/bus"
)

// Headers set on every stored event.
const (
	HeaderType    = "Sluice-Event-Type"
	HeaderVersion = "Sluice-Aggregate-Version"
	HeaderTime    = "Sluice-Event-Time"
)

var (
	// ErrConflict means the aggregate changed since it was loaded.
	ErrConflict = errors.New("eventstore: version conflict")
	// ErrNotFound means the aggregate has no events.
	ErrNotFound = errors.New("eventstore: aggregate not found")
)

// Event is one stored fact about an aggregate.
type Event struct {
	ID          string
	Type        string
	Aggregate   string
	AggregateID string
	Name        string
	Data        []byte
	Time        time.Time
	// Sequence is the stream sequence; Version is the 1-based position
	// within the aggregate.
	Sequence uint64
	Version  uint64
}

// Decode unmarshals the event's data into m.
func (e Event) Decode(m proto.Message) error {
	if e.Type != "" && e.Type != string(m.ProtoReflect().Descriptor().FullName()) {
		return fmt.Errorf("event %s is a %s, not a %s", e.ID, e.Type, m.ProtoReflect().Descriptor().FullName())
	}
	return proto.Unmarshal(e.Data, m)
}

// Pending is an event not yet appended.
type Pending struct {
	ID   string
	Name string
	Msg  proto.Message
	Time time.Time
}

// NewEvent makes a pending event named name (a lowercase subject token such
// as "configured") carrying msg, with a fresh ULID.
func NewEvent(name string, msg proto.Message) Pending {
	return Pending{ID: ulid.Make().String(), Name: name, Msg: msg, Time: time.Now().UTC()}
}

// Position is where an aggregate stands: the stream sequence of its last
// event and how many events it has. The zero Position is "no events yet".
type Position struct {
	Sequence uint64
	Version  uint64
}

// Aggregate is a loaded aggregate.
type Aggregate struct {
	Events []Event
	Position
}

// Store appends and loads the aggregates of one stream.
type Store struct {
	js     jetstream.JetStream
	stream string
	prefix string
}

// New returns a store over stream whose subjects start with prefix
// (e.g. bus.StreamControl, bus.SubjectControl). The stream must exist.
func New(js jetstream.JetStream, stream, prefix string) *Store {
	return &Store{js: js, stream: stream, prefix: prefix}
}

func (s *Store) filter(aggregate, id string) string {
	return bus.Subject(s.prefix, aggregate, bus.Token(id), "*")
}

// Append writes events to the aggregate if it is still at expect. It is
// idempotent on event ids: appending the same events again reports success.
func (s *Store) Append(ctx context.Context, aggregate, id string, expect Position, events ...Pending) (Position, error) {
	pos := expect
	filter := s.filter(aggregate, id)
	for i, ev := range events {
		data, err := proto.Marshal(ev.Msg)
		if err != nil {
			return pos, fmt.Errorf("encode %s: %w", ev.Name, err)
		}
		if ev.Time.IsZero() {
			ev.Time = time.Now().UTC()
		}
		m := nats.NewMsg(bus.Subject(s.prefix, aggregate, bus.Token(id), ev.Name))
		m.Data = data
		m.Header.Set(HeaderType, string(ev.Msg.ProtoReflect().Descriptor().FullName()))
		m.Header.Set(HeaderVersion, strconv.FormatUint(pos.Version+1, 10))
		m.Header.Set(HeaderTime, ev.Time.Format(time.RFC3339Nano))
		ack, err := s.publish(ctx, m,
			jetstream.WithMsgID(ev.ID),
			jetstream.WithExpectStream(s.stream),
			jetstream.WithExpectLastSequenceForSubject(pos.Sequence, filter))
		if err != nil {
			var apiErr *jetstream.APIError
			if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
				return s.settleConflict(ctx, aggregate, id, events[i:])
			}
			return pos, fmt.Errorf("append %s.%s: %w", aggregate, ev.Name, err)
		}
		if ack.Duplicate {
			// Already stored by an earlier attempt: read back where it landed.
			return s.settleConflict(ctx, aggregate, id, events[i:])
		}
		pos = Position{Sequence: ack.Sequence, Version: pos.Version + 1}
	}
	return pos, nil
}

// appendTimeout bounds an append whose context has no deadline.
const appendTimeout = 15 * time.Second

// publish stores m, and sends it again (the message id makes the stream
// deduplicate it) when an attempt has no acknowledgement after a second,
// then two, or the stream has no leader, until ctx ends. A publish in
// flight on a connection whose NATS node dies is lost without an error,
// and a stream whose leader died takes no write until the others elect
// one (after 4 to 9 s).
func (s *Store) publish(ctx context.Context, m *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, appendTimeout)
		defer cancel()
	}
	wait := time.Second
	for {
		actx, cancel := context.WithTimeout(ctx, wait)
		ack, err := s.js.PublishMsg(actx, m, opts...)
		cancel()
		switch {
		case err == nil || ctx.Err() != nil:
			return ack, err
		case errors.Is(err, context.DeadlineExceeded):
			wait = min(2*wait, 2*time.Second) // unanswered: sent again at once
		case errors.Is(err, jetstream.ErrNoStreamResponse):
			select { // no leader yet
			case <-ctx.Done():
				return nil, err
			case <-time.After(250 * time.Millisecond):
			}
		default:
			return ack, err
		}
	}
}

// settleConflict decides whether a failed append had in fact already
// succeeded (a retry) or lost a race.
func (s *Store) settleConflict(ctx context.Context, aggregate, id string, rest []Pending) (Position, error) {
	agg, err := s.Load(ctx, aggregate, id)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return Position{}, err
	}
	stored := make(map[string]bool, len(agg.Events))
	for _, e := range agg.Events {
		stored[e.ID] = true
	}
	for _, ev := range rest {
		if !stored[ev.ID] {
			return agg.Position, ErrConflict
		}
	}
	return agg.Position, nil
}

// Load reads every event of the aggregate in order.
func (s *Store) Load(ctx context.Context, aggregate, id string) (Aggregate, error) {
	var agg Aggregate
	err := s.Read(ctx, s.filter(aggregate, id), func(e Event) error {
		agg.Events = append(agg.Events, e)
		return nil
	})
	if err != nil {
		return agg, err
	}
	if len(agg.Events) == 0 {
		return agg, ErrNotFound
	}
	last := agg.Events[len(agg.Events)-1]
	agg.Position = Position{Sequence: last.Sequence, Version: uint64(len(agg.Events))}
	return agg, nil
}

// Position returns where the aggregate stands, from its last event alone
// (no read of its history): what to expect when appending to an aggregate
// whose state is kept elsewhere, such as a projection.
func (s *Store) Position(ctx context.Context, aggregate, id string) (Position, error) {
	stream, err := s.js.Stream(ctx, s.stream)
	if err != nil {
		return Position{}, fmt.Errorf("stream %s: %w", s.stream, err)
	}
	last, err := stream.GetLastMsgForSubject(ctx, s.filter(aggregate, id))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return Position{}, nil
	}
	if err != nil {
		return Position{}, fmt.Errorf("last event of %s %s: %w", aggregate, id, err)
	}
	e, err := s.eventFrom(last.Subject, last.Header, last.Data, last.Sequence)
	if err != nil {
		return Position{}, err
	}
	return Position{Sequence: e.Sequence, Version: e.Version}, nil
}

// LastSequence is the stream's last sequence: a projection that has
// applied it has applied everything stored so far.
func (s *Store) LastSequence(ctx context.Context) (uint64, error) {
	stream, err := s.js.Stream(ctx, s.stream)
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", s.stream, err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", s.stream, err)
	}
	return info.State.LastSeq, nil
}

// Read calls fn for every event stored so far on subjects matching filter
// (an absolute subject filter), in stream order.
func (s *Store) Read(ctx context.Context, filter string, fn func(Event) error) error {
	return bus.ReadStream(ctx, s.js, bus.StreamRead{Stream: s.stream, Filters: []string{filter}}, func(m jetstream.Msg) error {
		e, err := s.decode(m)
		if err != nil {
			return err
		}
		return fn(e)
	})
}

func (s *Store) decode(m jetstream.Msg) (Event, error) {
	md, err := m.Metadata()
	if err != nil {
		return Event{}, fmt.Errorf("event metadata: %w", err)
	}
	return s.eventFrom(m.Subject(), m.Headers(), m.Data(), md.Sequence.Stream)
}

func (s *Store) eventFrom(subject string, h nats.Header, data []byte, seq uint64) (Event, error) {
	e := Event{Data: data, Sequence: seq, Type: h.Get(HeaderType), ID: h.Get(jetstream.MsgIDHeader)}
	rest := subject
	if len(rest) > len(s.prefix)+1 {
		rest = rest[len(s.prefix)+1:]
	}
	parts := splitDots(rest)
	if len(parts) != 3 {
		return Event{}, fmt.Errorf("event subject %q: want <aggregate>.<id>.<event>", subject)
	}
	e.Aggregate, e.Name = parts[0], parts[2]
	id, ok := bus.DecodeToken(parts[1])
	if !ok {
		return Event{}, fmt.Errorf("event subject %q: bad aggregate id", subject)
	}
	e.AggregateID = id
	if v := h.Get(HeaderVersion); v != "" {
		e.Version, _ = strconv.ParseUint(v, 10, 64)
	}
	if t := h.Get(HeaderTime); t != "" {
		e.Time, _ = time.Parse(time.RFC3339Nano, t)
	}
	return e, nil
}

func splitDots(s string) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); i++ {
		if s[i] == '.' {
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}
