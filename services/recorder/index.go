package recorder

import (
	"context"
	"errors"
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

// indexSession folds a session's events, those of one record in order,
// into its summary in sluice_sessions (auditlog.Summarize: start, end,
// held commands, masking) and writes it once. It is best effort: the audit
// stream is the record; the index is a read model that can be rebuilt from
// it (sluice admin reproject sessions).
func (s *Service) indexSession(ctx context.Context, key string, evs []*sessionv1.Event) {
	switch evs[0].GetBody().(type) {
	case *sessionv1.Event_Started, *sessionv1.Event_AuthFailed:
		// The session's first event: its summary starts here.
		if sum, ok := fold(nil, evs); ok {
			s.putSummary(ctx, key, sum)
		}
		return
	}
	if _, ok := fold(nil, evs); !ok {
		return // none of them changes a summary (a hold decided, say)
	}
	// Later events change the summary as it stands: read it, and write it
	// back only if nobody wrote it meanwhile, so that a stale read never
	// overwrites what the start recorded.
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
			continue
		}
		sum, ok := fold(prev, evs)
		if !ok {
			return
		}
		data, merr := proto.Marshal(sum)
		if merr != nil {
			return
		}
		if rev == 0 {
			_, err = s.index.Create(ctx, key, data)
		} else {
			_, err = s.index.Update(ctx, key, data, rev)
		}
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Duration(attempt) * 5 * time.Millisecond):
		}
	}
	s.cfg.Log.Warn().Err(err).Str("session", key).Msg("session index update failed; sluice admin reproject sessions rebuilds it")
}

// fold applies evs to prev; ok says some of them changed it.
func fold(prev *sessionv1.Summary, evs []*sessionv1.Event) (sum *sessionv1.Summary, ok bool) {
	sum = prev
	for _, ev := range evs {
		if next, changed := auditlog.Summarize(sum, ev); changed {
			sum, ok = next, true
		}
	}
	return sum, ok
}

func (s *Service) putSummary(ctx context.Context, key string, sum *sessionv1.Summary) {
	data, err := proto.Marshal(sum)
	if err != nil {
		return
	}
	if _, err := s.index.Put(ctx, key, data); err != nil {
		s.cfg.Log.Warn().Err(err).Str("session", key).Msg("session index update failed")
	}
}
