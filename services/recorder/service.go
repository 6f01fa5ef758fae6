package recorder

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/encoding/protowire"
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
const ConsumerName = bus.DurableRecorder

// PriorityGroup is the consumer's priority group for pinning.
const PriorityGroup = "recorders"

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
	// FlushInterval is how long a shard gathers events before writing
	// them to AUDIT; default 20ms.
	FlushInterval time.Duration
	// AckWait is how long a batch delivered to a recorder that stopped
	// waits before it is delivered again; default 10s.
	AckWait time.Duration
	// AnchorFile, if set, is where the recorder appends the anchor of each
	// checkpoint it signs (auditchain.Anchor), outside NATS: on start and
	// at every checkpoint it checks that the last anchored checkpoint is
	// still in the stream, and says so in a signed checkpoint when it is
	// not. Without it, that check covers only this process's lifetime.
	AnchorFile string
	// HeadIdle is how long the chain head of a session with no events is
	// kept; default 10m. A session whose end never comes (its worker was
	// killed) would otherwise keep its head for good; a late event reloads
	// it from AUDIT.
	HeadIdle time.Duration
	// LostEvery is how often the recorder looks for sessions whose worker
	// is gone, to close their chains (lost.go); default 5s.
	LostEvery time.Duration
	// Ready, if set, is called once the service serves.
	Ready func()
}

// Service is the recorder.
type Service struct {
	cfg      Config
	audit    jetstream.Stream
	sessions jetstream.Stream
	index    jetstream.KeyValue
	shards   []chan item

	// deferred holds the index writes the bucket refused (index.go).
	deferred deferredIndex

	mu    sync.Mutex
	dirty map[string]*auditv1.ChainHead
	// anchor is the last checkpoint this recorder anchored (checkpoint
	// goroutine).
	anchor *auditchain.Anchor
}

type head struct {
	seq       uint64
	hash      []byte
	streamSeq uint64
	// lost: the last record is a lost record, which closed the chain.
	lost bool
	// used is when the session last had events (see Config.HeadIdle).
	used time.Time
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
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = 20 * time.Millisecond
	}
	if cfg.AckWait <= 0 {
		cfg.AckWait = 10 * time.Second
	}
	if cfg.HeadIdle <= 0 {
		cfg.HeadIdle = 10 * time.Minute
	}
	if cfg.LostEvery <= 0 {
		cfg.LostEvery = 5 * time.Second
	}
	return &Service{cfg: cfg, dirty: map[string]*auditv1.ChainHead{}}
}

// ConsumerConfig is the recorder's durable consumer on SESSIONS.
func ConsumerConfig(ackWait time.Duration) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:   ConsumerName,
		AckPolicy: jetstream.AckExplicitPolicy,
		// A killed recorder's unacknowledged events come back after
		// AckWait; appends are idempotent, so a short wait is safe.
		AckWait:       ackWait,
		MaxAckPending: 20000,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		// One replica at a time receives events (pinned); the others take
		// over when it stops pulling. Replicas that shared the events would
		// keep racing for the same session chains.
		PriorityPolicy: jetstream.PriorityPolicyPinned,
		PriorityGroups: []string{PriorityGroup},
		PinnedTTL:      5 * time.Second,
	}
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
	if s.cfg.AnchorFile != "" {
		if s.anchor, err = auditchain.LastAnchor(s.cfg.AnchorFile); err != nil {
			return fmt.Errorf("recorder: %w", err)
		}
	} else {
		s.cfg.Log.Warn().Msg("no audit anchor file: a deleted or replaced audit stream is noticed only while this recorder runs (set --audit-anchor-file)")
	}
	cons, err := bus.Consumer(ctx, js, bus.StreamSessions, ConsumerConfig(s.cfg.AckWait))
	if err != nil {
		return fmt.Errorf("recorder: consumer: %w", err)
	}
	g, ctx := errgroup.WithContext(ctx)
	s.shards = make([]chan item, s.cfg.Shards)
	for i := range s.shards {
		ch := make(chan item, 1024)
		s.shards[i] = ch
		g.Go(func() error { return s.shard(ctx, ch) })
	}
	g.Go(func() error { return s.consume(ctx, cons) })
	g.Go(func() error { return s.checkpoints(ctx) })
	g.Go(func() error { return s.retryIndex(ctx) })
	g.Go(func() error { s.streamStats(ctx); return nil })
	g.Go(func() error { s.closeLostSessionsLoop(ctx); return nil })
	s.cfg.Log.Info().Str("key", auditchain.KeyID(s.cfg.SigningKey.Public().(ed25519.PublicKey))).Msg("recorder ready")
	if s.cfg.Ready != nil {
		s.cfg.Ready()
	}
	err = g.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// streamStatsEvery is how often the AUDIT stream's gauges are refreshed.
