package recorder

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"sluice.dev/sluice/libs/auditchain"
	"sluice.dev/sluice/libs/auditlog"
	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/recording"
	auditv1 "sluice.dev/sluice/proto/sluice/audit/v1"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
)

// ConsumerName is the durable consumer on SESSIONS shared by replicas.
const ConsumerName = "recorder"

// priorityGroup is the consumer's priority group for pinning.
const priorityGroup = "recorders"

// maxSignedRecords bounds the record hashes a checkpoint signs per session.
const maxSignedRecords = 1000

// Config configures the recorder.
type Config struct {
	Conn *bus.Conn
	Log  zerolog.Logger
	// SigningKey signs checkpoints; required.
	SigningKey ed25519.PrivateKey
	// CheckpointInterval default 5s.
	CheckpointInterval time.Duration
	// GapTimeout is how long after an event was stored a missing
	// predecessor that is nowhere (neither waiting in SESSIONS nor in AUDIT)
	// is declared lost and recorded as a gap; default 10s (longer than a
	// worker's publish retries).
	GapTimeout time.Duration
	// Shards is the number of concurrent appenders; default 8.
	Shards int
}

// Service is the recorder.
type Service struct {
	cfg      Config
	audit    jetstream.Stream
	sessions jetstream.Stream
	index    jetstream.KeyValue
	shards   []chan jetstream.Msg

	mu    sync.Mutex
	dirty map[string]*auditv1.ChainHead
}

type head struct {
	seq       uint64
	hash      []byte
	eventID   string
	streamSeq uint64
}

// New returns the service.
func New(cfg Config) *Service {
	if cfg.CheckpointInterval <= 0 {
		cfg.CheckpointInterval = 5 * time.Second
	}
	if cfg.GapTimeout <= 0 {
		cfg.GapTimeout = 10 * time.Second
	}
	if cfg.Shards <= 0 {
		cfg.Shards = 8
	}
	return &Service{cfg: cfg, dirty: map[string]*auditv1.ChainHead{}}
}

// Run records until ctx is done.
func (s *Service) Run(ctx context.Context) error {
	if len(s.cfg.SigningKey) != ed25519.PrivateKeySize {
		return errors.New("recorder: an Ed25519 signing key is required")
	}
	js := s.cfg.Conn.JS
	var err error
	if s.audit, err = js.Stream(ctx, bus.StreamAudit); err != nil {
		return fmt.Errorf("recorder: %w", err)
	}
	if s.sessions, err = js.Stream(ctx, bus.StreamSessions); err != nil {
		return fmt.Errorf("recorder: %w", err)
	}
	if s.index, err = js.KeyValue(ctx, bus.BucketSessions); err != nil {
		return fmt.Errorf("recorder: %w", err)
	}
	if err := s.publishKey(ctx); err != nil {
		return err
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, bus.StreamSessions, jetstream.ConsumerConfig{
		Durable:   ConsumerName,
		AckPolicy: jetstream.AckExplicitPolicy,
		// A killed recorder's unacknowledged events come back after
		// AckWait; appends are idempotent, so a short wait is safe.
		AckWait:       10 * time.Second,
		MaxAckPending: 20000,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		// One replica at a time receives events (pinned); the others take
		// over when it stops pulling. Replicas that shared the events would
		// keep racing for the same session chains.
		PriorityPolicy: jetstream.PriorityPolicyPinned,
		PriorityGroups: []string{priorityGroup},
		PinnedTTL:      5 * time.Second,
	})
	if err != nil {
		return fmt.Errorf("recorder: consumer: %w", err)
	}
	g, ctx := errgroup.WithContext(ctx)
	s.shards = make([]chan jetstream.Msg, s.cfg.Shards)
	for i := range s.shards {
		ch := make(chan jetstream.Msg, 256)
		s.shards[i] = ch
		g.Go(func() error { return s.shard(ctx, ch) })
	}
	g.Go(func() error { return s.consume(ctx, cons) })
	g.Go(func() error { return s.checkpoints(ctx) })
	s.cfg.Log.Info().Str("key", auditchain.KeyID(s.cfg.SigningKey.Public().(ed25519.PublicKey))).Msg("recorder ready")
	err = g.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// publishKey makes the checkpoint public key available to verifiers.
func (s *Service) publishKey(ctx context.Context) error {
	kv, err := s.cfg.Conn.JS.KeyValue(ctx, bus.BucketAuditKeys)
	if err != nil {
		return fmt.Errorf("recorder: %w", err)
	}
	pub := s.cfg.SigningKey.Public().(ed25519.PublicKey)
	if _, err := kv.Put(ctx, auditchain.KeyID(pub), pub); err != nil {
		return fmt.Errorf("recorder: publish key: %w", err)
	}
	return nil
}

func (s *Service) consume(ctx context.Context, cons jetstream.Consumer) error {
	it, err := cons.Messages(jetstream.PullMaxMessages(512), jetstream.PullPriorityGroup(priorityGroup))
	if err != nil {
		return fmt.Errorf("recorder: %w", err)
	}
	go func() {
		<-ctx.Done()
		it.Stop()
	}()
	for {
		m, err := it.Next()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return nil
			}
			s.cfg.Log.Warn().Err(err).Msg("session event fetch failed")
			continue
		}
		// Shard by session: the subject is sluice.rec.<session>.<seq>.<kind>.
		h := fnv.New32a()
		h.Write([]byte(token(m.Subject(), 2)))
		select {
		case s.shards[h.Sum32()%uint32(len(s.shards))] <- m:
		case <-ctx.Done():
			return nil
		}
	}
}

