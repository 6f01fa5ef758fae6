// Package recording is the workers' side of the audit contract: a worker
// opens a Session, emits its events (start, commands, decisions, results,
// I/O, end) to the SESSIONS stream, and learns when they are durable. A
// worker holds a statement until Durable returns (write-ahead), and refuses
// to run statements when it cannot record: every failure to store is
// sticky, so a session that lost its recorder stays closed. A caller that
// stops waiting (its context ended) is not such a failure: the session
// records on, its end included.
//
// Events are numbered per session from 1 without gaps. A Recorder commits
// them in groups: while one batch is being stored, the events its sessions
// emit meanwhile gather into the next, which is published as one message
// (sluice.rec.<recorder>.<n>, message id <recorder>.<n>, so a retry never
// writes twice) as soon as the previous one is acknowledged. One batch is in
// flight at a time, so a recorder's batches reach the stream in order, and
// under load one acknowledgement covers many statements. The recorder
// service chains the events into AUDIT.
package recording

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"sluice.dev/sluice/libs/bus"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
)

// ErrNotRecording means the session's events could not be made durable; the
// worker must not run further commands.
var ErrNotRecording = errors.New("recording: the audit stream is not accepting events")

// DefaultMaxBatchBytes bounds the events in one SESSIONS message (a single
// larger event is sent alone).
const DefaultMaxBatchBytes = 512 << 10

// Recorder publishes the session events of one worker process.
type Recorder struct {
	js jetstream.JetStream
	id string
	// Timeout bounds how long a batch is retried and Durable waits; default
	// DefaultTimeout.
	Timeout time.Duration
	// MaxBatchBytes bounds a batch; default DefaultMaxBatchBytes.
	MaxBatchBytes int
	// Fenced, if set, is asked before each batch is sent: an error keeps
	// the batch from the stream, as the stream refusing it would (its
	// sessions are closed for good). Set it before the first event.
	Fenced func() error

	// epoch counts Cut calls; cutErr is the last one's reason.
	epoch  atomic.Uint64
	cutErr error

	mu       sync.Mutex
	queue    []queued
	flushing bool
	wake     chan struct{}
	batches  uint64
	// Batches and Events count what was stored (for tests and metrics).
	stats Stats
}

// Stats counts the batches and events a recorder stored.
type Stats struct {
	Batches, Events uint64
}

type queued struct {
	s    *Session
	seq  uint64
	data []byte
}

// Session is one recorded session. It is safe for concurrent use.
type Session struct {
	ID string
	r  *Recorder

	mu      sync.Mutex
	seq     uint64
	durable uint64 // every event up to this seq is stored
	waiters []waiter
	err     error
	// keep is, once err is set, the last seq that may still be published:
	// the events emitted before the failure, never one after a lost batch.
	keep uint64
	// final is the seq of the session's last event when Close records it
	// after a failure: published all the same, after the gap the failure
	// left.
	final uint64
	// epoch is the recorder's epoch when the session opened (see Cut).
	epoch uint64
	// failures counts failLocked calls: Close tells from it whether the
	// attempt it sent failed before it began to wait.
	failures uint64
}

type waiter struct {
	seq uint64
	ch  chan struct{}
}

// NewSessionID returns a fresh session id: a ULID in lowercase, so that it
// is a subject token as is.
func NewSessionID() string { return strings.ToLower(ulid.Make().String()) }

// New returns a recorder on a JetStream context, with a fresh id.
func New(js jetstream.JetStream) *Recorder {
	return &Recorder{js: js, id: NewSessionID(), Timeout: DefaultTimeout, MaxBatchBytes: DefaultMaxBatchBytes, wake: make(chan struct{}, 1)}
}

// ID names the recorder in its batch subjects.
func (r *Recorder) ID() string { return r.id }

// Stats returns what the recorder has stored so far.
func (r *Recorder) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stats
}

// Open starts recording a session with the given id.
func (r *Recorder) Open(id string) *Session {
	return &Session{ID: id, r: r, epoch: r.epoch.Load()}
}