const streamStatsEvery = 15 * time.Second

// streamStats sets the AUDIT stream's gauges from its info, now and every
// streamStatsEvery, until ctx is done.
func (s *Service) streamStats(ctx context.Context) {
	t := time.NewTicker(streamStatsEvery)
	defer t.Stop()
	for {
		ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
		info, err := s.audit.Info(ictx)
		cancel()
		switch {
		case err == nil:
			auditStreamBytes.Set(float64(info.State.Bytes))
			auditStreamMessages.Set(float64(info.State.Msgs))
			auditStreamMaxBytes.Set(float64(max(info.Config.MaxBytes, 0)))
		case ctx.Err() == nil:
			s.cfg.Log.Debug().Err(err).Msg("AUDIT stream info unavailable; its gauges are not refreshed")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
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
	return &head{seq: auditchain.Last(&r), hash: r.GetHash(), streamSeq: raw.Sequence, lost: r.GetLost() != ""}, nil
}

// item is one event of a batch, on its way to its session's chain.
type item struct {
	ev   eventHeader
	data []byte
	ref  *batchRef
}

// eventHeader is what the recorder needs of an event to chain it, read
// without decoding the whole event.
type eventHeader struct {
	id, session string
	seq         uint64
	// indexed says the event may change the session index (start, end,
	// authentication failure, a hold, masking) and is decoded when
	// recorded.
	indexed bool
	// ends says it is a session's last event (its end, or a failed
	// authentication).
	ends bool
}

// Field numbers of sluice.session.v1.Event.
const (
	fieldID, fieldSession, fieldSeq           = 1, 2, 3
	fieldStarted, fieldEnded, fieldAuthFailed = 10, 17, 18
	fieldApproval, fieldMasking               = 13, 15
)

// peekEvent reads an event's id, session and seq; it reports false for
// bytes that are not a well-formed event.
func peekEvent(b []byte) (eventHeader, bool) {
	var h eventHeader
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return h, false
		}
		b = b[n:]
		switch {
		case (num == fieldID || num == fieldSession) && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 || !utf8.Valid(v) {
				return h, false
			}
			if num == fieldID {
				h.id = string(v)
			} else {
				h.session = string(v)
			}
			b = b[n:]
			continue
		case num == fieldSeq && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return h, false
			}
			h.seq = v
			b = b[n:]
			continue
		case num == fieldStarted || num == fieldEnded || num == fieldAuthFailed:
			h.indexed = true
			h.ends = num != fieldStarted
		case num == fieldApproval || num == fieldMasking:
			h.indexed = true
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return h, false
		}
		b = b[n:]
	}
	return h, h.id != "" && h.session != "" && h.seq > 0
}

// batchRef tracks one SESSIONS message: it is acknowledged when every one
// of its events is in AUDIT, and negatively acknowledged (redelivered after
// a delay; recorded events are then skipped) when any of them could not be.
type batchRef struct {
	m        jetstream.Msg
	recorder string // the publishing recorder's subject token
	seq      uint64 // stream sequence
	// published is when SESSIONS stored the batch.
	published time.Time
	// first says the batch is delivered for the first time: nobody has
	// chained any of its events yet.
	first   bool
	pending atomic.Int32
	retry   atomic.Int64 // nanoseconds to wait before redelivery; 0 = none
}

func (b *batchRef) done() { b.finish() }

// again asks for redelivery after d.
func (b *batchRef) again(d time.Duration) {
	for {
		old := b.retry.Load()
		if old >= int64(d) || b.retry.CompareAndSwap(old, int64(d)) {
			break
		}
	}
	b.finish()
}

func (b *batchRef) finish() {
	if b.pending.Add(-1) != 0 {
		return
	}
	if d := b.retry.Load(); d > 0 {
		_ = b.m.NakWithDelay(time.Duration(d))
		return
	}
	_ = b.m.Ack()
}

