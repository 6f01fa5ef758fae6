package recorder

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"sluice.dev/sluice/libs/auditlog"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
)

// indexAttempts bounds the read-modify-write of one summary: a read may be
// served by a replica that has not seen the last write yet (direct gets),
// and the conditional write then fails and is tried again.
const indexAttempts = 10

// indexWriteTimeout bounds one write of a summary as a record is stored;
// past it the write is deferred (see deferredIndex).
const indexWriteTimeout = 2 * time.Second

// maxDeferredIndexEvents bounds the index writes kept for later: past it a
// write is dropped, said in the log, and left to sluice admin reproject.
const maxDeferredIndexEvents = 200_000

// deferredIndex holds the index writes the bucket refused, per session in
// order, until retryIndex writes them.
type deferredIndex struct {
	mu       sync.Mutex
	sessions map[string][]*sessionv1.Event
	events   int
	// failing is when a write last failed: while the bucket fails, writes
	// of other sessions are deferred at once rather than each waiting out
	// indexWriteTimeout on the records' path.
	failing time.Time
	dropped int
	// told is when the log last said that writes are still waiting.
	told time.Time
}

// add keeps evs behind the session's deferred writes, if it has any, or
// if failed (its write just failed), or while the bucket is failing. It
// reports whether it kept (or, past the bound, dropped) them.
func (d *deferredIndex) add(key string, evs []*sessionv1.Event, failed bool) (kept bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	queued, ok := d.sessions[key]
	if failed {
		d.failing = time.Now()
	}
	if !ok && !failed && (len(d.sessions) == 0 || time.Since(d.failing) > indexRetryEvery) {
		return false
	}
	if d.events+len(evs) > maxDeferredIndexEvents {
		d.dropped++
		return true
	}
	if d.sessions == nil {
		d.sessions = map[string][]*sessionv1.Event{}
	}
	d.sessions[key] = append(queued, evs...)
	d.events += len(evs)
	recorderIndexDeferred.Set(float64(d.events))
	return true
}

// indexRetryEvery is how often deferred index writes are tried again.
const indexRetryEvery = time.Second

// retryIndex writes the deferred index writes, every indexRetryEvery, until
// ctx is done.
func (s *Service) retryIndex(ctx context.Context) error {
	t := time.NewTicker(indexRetryEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		s.flushDeferredIndex(ctx)
	}
}

// flushDeferredIndex writes what is deferred, a session at a time, until a
// write fails (the bucket still refuses: the rest waits for the next try).
func (s *Service) flushDeferredIndex(ctx context.Context) {
	d := &s.deferred
	d.mu.Lock()
	keys := make([]string, 0, len(d.sessions))
	for k := range d.sessions {
		keys = append(keys, k)
	}
	if n := d.dropped; n > 0 {
		d.dropped = 0
		s.cfg.Log.Error().Int("writes", n).Msg("session index writes dropped: too many were waiting for the bucket; sluice admin reproject sessions rebuilds the index")
	}
	d.mu.Unlock()
	written := 0
	for _, key := range keys {
		// The session's queue keeps its place while it is written, so its
		// later events go behind it; they are written on the next round.
		d.mu.Lock()
		evs := d.sessions[key]
		d.mu.Unlock()
		wctx, cancel := context.WithTimeout(ctx, indexWriteTimeout)
		err := s.writeSummary(wctx, key, evs)
		cancel()
		d.mu.Lock()
		if err != nil {
			d.failing = time.Now()
			tell := time.Since(d.told) >= time.Minute
			if tell {
				d.told = time.Now()
			}
			n := d.events
			d.mu.Unlock()
			if tell {
				s.cfg.Log.Warn().Err(err).Int("events", n).Msg("session index writes still waiting for the bucket")
			}
			return
		}
		if rest := d.sessions[key][len(evs):]; len(rest) > 0 {
			d.sessions[key] = rest
		} else {
			delete(d.sessions, key)
		}
		d.events -= len(evs)
		recorderIndexDeferred.Set(float64(d.events))
		left := len(d.sessions)
		d.mu.Unlock()
		written++
		if left == 0 {
			s.cfg.Log.Info().Int("sessions", written).Msg("deferred session index writes done: the index is up to date")
		}
	}
}

// indexSession folds a session's events, those of one record in order,
// into its summary in sluice_sessions (auditlog.Summarize: start, end,
// held commands, masking) and writes it once. The audit stream is the
// record; the index is a read model that can be rebuilt from it (sluice
// admin reproject sessions). Yet a write the bucket refuses for now (a NATS
// node down and the bucket electing a leader) is not dropped: it is kept,
// the session's later events queue behind it, and retryIndex writes them
// once the bucket answers again, without holding up the records meanwhile.
func (s *Service) indexSession(ctx context.Context, key string, evs []*sessionv1.Event) {
	if s.deferred.add(key, evs, false) {
		return
	}
	wctx, cancel := context.WithTimeout(ctx, indexWriteTimeout)
	err := s.writeSummary(wctx, key, evs)
	cancel()
	if err != nil && ctx.Err() == nil {
		if s.deferred.add(key, evs, true) {
			s.cfg.Log.Warn().Err(err).Str("session", key).Msg("session index write failed; it is kept and tried again every second")
		}
	}
}