// Cut closes, for good, every session opened so far, as a stream refusing
// their events would: none of their events not yet sent is sent, and none
// is accepted after, but its end (Close). err says why. Sessions opened
// after Cut record as usual.
func (r *Recorder) Cut(err error) {
	r.mu.Lock()
	r.cutErr = fmt.Errorf("%w: %v", ErrNotRecording, err)
	r.mu.Unlock()
	r.epoch.Add(1)
}

// cut is the error of a session opened before the last Cut, or nil.
func (r *Recorder) cut(s *Session) error {
	if s.epoch >= r.epoch.Load() {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cutErr
}

// BatchSubject is where a recorder publishes its n-th batch.
func BatchSubject(recorder string, n uint64) string {
	return bus.Subject(bus.SubjectSessions, bus.Token(recorder), strconv.FormatUint(n, 10))
}

// RecorderSubject matches every batch of a recorder.
func RecorderSubject(recorder string) string {
	return bus.Subject(bus.SubjectSessions, bus.Token(recorder), "*")
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
	case *sessionv1.Event_TokenRenewed:
		return "token_renewed"
	case *sessionv1.Event_RenewalRefused:
		return "renewal_refused"
	}
	return "event"
}

// Emit numbers ev, stamps it and queues it for the next batch without
// waiting; it returns the event's seq, or the sticky error of an earlier
// failure.
func (s *Session) Emit(ev *sessionv1.Event) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.r.cut(s); err != nil && s.err == nil {
		s.failLocked(err, 0)
	}
	if s.err != nil {
		return 0, s.err
	}
	if s.r.Fenced != nil {
		// Fenced: refused before it takes a seq, so no gap is left.
		if err := s.r.Fenced(); err != nil {
			s.failLocked(err, s.seq)
			return 0, s.err
		}
	}
	seq, _, err := s.emitLocked(ev)
	if err != nil {
		s.failLocked(err, s.seq)
		recordFailures.Inc()
		return 0, s.err
	}
	return seq, nil
}

// emitLocked numbers, stamps and queues ev, and returns its seq and bytes;
// the error says it could not be encoded (and nothing was queued).
func (s *Session) emitLocked(ev *sessionv1.Event) (uint64, []byte, error) {
	s.seq++
	ev.Id = ulid.Make().String()
	ev.SessionId = s.ID
	ev.Seq = s.seq
	if ev.Time == nil {
		ev.Time = timestamppb.Now()
	}
	data, err := proto.Marshal(ev)
	if err != nil && escapeStrings(ev.ProtoReflect()) {
		// Text that is not UTF-8 (a client's bytes): recorded escaped,
		// never a reason to lose the event or the session's record.
		data, err = proto.Marshal(ev)
	}
	if err != nil {
		s.seq--
		return 0, nil, fmt.Errorf("encode: %v", err)
	}
	// Queued under s.mu, so that a session's events queue in seq order.
	s.r.enqueue(queued{s: s, seq: s.seq, data: data})
	return s.seq, data, nil
}

// Durable waits until every event emitted so far is stored.
func (s *Session) Durable(ctx context.Context) error {
	return s.WaitFor(ctx, s.Seq())
}