func (s *Service) consume(ctx context.Context, cons jetstream.Consumer) error {
	it, err := bus.Messages(cons, jetstream.PullMaxMessages(512), jetstream.PullPriorityGroup(PriorityGroup))
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
		items := s.unpack(m)
		for _, it := range items {
			// Shard by session: a session's events stay in order.
			h := fnv.New32a()
			h.Write([]byte(it.ev.session))
			select {
			case s.shards[h.Sum32()%uint32(len(s.shards))] <- it:
			case <-ctx.Done():
				return nil
			}
		}
	}
}

// unpack decodes a batch (sluice.rec.<recorder>.<n>) into its events.
// Nothing a worker produces is malformed: what is, is refused loudly and
// kept out of the chain.
func (s *Service) unpack(m jetstream.Msg) []item {
	md, err := m.Metadata()
	if err != nil {
		_ = m.NakWithDelay(time.Second)
		return nil
	}
	var batch sessionv1.Batch
	if token(m.Subject(), 2) == "" || token(m.Subject(), 4) != "" || proto.Unmarshal(m.Data(), &batch) != nil {
		s.cfg.Log.Error().Str("subject", m.Subject()).Msg("malformed session batch refused")
		_ = m.Term()
		return nil
	}
	if n := md.NumDelivered; n >= 100 && (n == 100 || n == 1000 || n%10000 == 0) {
		// Something keeps this batch from its chain: say so, it must not
		// go on unseen.
		s.cfg.Log.Warn().Str("subject", m.Subject()).Uint64("stream_seq", md.Sequence.Stream).Uint64("deliveries", n).
			Time("stored", md.Timestamp).Msg("a session batch keeps coming back without being recorded")
	}
	ref := &batchRef{m: m, recorder: token(m.Subject(), 2), seq: md.Sequence.Stream, published: md.Timestamp, first: md.NumDelivered == 1}
	items := make([]item, 0, len(batch.GetEvents()))
	for _, data := range batch.GetEvents() {
		ev, ok := peekEvent(data)
		if !ok {
			s.cfg.Log.Error().Str("subject", m.Subject()).Msg("malformed session event refused")
			continue
		}
		items = append(items, item{ev: ev, data: data, ref: ref})
	}
	if len(items) == 0 {
		_ = m.Term()
		return nil
	}
	ref.pending.Store(int32(len(items)))
	return items
}

// shard appends the events of its sessions. From the first event it
// gathers for up to FlushInterval (or maxShardBatch events), then writes
// each session's run of consecutive events as one record: a busy session's
// events share a record, and AUDIT stores one message per session per
// interval instead of one per event. SESSIONS already holds every event
// durably meanwhile, so the wait costs no safety.
func (s *Service) shard(ctx context.Context, ch <-chan item) error {
	heads := map[string]*head{}
	var order []string
	runs := map[string][]item{}
	add := func(it item) {
		sess := it.ev.session
		if _, ok := runs[sess]; !ok {
			order = append(order, sess)
		}
		runs[sess] = append(runs[sess], it)
	}
	window := time.NewTimer(time.Hour)
	window.Stop()
	// chains is this shard's part of sluice_recorder_chains.
	chains := 0
	defer func() { recorderChains.Sub(float64(chains)) }()
	counted := func() {
		if n := len(heads); n != chains {
			recorderChains.Add(float64(n - chains))
			chains = n
		}
	}
	idle := time.NewTicker(min(s.cfg.HeadIdle/2, time.Minute))
	defer idle.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-idle.C:
			for sess, h := range heads {
				if now.Sub(h.used) > s.cfg.HeadIdle {
					delete(heads, sess)
				}
			}
			counted()
		case it := <-ch:
			add(it)
			window.Reset(s.cfg.FlushInterval)
		gather:
			for n := 1; n < maxShardBatch; n++ {
				select {
				case it := <-ch:
					add(it)
				case <-window.C:
					break gather
				case <-ctx.Done():
					return nil
				}
			}
			window.Stop()
			s.flush(ctx, heads, order, runs)
			now := time.Now()
			for _, sess := range order {
				if h := heads[sess]; h != nil {
					h.used = now
				}
			}
			clear(runs)
			order = order[:0]
			counted()
		}
	}
}

// maxShardBatch bounds the events a shard takes before writing.
const maxShardBatch = 4096