func (s *Service) shard(ctx context.Context, ch <-chan jetstream.Msg) error {
	heads := map[string]*head{}
	for {
		select {
		case <-ctx.Done():
			return nil
		case m := <-ch:
			if err := s.process(ctx, heads, m); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				s.cfg.Log.Warn().Err(err).Str("subject", m.Subject()).Msg("recording failed; will retry")
				_ = m.NakWithDelay(200 * time.Millisecond)
			}
		}
	}
}

func (s *Service) loadHead(ctx context.Context, session string) (*head, error) {
	raw, err := s.audit.GetLastMsgForSubject(ctx, auditlog.SessionSubject(session))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return &head{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("chain head: %w", err)
	}
	var r auditv1.Record
	if err := proto.Unmarshal(raw.Data, &r); err != nil {
		return nil, fmt.Errorf("chain head unreadable: %w", err)
	}
	last := r.GetSeq()
	if r.GetGapTo() > 0 {
		last = r.GetGapTo()
	}
	return &head{seq: last, hash: r.GetHash(), eventID: r.GetEventId(), streamSeq: raw.Sequence}, nil
}

func (s *Service) process(ctx context.Context, heads map[string]*head, m jetstream.Msg) error {
	var ev sessionv1.Event
	if err := proto.Unmarshal(m.Data(), &ev); err != nil || ev.GetSessionId() == "" || ev.GetSeq() == 0 {
		// Not a session event: nothing a worker produces. Keep it out of
		// the chain, but say so loudly.
		s.cfg.Log.Error().Str("subject", m.Subject()).Msg("malformed session event refused")
		return m.Term()
	}
	if m.Subject() != recording.Subject(ev.GetSessionId(), ev.GetSeq(), token(m.Subject(), 4)) {
		s.cfg.Log.Error().Str("subject", m.Subject()).Msg("session event on another session's subject refused")
		return m.Term()
	}
	sess := ev.GetSessionId()
	h := heads[sess]
	if h == nil {
		var err error
		if h, err = s.loadHead(ctx, sess); err != nil {
			return err
		}
		heads[sess] = h
	}
	switch {
	case ev.GetSeq() <= h.seq:
		// Already recorded (a redelivery after a crash or a retried publish).
		return m.Ack()
	case ev.GetSeq() > h.seq+1:
		lost, err := s.predecessorsLost(ctx, heads, sess, ev.GetSeq(), m)
		if err != nil {
			return err
		}
		h = heads[sess]
		if h == nil || ev.GetSeq() <= h.seq {
			return m.NakWithDelay(10 * time.Millisecond) // the head moved; look again
		}
		if ev.GetSeq() > h.seq+1 && !lost {
			return m.NakWithDelay(50 * time.Millisecond)
		}
		if ev.GetSeq() == h.seq+1 {
			break
		}
		gap := &auditv1.Record{SessionId: sess, Seq: h.seq + 1, GapTo: ev.GetSeq() - 1, RecordedAt: timestamppb.Now()}
		if err := s.append(ctx, heads, h, gap); err != nil {
			return err
		}
		s.cfg.Log.Error().Str("session", sess).Uint64("from", gap.GetSeq()).Uint64("to", gap.GetGapTo()).Msg("session events lost before recording; gap recorded")
	}
	rec := &auditv1.Record{SessionId: sess, Seq: ev.GetSeq(), EventId: ev.GetId(), Event: m.Data(), RecordedAt: timestamppb.Now()}
	if err := s.append(ctx, heads, h, rec); err != nil {
		return err
	}
	s.indexSession(ctx, &ev)
	return m.Ack()
}