// WaitFor waits until every event up to seq is stored. Emit is not blocked
// meanwhile. When the events cannot be stored (the batch failed, or the
// wait outlasted the batch's retries) the session is closed for good, and
// the error is ErrNotRecording. When ctx ends first, only this wait ends:
// its error is ctx's, the events still go out, and so does whatever the
// session records next (its end above all). A caller that gives up (its
// client left, its request was cancelled) has learned nothing about the
// audit stream. A wait for events not yet stored that ends with them
// stored is timed (sluice_record_wait_seconds).
func (s *Session) WaitFor(ctx context.Context, seq uint64) error {
	s.mu.Lock()
	if s.err != nil || seq <= s.durable {
		err := s.err
		s.mu.Unlock()
		if err == nil {
			err = s.mayGoOn()
		}
		return err
	}
	ch := make(chan struct{})
	s.waiters = append(s.waiters, waiter{seq: seq, ch: ch})
	s.mu.Unlock()

	start := time.Now()
	timeout := s.r.timeout()
	t := time.NewTimer(timeout + timeout/2) // the batch's own retries end first
	defer t.Stop()
	select {
	case <-ch:
		err := s.Err()
		if err == nil {
			recordWait.Observe(time.Since(start).Seconds())
			err = s.mayGoOn()
		}
		return err
	case <-ctx.Done():
		s.forget(ch)
		return ctx.Err()
	case <-t.C:
		recordFailures.Inc()
		return s.fail(errors.New("timed out waiting for the event to be stored"))
	}
}

// mayGoOn checks, once the events a caller waited for are stored, that it
// may still act on them: a recorder fenced meanwhile (Recorder.Fenced; its
// worker paused or cut off, its sessions already shown lost) closes the
// session instead, so what was recorded before does not run after.
func (s *Session) mayGoOn() error {
	if err := s.Err(); err != nil {
		return err
	}
	if s.r.Fenced != nil {
		if err := s.r.Fenced(); err != nil {
			return s.fail(err)
		}
	}
	return nil
}

// forget drops the waiter on ch, if it is still waiting.
func (s *Session) forget(ch chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.waiters = slices.DeleteFunc(s.waiters, func(w waiter) bool { return w.ch == ch })
}

// stored marks every event up to seq durable and wakes its waiters.
func (s *Session) stored(seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if seq <= s.durable {
		return
	}
	s.durable = seq
	keep := s.waiters[:0]
	for _, w := range s.waiters {
		if w.seq <= seq {
			close(w.ch)
		} else {
			keep = append(keep, w)
		}
	}
	clear(s.waiters[len(keep):])
	s.waiters = keep
}

// fail closes the session for good; the events emitted so far may still
// be published.
func (s *Session) fail(err error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failLocked(err, s.seq)
	return s.err
}

// failLocked records the failure, lets events up to keep be published,
// and wakes every waiter.
func (s *Session) failLocked(err error, keep uint64) {
	s.failures++
	if s.err == nil {
		s.err = fmt.Errorf("%w: %v", ErrNotRecording, err)
		s.keep = keep
	}
	s.keep = min(s.keep, keep)
	for _, w := range s.waiters {
		close(w.ch)
	}
	s.waiters = nil
}

// publishable reports whether the event with seq may still be sent. An
// event of a session cut (Recorder.Cut) since it was emitted is not, but
// its end: the session fails, and its waiters learn it.
func (s *Session) publishable(seq uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if seq == s.final && seq != 0 {
		return true
	}
	if err := s.r.cut(s); err != nil {
		s.failLocked(err, 0)
		return false
	}
	return s.err == nil || seq <= s.keep
}

// Close records ev, the session's last event (its end), and waits until it
// is durable or ctx ends. A session whose recording failed without losing
// an event (fenced: its events refused before they took a seq) records it
// all the same, so that it is not left without an end; one that lost
// events does not (its end would follow a gap). While the stream refuses it
// (or the recorder is fenced), the same event, under the same seq, is sent
// again every retry until ctx ends: a copy that was stored after all makes
// the recorder drop the other, so the end is recorded once and no seq is
// spent on the tries. The error is ctx's when ctx ended first.
func (s *Session) Close(ctx context.Context, ev *sessionv1.Event, retry time.Duration) error {
	s.mu.Lock()
	if err := s.r.cut(s); err != nil && s.err == nil {
		s.failLocked(err, 0)
	}
	if s.err != nil && s.durable < s.seq {
		// Events of the session were lost (or may yet be): its end is not
		// recorded after them, which would leave a gap in its chain.
		err := s.err
		s.mu.Unlock()
		return err
	}
	seq, data, err := s.emitLocked(ev)
	if err != nil {
		s.mu.Unlock()
		return err
	}
	if s.err != nil {
		s.final = seq
	}
	tried := s.failures
	s.mu.Unlock()
	for !s.waitStored(ctx, seq, tried) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(retry):
		}
		s.mu.Lock()
		if s.durable < seq-1 {
			// Events before the end were lost meanwhile: not after them.
			err := s.err
			s.mu.Unlock()
			return err
		}
		s.final = seq // the session failed meanwhile: this event alone still goes out
		if s.durable < seq {
			s.r.enqueue(queued{s: s, seq: seq, data: data})
		}
		tried = s.failures
		s.mu.Unlock()
	}
	return nil
}