// maxRecordBytes bounds the events of one record (a larger event is
// recorded alone).
const maxRecordBytes = 256 << 10

// pendingAppend is a record published and waiting for its acknowledgement.
type pendingAppend struct {
	sess  string
	rec   *auditv1.Record
	items []item
	// dups are redelivered copies of the record's events.
	dups []item
	fut  jetstream.PubAckFuture
	h    *head
}

// flush chains each session's events and stores the records; records of
// different sessions are in flight together.
func (s *Service) flush(ctx context.Context, heads map[string]*head, order []string, runs map[string][]item) {
	var inflight []pendingAppend
	for _, sess := range order {
		items := runs[sess]
		// A redelivered batch can come in behind the one after it: chain
		// the window's events in seq order, or the later one would wait
		// for the earlier, and, both asked for again, come back first
		// again (a loop that only a gap would end, losing the earlier).
		if !slices.IsSortedFunc(items, bySeq) {
			slices.SortStableFunc(items, bySeq)
		}
		h := heads[sess]
		if h == nil && fresh(items) {
			// A new session's chain starts here: there is no head to read.
			// Were that wrong, the publish's expected last sequence (none)
			// fails, and the redelivery reads the head.
			h = &head{}
			heads[sess] = h
		}
		if h == nil {
			var err error
			if h, err = s.loadHead(ctx, sess); err != nil {
				s.cfg.Log.Warn().Err(err).Str("session", sess).Msg("chain head unavailable; will retry")
				again(items, 200*time.Millisecond)
				continue
			}
			heads[sess] = h
		}
		if p := s.chain(ctx, heads, sess, h, items); p != nil {
			inflight = append(inflight, *p)
		}
	}
	for _, p := range inflight {
		s.settle(ctx, heads, p)
	}
	// A session whose end is stored keeps no chain head here: memory grows
	// with the sessions open, not with every session ever seen. A late
	// event of it (a redelivery) reloads the head from AUDIT.
	for _, sess := range order {
		h := heads[sess]
		if h == nil {
			continue
		}
		for _, it := range runs[sess] {
			if it.ev.ends && it.ev.seq <= h.seq {
				delete(heads, sess)
				break
			}
		}
	}
}

func bySeq(a, b item) int { return cmp.Compare(a.ev.seq, b.ev.seq) }

// fresh says items open a session's chain: its first event, in a batch
// delivered for the first time. A worker sends that event in one batch only
// (its retries are deduplicated), so no record of the session exists yet;
// a copy sent by anyone else finds the session's records in AUDIT, and the
// publish, expecting none, is refused.
func fresh(items []item) bool {
	return len(items) > 0 && items[0].ev.seq == 1 && items[0].ref.first
}

// again asks for every item's batch to come again after d.
func again(items []item, d time.Duration) {
	for _, it := range items {
		it.ref.again(d)
	}
}

