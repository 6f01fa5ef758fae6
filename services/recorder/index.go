package recorder

import (
	"context"

	"google.golang.org/protobuf/proto"

	"sluice.dev/sluice/libs/auditlog"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
)

// indexSession keeps the session summary in sluice_sessions up to date on start,
// end, a held command and masking (auditlog.Summarize). It is best effort:
// the audit stream is the record; the index is a read model that can be
// rebuilt from it.
func (s *Service) indexSession(ctx context.Context, ev *sessionv1.Event) {
	key := ev.GetSessionId()
	var prev *sessionv1.Summary
	switch b := ev.GetBody().(type) {
	case *sessionv1.Event_Started, *sessionv1.Event_AuthFailed:
	case *sessionv1.Event_Ended, *sessionv1.Event_Masking, *sessionv1.Event_Approval:
		if a, held := b.(*sessionv1.Event_Approval); held && a.Approval.GetState() != "pending" {
			return
		}
		if e, err := s.index.Get(ctx, key); err == nil {
			prev = &sessionv1.Summary{}
			if proto.Unmarshal(e.Value(), prev) != nil {
				prev = nil
			}
		}
	default:
		return
	}
	if sum, ok := auditlog.Summarize(prev, ev); ok {
		s.putSummary(ctx, key, sum)
	}
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
