package recorder

import (
	"context"

	"google.golang.org/protobuf/proto"

	commonv1 "sluice.dev/sluice/proto/sluice/common/v1"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
)

// indexSession keeps the session summary in sluice_sessions up to date on start
// and end. It is best effort: the audit stream is the record; the index is a
// read model that can be rebuilt from it.
func (s *Service) indexSession(ctx context.Context, ev *sessionv1.Event) {
	key := ev.GetSessionId()
	switch b := ev.GetBody().(type) {
	case *sessionv1.Event_Started:
		sum := &sessionv1.Summary{
			SessionId: key, Principal: b.Started.GetPrincipal(), Target: b.Started.GetTarget(), Protocol: b.Started.GetProtocol(),
			ClientAddr: b.Started.GetClientAddr(), StartedAt: ev.GetTime(), Worker: b.Started.GetWorker(),
		}
		s.putSummary(ctx, key, sum)
	case *sessionv1.Event_Ended:
		var sum sessionv1.Summary
		if e, err := s.index.Get(ctx, key); err == nil {
			_ = proto.Unmarshal(e.Value(), &sum)
		}
		sum.SessionId = key
		sum.EndedAt = ev.GetTime()
		sum.Commands, sum.Denied, sum.EndReason = b.Ended.GetCommands(), b.Ended.GetDenied(), b.Ended.GetReason()
		sum.LastSeq = ev.GetSeq()
		s.putSummary(ctx, key, &sum)
	case *sessionv1.Event_AuthFailed:
		sum := &sessionv1.Summary{SessionId: key, Protocol: b.AuthFailed.GetProtocol(), ClientAddr: b.AuthFailed.GetClientAddr(),
			StartedAt: ev.GetTime(), EndedAt: ev.GetTime(), EndReason: "authentication failed: " + b.AuthFailed.GetCode(), LastSeq: ev.GetSeq()}
		if b.AuthFailed.GetTarget() != "" {
			sum.Target = &commonv1.Target{Name: b.AuthFailed.GetTarget()}
		}
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