// chain walks a session's events in order: already recorded ones are
// acknowledged, consecutive ones become records, and a missing predecessor
// either waits (redelivery) or, once lost for good, becomes a gap record.
// It returns the session's last record if it is still in flight.
//
// A redelivered copy of an event that is in the run being built or in the
// record in flight is not acknowledged on its own: it shares that record's
// fate, so its message is never removed before the event is stored.
func (s *Service) chain(ctx context.Context, heads map[string]*head, sess string, h *head, items []item) *pendingAppend {
	if h.lost {
		s.afterLost(sess, h, items)
		return nil
	}
	var pending *pendingAppend
	// wait settles the session's record in flight, if any.
	wait := func() bool {
		if pending == nil {
			return true
		}
		ok := s.settle(ctx, heads, *pending)
		pending = nil
		if ok {
			h = heads[sess]
		}
		return ok
	}
	var run, runDups []item
	size := 0
	// drop gives back the run (and its duplicates) for redelivery.
	drop := func(d time.Duration) {
		again(run, d)
		again(runDups, d)
		run, runDups, size = nil, nil, 0
	}
	// emit publishes the run as one record after the session's last one.
	emit := func() bool {
		if len(run) == 0 {
			return true
		}
		if !wait() {
			drop(200 * time.Millisecond)
			return false
		}
		rec := &auditv1.Record{SessionId: sess, Seq: run[0].ev.seq, RecordedAt: timestamppb.Now(),
			EventIds: make([]string, len(run)), Events: make([][]byte, len(run))}
		for i, it := range run {
			rec.EventIds[i], rec.Events[i] = it.ev.id, it.data
		}
		auditchain.Seal(rec, h.hash)
		p := s.publish(h, rec, run)
		p.dups = runDups
		pending = &p
		run, runDups, size = nil, nil, 0
		return true
	}
	// giveUp gives back everything not yet settled from items[i:] on.
	giveUp := func(rest []item, d time.Duration) *pendingAppend {
		drop(d)
		again(rest, d)
		return pending
	}
	next := h.seq + 1
	for i, it := range items {
		seq := it.ev.seq
		if seq < next {
			switch {
			case seq <= h.seq:
				// Already stored (a redelivery after a crash or a retried publish).
				s.alreadyStored(ctx, sess, it)
			case len(run) > 0 && seq >= run[0].ev.seq:
				runDups = append(runDups, it)
			case pending != nil:
				pending.dups = append(pending.dups, it)
			default:
				it.ref.again(50 * time.Millisecond)
			}
			continue
		}
		if seq > next {
			if !emit() || !wait() {
				return giveUp(items[i:], 200*time.Millisecond)
			}
			lost, err := s.predecessorsLost(ctx, heads, sess, seq, it.ref)
			if err != nil || !lost {
				delay := 50 * time.Millisecond
				if err != nil {
					s.cfg.Log.Warn().Err(err).Str("session", sess).Msg("gap check failed; will retry")
					delay = 200 * time.Millisecond
				}
				return giveUp(items[i:], delay)
			}
			h = heads[sess]
			if seq <= h.seq {
				s.alreadyStored(ctx, sess, it)
				next = h.seq + 1
				continue
			}
			if seq > h.seq+1 {
				gap := &auditv1.Record{SessionId: sess, Seq: h.seq + 1, GapTo: seq - 1, RecordedAt: timestamppb.Now()}
				auditchain.Seal(gap, h.hash)
				if !s.settle(ctx, heads, s.publish(h, gap, nil)) {
					return giveUp(items[i:], 50*time.Millisecond)
				}
				s.cfg.Log.Error().Str("session", sess).Uint64("from", gap.GetSeq()).Uint64("to", gap.GetGapTo()).Msg("session events lost before recording; gap recorded")
				h = heads[sess]
			}
		}
		if len(run) > 0 && size+len(it.data) > maxRecordBytes && !emit() {
			return giveUp(items[i:], 200*time.Millisecond)
		}
		run = append(run, it)
		size += len(it.data)
		next = seq + 1
	}
	emit()
	return pending
}

// afterLost acknowledges the events of a session whose chain a lost record
// closed: none is recorded. Its worker was fenced before the session was
// found lost, so it sends nothing but the session's end, which the lost
// record stands for; anything else is logged, and cannot have run.
func (s *Service) afterLost(sess string, h *head, items []item) {
	for _, it := range items {
		if !(it.ev.ends && it.ev.seq == h.seq) && it.ev.seq >= h.seq {
			recorderAfterLost.Inc()
			s.cfg.Log.Error().Str("session", sess).Uint64("seq", it.ev.seq).Uint64("lost_at", h.seq).
				Msg("an event came after the session's chain was closed as lost; it is not recorded")
		}
		it.ref.done()
	}
}

// alreadyStored acknowledges an event AUDIT holds already. Its recorder
// may have died before it indexed the event: it is indexed again, which
// the summary's folded_seq makes a no-op if it was. Older than anything in
// flight for the session, it is indexed before them.
func (s *Service) alreadyStored(ctx context.Context, sess string, it item) {
	s.indexItems(ctx, sess, []item{it})
	it.ref.done()
}

// indexItems folds the items' events that change the session's summary
// into one write of the index.
func (s *Service) indexItems(ctx context.Context, sess string, items []item) {
	var indexed []*sessionv1.Event
	for _, it := range items {
		if it.ev.indexed {
			ev := &sessionv1.Event{}
			if proto.Unmarshal(it.data, ev) == nil {
				indexed = append(indexed, ev)
			}
		}
	}
	if len(indexed) > 0 {
		s.indexSession(ctx, sess, indexed)
	}
}

