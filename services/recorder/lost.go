package recorder

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"sluice.dev/sluice/libs/auditchain"
	"sluice.dev/sluice/libs/auditlog"
	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/sessionindex"
	auditv1 "sluice.dev/sluice/proto/sluice/audit/v1"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
)

// A session whose worker is gone without ending it (killed, its host lost)
// would otherwise stay open in AUDIT for good: its chain just stops, a
// reader cannot tell whether anything is missing at its end, and a SIEM
// never learns that it ended. The recorder closes such a chain with a lost
// record, the session's last.
//
// It does so only when nothing more of the session can come. The worker
// is lost (sessionindex.Workers: silent for bus.WorkerSilence, stopped, or
// started again), so it has been fenced for 5 s at least and sends nothing
// but the ends of its sessions, which then are no longer needed. And every
// batch SESSIONS held when the session was found lost has been chained (the
// stream's first message is past them), so every event the worker stored is
// in the chain before the lost record. Anything of the session that comes
// after is dropped and logged (chain, h.lost): it cannot have run.

// lostCandidate is a session found lost, waiting until SESSIONS has been
// chained up to sessionsLast.
type lostCandidate struct {
	why          string
	sessionsLast uint64
}

// closeLostSessionsLoop runs closeLostSessions until ctx is done, again
// after a failure: closing lost sessions never stops the recorder.
func (s *Service) closeLostSessionsLoop(ctx context.Context) {
	for {
		err := s.closeLostSessions(ctx)
		if ctx.Err() != nil {
			return
		}
		s.cfg.Log.Warn().Err(err).Msg("following the open sessions and the workers failed; lost sessions are closed once it follows again")
		select {
		case <-ctx.Done():
			return
		case <-time.After(5 * time.Second):
		}
	}
}

// closeLostSessions follows the open sessions (sluice_sessions) and the
// workers' presence (sluice_workers), and closes the chains of the lost
// ones, every LostEvery, until ctx is done. Every replica runs it: AUDIT's
// expected last sequence lets one record through per session.
func (s *Service) closeLostSessions(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the follows of this call
	js := s.cfg.Conn.JS
	workers := sessionindex.NewWorkers()
	var mu sync.Mutex
	open := map[string]*sessionv1.Summary{}
	wready, oready := make(chan struct{}), make(chan struct{})
	errs := make(chan error, 2)
	go func() { errs <- sessionindex.FollowWorkers(ctx, js, workers, wready) }()
	go func() {
		errs <- bus.FollowKV(ctx, js, bus.BucketSessions, oready, func(e jetstream.KeyValueEntry) error {
			mu.Lock()
			defer mu.Unlock()
			var sum sessionv1.Summary
			if e.Operation() != jetstream.KeyValuePut || proto.Unmarshal(e.Value(), &sum) != nil ||
				sum.GetEndedAt() != nil || sum.GetWorker() == "" {
				delete(open, e.Key())
				return nil
			}
			open[e.Key()] = &sum
			return nil
		})
	}()
	for _, ready := range []chan struct{}{wready, oready} {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errs:
			return fmt.Errorf("recorder: lost sessions: %w", err)
		case <-ready:
		}
	}
	candidates := map[string]lostCandidate{}
	t := time.NewTicker(s.cfg.LostEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errs:
			return fmt.Errorf("recorder: lost sessions: %w", err)
		case <-t.C:
		}
		s.closeLostRound(ctx, workers, &mu, open, candidates)
	}
}