// token returns the i-th (0-based) dot-separated token of a subject.
func token(subject string, i int) string {
	for n := 0; ; n++ {
		dot := strings.IndexByte(subject, '.')
		if n == i {
			if dot < 0 {
				return subject
			}
			return subject[:dot]
		}
		if dot < 0 {
			return ""
		}
		subject = subject[dot+1:]
	}
}

// predecessorsLost decides whether the events between the chain head and
// seq will never arrive. It reloads the head (another replica may have
// advanced it) and reports false while any missing event still waits in
// SESSIONS (for instance unacknowledged by a recorder that was killed) or
// while the event is younger than the gap timeout.
func (s *Service) predecessorsLost(ctx context.Context, heads map[string]*head, sess string, seq uint64, m jetstream.Msg) (bool, error) {
	h, err := s.loadHead(ctx, sess)
	if err != nil {
		return false, err
	}
	heads[sess] = h
	if seq <= h.seq+1 {
		return false, nil
	}
	for k := h.seq + 1; k < seq; k++ {
		_, err := s.sessions.GetLastMsgForSubject(ctx, recording.PendingSubject(sess, k))
		if err == nil {
			return false, nil // still waiting to be recorded
		}
		if !errors.Is(err, jetstream.ErrMsgNotFound) {
			return false, err
		}
	}
	md, err := m.Metadata()
	if err != nil {
		return false, err
	}
	return time.Since(md.Timestamp) >= s.cfg.GapTimeout, nil
}

// append chains rec after h and stores it; on a lost race it reloads the
// head and reports an error so that the event is retried.
func (s *Service) append(ctx context.Context, heads map[string]*head, h *head, rec *auditv1.Record) error {
	auditchain.Seal(rec, h.hash)
	data, err := proto.Marshal(rec)
	if err != nil {
		return err
	}
	msg := nats.NewMsg(auditlog.SessionSubject(rec.GetSessionId()))
	msg.Data = data
	id := rec.GetEventId()
	if id == "" {
		id = fmt.Sprintf("gap-%s-%d", rec.GetSessionId(), rec.GetSeq())
	}
	ack, err := s.cfg.Conn.JS.PublishMsg(ctx, msg, jetstream.WithMsgID(id), jetstream.WithExpectStream(bus.StreamAudit),
		jetstream.WithExpectLastSequencePerSubject(h.streamSeq))
	if err != nil || ack.Duplicate {
		// Another replica advanced the chain, or this record is already
		// stored: reload and let the caller retry or skip.
		delete(heads, rec.GetSessionId())
		if err == nil {
			return errors.New("record already stored; reloading the chain head")
		}
		return fmt.Errorf("append: %w", err)
	}
	last := rec.GetSeq()
	if rec.GetGapTo() > 0 {
		last = rec.GetGapTo()
	}
	*h = head{seq: last, hash: rec.GetHash(), eventID: rec.GetEventId(), streamSeq: ack.Sequence}
	s.mu.Lock()
	d := s.dirty[rec.GetSessionId()]
	if d == nil {
		d = &auditv1.ChainHead{SessionId: rec.GetSessionId()}
		s.dirty[rec.GetSessionId()] = d
	}
	d.Seq, d.Hash = last, rec.GetHash()
	d.Records = append(d.Records, &auditv1.RecordHash{Seq: rec.GetSeq(), Hash: rec.GetHash()})
	if len(d.Records) > maxSignedRecords {
		d.Records = d.Records[len(d.Records)-maxSignedRecords:]
	}
	s.mu.Unlock()
	return nil
}