// waitStored waits until the event with seq is stored (true), its batch
// failed or ctx ended (false). tried is the session's failure count when
// the event was sent: a failure since (its batch's, which may come before
// the wait begins) ends the wait.
func (s *Session) waitStored(ctx context.Context, seq, tried uint64) bool {
	s.mu.Lock()
	if s.durable >= seq {
		s.mu.Unlock()
		return true
	}
	if s.failures != tried {
		s.mu.Unlock()
		return false
	}
	ch := make(chan struct{})
	s.waiters = append(s.waiters, waiter{seq: seq, ch: ch})
	s.mu.Unlock()
	select {
	case <-ch:
	case <-ctx.Done():
		s.forget(ch)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.durable >= seq
}

func (r *Recorder) timeout() time.Duration {
	if r.Timeout <= 0 {
		return DefaultTimeout
	}
	return r.Timeout
}

func (r *Recorder) enqueue(q queued) {
	r.mu.Lock()
	r.queue = append(r.queue, q)
	start := !r.flushing
	r.flushing = true
	r.mu.Unlock()
	if start {
		go r.flush()
		return
	}
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// flusherLinger is how long an idle flusher waits for events before it
// exits (a new one starts with the next event).
const flusherLinger = time.Second

// flush publishes batches while there are events; one runs at a time.
func (r *Recorder) flush() {
	max := r.MaxBatchBytes
	if max <= 0 {
		max = DefaultMaxBatchBytes
	}
	idle := time.NewTimer(flusherLinger)
	defer idle.Stop()
	var batch []queued
	for {
		r.mu.Lock()
		if len(r.queue) == 0 {
			r.mu.Unlock()
			idle.Reset(flusherLinger)
			select {
			case <-r.wake:
				continue
			case <-idle.C:
			}
			r.mu.Lock()
			if len(r.queue) == 0 {
				r.flushing = false
				r.mu.Unlock()
				return
			}
			r.mu.Unlock()
			continue
		}
		n, size := 0, 0
		for n < len(r.queue) && (n == 0 || size+len(r.queue[n].data) <= max) {
			size += len(r.queue[n].data)
			n++
		}
		batch = append(batch[:0], r.queue[:n]...)
		rest := copy(r.queue, r.queue[n:])
		clear(r.queue[rest:])
		r.queue = r.queue[:rest]
		r.batches++
		num := r.batches
		r.mu.Unlock()
		r.publish(num, batch, size)
		clear(batch)
	}
}

// publish stores one batch, retrying (deduplicated by message id) until
// the timeout, then tells its sessions: stored, or failed for good.
func (r *Recorder) publish(num uint64, batch []queued, size int) {
	// Events of sessions that failed meanwhile are not sent: those
	// sessions are closed, and their chains end where they failed.
	data := make([]byte, 0, size+8*len(batch))
	kept := batch[:0]
	for _, q := range batch {
		if !q.s.publishable(q.seq) {
			continue
		}
		data = protowire.AppendTag(data, 1, protowire.BytesType)
		data = protowire.AppendBytes(data, q.data)
		kept = append(kept, q)
	}
	if len(kept) == 0 {
		return
	}
	m := nats.NewMsg(BatchSubject(r.id, num))
	m.Data = data
	// The JetStream publish, spelled out: the message id makes a retry
	// idempotent, and the acknowledgement is read without a JSON decoder.
	m.Header = nats.Header{jetstream.MsgIDHeader: {r.id + "." + strconv.FormatUint(num, 10)}, jetstream.ExpectedStreamHeader: {bus.StreamSessions}}
	var err error
	if r.Fenced != nil {
		err = r.Fenced()
	}
	if err == nil {
		err = r.send(m)
	}
	if err != nil {
		// Nothing of this batch may have been stored: each session's
		// events from its first one here on are lost, and none after it
		// may follow (that would leave a hole in the session's chain).
		recordFailures.Add(float64(len(kept)))
		for _, q := range kept {
			q.s.mu.Lock()
			q.s.failLocked(err, q.seq-1)
			q.s.mu.Unlock()
		}
		return
	}
	r.mu.Lock()
	r.stats.Batches++
	r.stats.Events += uint64(len(kept))
	r.mu.Unlock()
	// Each session's events are in seq order, so marking them one by one
	// only ever moves a session's durable mark forward.
	for _, q := range kept {
		q.s.stored(q.seq)
	}
}

// DefaultTimeout is how long a batch is retried by default: longer than a
// stream is without a leader when its leader's node dies (the others wait
// 4 to 9 s, at random, before they elect one), so that a cluster that
// loses one node of three fails no statement.
const DefaultTimeout = 15 * time.Second

// attemptWait is how long the first attempt waits for its acknowledgement
// (a fifth of the timeout if that is shorter); each next one waits twice as
// long as the one before, up to attemptWaitMax.
const (
	attemptWait    = time.Second
	attemptWaitMax = 2 * time.Second
)

// send stores one batch message, retrying (deduplicated by its message id)
// until the timeout. An attempt waits a second or two for its
// acknowledgement: a batch in flight on a connection whose NATS node dies
// is lost without an error, and waiting out the whole timeout for its
// acknowledgement would fail it; the waits grow so that a stream slow
// under load is not sent every batch again and again.
func (r *Recorder) send(m *nats.Msg) error {
	timeout := r.timeout()
	deadline := time.Now().Add(timeout)
	attempt := min(attemptWait, timeout/5)
	for n := 0; ; n++ {
		if n > 0 && r.Fenced != nil {
			// A worker whose lease lapsed meanwhile sends nothing more.
			if err := r.Fenced(); err != nil {
				return err
			}
		}
		wait := min(attempt, time.Until(deadline))
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		resp, err := r.js.Conn().RequestMsgWithContext(ctx, m)
		cancel()
		if err == nil {
			err = pubAckError(resp.Data)
		}
		if err == nil {
			return nil
		}
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("no acknowledgement from the stream in %v", timeout)
			if time.Until(deadline) > 0 {
				attempt = min(2*attempt, attemptWaitMax)
				continue // unanswered: sent again at once
			}
		}
		pause := min(time.Duration(10*(n+1))*time.Millisecond, 250*time.Millisecond)
		if time.Until(deadline) <= pause {
			return err
		}
		time.Sleep(pause)
	}
}

// pubAckError reads a JetStream publish acknowledgement: nil when the
// message is stored, or the error the stream answered.
func pubAckError(b []byte) error {
	if bytes.Contains(b, []byte(`"error"`)) || !bytes.Contains(b, []byte(`"seq":`)) {
		var ack struct {
			Error *struct {
				Code        int    `json:"code"`
				Description string `json:"description"`
			} `json:"error"`
		}
		if json.Unmarshal(b, &ack) == nil && ack.Error != nil {
			return fmt.Errorf("stream refused the batch: %s (%d)", ack.Error.Description, ack.Error.Code)
		}
		return fmt.Errorf("unexpected publish acknowledgement %q", b)
	}
	return nil
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

// Err reports the sticky failure, if any (a Cut since the session opened
// is one).
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.r.cut(s); err != nil && s.err == nil {
		s.failLocked(err, 0)
	}
	return s.err
}