// publish sends rec after the session's last stored record, with
// optimistic concurrency on the session subject, without waiting.
func (s *Service) publish(h *head, rec *auditv1.Record, items []item) pendingAppend {
	p := pendingAppend{sess: rec.GetSessionId(), rec: rec, items: items, h: h}
	data, err := proto.Marshal(rec)
	if err != nil {
		return p
	}
	msg := nats.NewMsg(auditlog.SessionSubject(rec.GetSessionId()))
	msg.Data = data
	id := fmt.Sprintf("gap-%s-%d", rec.GetSessionId(), rec.GetSeq())
	if ids := rec.GetEventIds(); len(ids) > 0 {
		id = ids[len(ids)-1]
	}
	p.fut, _ = s.cfg.Conn.JS.PublishMsgAsync(msg, jetstream.WithMsgID(id), jetstream.WithExpectStream(bus.StreamAudit),
		jetstream.WithExpectLastSequencePerSubject(h.streamSeq))
	return p
}

// settle waits for a published record; it advances the head and
// acknowledges the record's events, or drops the head (reloaded next time)
// and asks for the events again. It reports whether the record is stored.
func (s *Service) settle(ctx context.Context, heads map[string]*head, p pendingAppend) bool {
	ok, failed := false, true
	var seq uint64
	if p.fut != nil {
		select {
		case ack := <-p.fut.Ok():
			ok, seq, failed = !ack.Duplicate, ack.Sequence, false
		case err := <-p.fut.Err():
			failed = !lostRace(err)
		case <-ctx.Done():
			failed = false
		case <-time.After(10 * time.Second):
		}
	}
	if failed {
		recorderFailures.Inc()
	}
	if !ok {
		// Another replica advanced the chain, the record was already
		// stored, or AUDIT refused it: reload and let the events come again.
		delete(heads, p.sess)
		again(p.items, 200*time.Millisecond)
		again(p.dups, 200*time.Millisecond)
		return false
	}
	rec := p.rec
	last := auditchain.Last(rec)
	*p.h = head{seq: last, hash: rec.GetHash(), streamSeq: seq}
	s.mu.Lock()
	d := s.dirty[p.sess]
	if d == nil {
		d = &auditv1.ChainHead{SessionId: p.sess}
		s.dirty[p.sess] = d
	}
	d.Seq, d.Hash = last, rec.GetHash()
	d.Records = append(d.Records, &auditv1.RecordHash{Seq: rec.GetSeq(), Hash: rec.GetHash()})
	if len(d.Records) > maxSignedRecords {
		d.Records = d.Records[len(d.Records)-maxSignedRecords:]
	}
	s.mu.Unlock()
	if n := len(p.items); n > 0 {
		recorderEvents.Add(float64(n))
		recorderBatchSize.Observe(float64(n))
		now := time.Now()
		for _, it := range p.items {
			recorderLag.Observe(now.Sub(it.ref.published).Seconds())
		}
	}
	s.indexItems(ctx, p.sess, p.items)
	for _, it := range p.items {
		it.ref.done()
	}
	for _, it := range p.dups {
		it.ref.done()
	}
	return true
}

// lostRace reports whether AUDIT refused a record because the session's
// chain moved on meanwhile (another replica stored it): not a failure.
func lostRace(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
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
// advanced it) and reports false while an earlier batch of the same worker
// recorder still waits in SESSIONS (for instance unacknowledged by a
// recorder that was killed) or while the batch is younger than the gap
// timeout. A worker recorder publishes its batches in order, one at a time,
// so a session's missing events can only be in its earlier batches.
func (s *Service) predecessorsLost(ctx context.Context, heads map[string]*head, sess string, seq uint64, ref *batchRef) (bool, error) {
	h, err := s.loadHead(ctx, sess)
	if err != nil {
		return false, err
	}
	heads[sess] = h
	if seq <= h.seq+1 {
		return true, nil // nothing is missing any more
	}
	raw, err := s.sessions.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(recording.RecorderSubject(ref.recorder)))
	switch {
	case err == nil && raw.Sequence < ref.seq:
		return false, nil // still waiting to be recorded
	case err != nil && !errors.Is(err, jetstream.ErrMsgNotFound):
		return false, err
	}
	md, err := ref.m.Metadata()
	if err != nil {
		return false, err
	}
	return time.Since(md.Timestamp) >= s.cfg.GapTimeout, nil
}