// writeSummary folds evs into the session's summary and writes it.
func (s *Service) writeSummary(ctx context.Context, key string, evs []*sessionv1.Event) error {
	switch evs[0].GetBody().(type) {
	case *sessionv1.Event_Started, *sessionv1.Event_AuthFailed:
		// The session's first event: its summary starts here, unless it is
		// there already (the event is given again: the summary as it stands
		// is folded into below).
		sum, ok := fold(nil, evs)
		if !ok {
			return nil
		}
		data, err := proto.Marshal(sum)
		if err != nil {
			return nil
		}
		if _, err = s.index.Create(ctx, key, data); !errors.Is(err, jetstream.ErrKeyExists) {
			return err
		}
	default:
		if _, ok := fold(nil, evs); !ok {
			return nil // none of them changes a summary (a hold decided, say)
		}
	}
	// Later events change the summary as it stands. Events it holds
	// already (its folded_seq) are not folded again.
	return s.updateSummary(ctx, key, func(prev *sessionv1.Summary) (*sessionv1.Summary, bool, error) {
		sum, changed := fold(prev, evs)
		if changed && prev.GetStartedAt() == nil && !startsSession(evs) {
			// The session's start is not in the summary: these events are
			// indexed before it (their record was stored after its, but
			// its batch came again later, after a failover), and the start,
			// older than what the summary would have folded, could never
			// fill it in. AUDIT holds it already: fold the session from
			// there.
			sum, err := s.foldFromAudit(ctx, key)
			return sum, err == nil && sum != nil && !proto.Equal(sum, prev), err
		}
		return sum, changed, nil
	})
}

// updateSummary reads the session's summary, applies change, and writes
// the result back only if nobody wrote it meanwhile (a stale read never
// overwrites what another write recorded), trying again on a conflict.
// change reports whether it changed anything.
func (s *Service) updateSummary(ctx context.Context, key string, change func(prev *sessionv1.Summary) (*sessionv1.Summary, bool, error)) error {
	var err error
	for attempt := 1; attempt <= indexAttempts; attempt++ {
		var prev *sessionv1.Summary
		var rev uint64
		e, gerr := s.index.Get(ctx, key)
		switch {
		case gerr == nil:
			rev = e.Revision()
			prev = &sessionv1.Summary{}
			if proto.Unmarshal(e.Value(), prev) != nil {
				prev = nil
			}
		case !errors.Is(gerr, jetstream.ErrKeyNotFound):
			err = gerr
			if ctx.Err() != nil {
				return err
			}
			continue
		}
		sum, changed, cerr := change(prev)
		if cerr != nil || !changed {
			return cerr
		}
		data, merr := proto.Marshal(sum)
		if merr != nil {
			return nil
		}
		if rev == 0 {
			_, err = s.index.Create(ctx, key, data)
		} else {
			_, err = s.index.Update(ctx, key, data, rev)
		}
		if err == nil || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Duration(attempt) * 5 * time.Millisecond):
		}
	}
	return err
}

// startsSession says whether evs begin with a session's first event.
func startsSession(evs []*sessionv1.Event) bool {
	switch evs[0].GetBody().(type) {
	case *sessionv1.Event_Started, *sessionv1.Event_AuthFailed:
		return true
	}
	return false
}

// foldFromAudit folds a session's summary from its records in AUDIT.
func (s *Service) foldFromAudit(ctx context.Context, key string) (*sessionv1.Summary, error) {
	var sum *sessionv1.Summary
	err := auditlog.Read(ctx, s.cfg.Conn.JS, auditlog.Options{Session: key}, func(e auditlog.Entry) error {
		if e.Event != nil {
			if next, ok := auditlog.Summarize(sum, e.Event); ok {
				sum = next
			}
		}
		return nil
	})
	return sum, err
}

// fold applies evs to prev; ok says some of them changed it.
// An event at or below the summary's folded_seq is in it already (given
// again after a recorder died before acknowledging it) and is skipped.
func fold(prev *sessionv1.Summary, evs []*sessionv1.Event) (sum *sessionv1.Summary, ok bool) {
	sum = prev
	for _, ev := range evs {
		if sum != nil && ev.GetSeq() <= sum.GetFoldedSeq() {
			continue
		}
		if next, changed := auditlog.Summarize(sum, ev); changed {
			sum, ok = next, true
		}
	}
	return sum, ok
}