// closeLostRound finds the open sessions that are lost and closes those
// whose events are all chained.
func (s *Service) closeLostRound(ctx context.Context, workers *sessionindex.Workers, mu *sync.Mutex, open map[string]*sessionv1.Summary, candidates map[string]lostCandidate) {
	found := map[string]string{}
	mu.Lock()
	for id, sum := range open {
		if why := workers.Lost(sum); why != "" {
			found[id] = why
		}
	}
	mu.Unlock()
	for id := range candidates {
		if _, ok := found[id]; !ok {
			delete(candidates, id) // ended, or closed by another replica
		}
	}
	if len(found) == 0 {
		return
	}
	ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
	info, err := s.sessions.Info(ictx)
	cancel()
	if err != nil {
		s.cfg.Log.Debug().Err(err).Msg("SESSIONS info unavailable; lost sessions are closed later")
		return
	}
	state := info.State
	for id, why := range found {
		c, ok := candidates[id]
		if !ok {
			candidates[id] = lostCandidate{why: why, sessionsLast: state.LastSeq}
			continue
		}
		if state.Msgs > 0 && state.FirstSeq <= c.sessionsLast {
			continue // events stored before it was found lost are not all chained yet
		}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		done, err := s.closeLost(cctx, id, c.why)
		cancel()
		switch {
		case err != nil && ctx.Err() == nil:
			s.cfg.Log.Warn().Err(err).Str("session", id).Msg("closing a lost session's chain failed; will retry")
		case done:
			delete(candidates, id)
		}
	}
}

// closeLost appends the lost record after the session's last record, and
// indexes it. It reports whether the chain is closed (by this call or
// before it) or ended.
func (s *Service) closeLost(ctx context.Context, session, why string) (bool, error) {
	raw, err := s.audit.GetLastMsgForSubject(ctx, auditlog.SessionSubject(session))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return true, nil // nothing of it is in AUDIT: no chain to close
	}
	if err != nil {
		return false, fmt.Errorf("chain head: %w", err)
	}
	var last auditv1.Record
	if err := proto.Unmarshal(raw.Data, &last); err != nil {
		return false, fmt.Errorf("chain head unreadable: %w", err)
	}
	if last.GetLost() != "" {
		return true, s.indexLost(ctx, &last) // closed already; indexed, perhaps not
	}
	if endsSession(&last) {
		return true, nil
	}
	rec := &auditv1.Record{SessionId: session, Seq: auditchain.Last(&last) + 1, Lost: why, RecordedAt: timestamppb.Now()}
	auditchain.Seal(rec, last.GetHash())
	data, err := proto.Marshal(rec)
	if err != nil {
		return false, err
	}
	msg := nats.NewMsg(auditlog.SessionSubject(session))
	msg.Data = data
	ack, err := s.cfg.Conn.JS.PublishMsg(ctx, msg, jetstream.WithMsgID("lost-"+session), jetstream.WithExpectStream(bus.StreamAudit),
		jetstream.WithExpectLastSequencePerSubject(raw.Sequence))
	switch {
	case lostRace(err):
		return false, nil // the chain moved on meanwhile: judged again next round
	case err != nil:
		return false, fmt.Errorf("append the lost record: %w", err)
	case ack.Duplicate:
		return false, nil // another replica's, or an earlier try's: read back next round
	}
	recorderSessionsLost.Inc()
	s.cfg.Log.Warn().Str("session", session).Uint64("seq", rec.GetSeq()).Str("lost", why).Msg("session lost: its chain is closed")
	return true, s.indexLost(ctx, rec)
}

// endsSession says whether a record's last event ends its session.
func endsSession(r *auditv1.Record) bool {
	evs := r.GetEvents()
	if len(evs) == 0 {
		return false
	}
	h, ok := peekEvent(evs[len(evs)-1])
	return ok && h.ends
}

// indexLost folds a lost record into the session's summary, unless the
// summary holds it already.
func (s *Service) indexLost(ctx context.Context, rec *auditv1.Record) error {
	err := s.updateSummary(ctx, rec.GetSessionId(), func(prev *sessionv1.Summary) (*sessionv1.Summary, bool, error) {
		if prev.GetFoldedSeq() >= rec.GetSeq() {
			return nil, false, nil
		}
		return auditlog.SummarizeLost(prev, rec), true, nil
	})
	if err != nil {
		return fmt.Errorf("index the lost session: %w", err)
	}
	return nil
}
