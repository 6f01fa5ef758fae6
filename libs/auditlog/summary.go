package auditlog

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	commonv1 "sluice.dev/sluice/proto/sluice/common/v1"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
)

// Summarize is what a session event makes of its session's summary in the
// sessions index (prev, nil if none yet): the start, the end, or a failed
// authentication set it; other events leave it (ok false). The recorder
// indexes with it as it records, and Summaries rebuilds the index with it.
func Summarize(prev *sessionv1.Summary, ev *sessionv1.Event) (sum *sessionv1.Summary, ok bool) {
	key := ev.GetSessionId()
	switch b := ev.GetBody().(type) {
	case *sessionv1.Event_Started:
		return &sessionv1.Summary{
			SessionId: key, Principal: b.Started.GetPrincipal(), Target: b.Started.GetTarget(), Protocol: b.Started.GetProtocol(),
			ClientAddr: b.Started.GetClientAddr(), StartedAt: ev.GetTime(), Worker: b.Started.GetWorker(),
		}, true
	case *sessionv1.Event_Ended:
		sum := &sessionv1.Summary{}
		if prev != nil {
			sum = proto.Clone(prev).(*sessionv1.Summary)
		}
		sum.SessionId = key
		sum.EndedAt = ev.GetTime()
		sum.Commands, sum.Denied, sum.EndReason = b.Ended.GetCommands(), b.Ended.GetDenied(), b.Ended.GetReason()
		sum.LastSeq = ev.GetSeq()
		return sum, true
	case *sessionv1.Event_AuthFailed:
		sum := &sessionv1.Summary{SessionId: key, Protocol: b.AuthFailed.GetProtocol(), ClientAddr: b.AuthFailed.GetClientAddr(),
			StartedAt: ev.GetTime(), EndedAt: ev.GetTime(), EndReason: "authentication failed: " + b.AuthFailed.GetCode(), LastSeq: ev.GetSeq()}
		if b.AuthFailed.GetTarget() != "" {
			sum.Target = &commonv1.Target{Name: b.AuthFailed.GetTarget()}
		}
		return sum, true
	}
	return nil, false
}

// Summaries folds the sessions index from AUDIT: every session's summary
// as the recorder made it while recording (sluice admin reproject sessions
// compares and rebuilds the index with it).
func Summaries(ctx context.Context, js jetstream.JetStream) (map[string]*sessionv1.Summary, error) {
	out := map[string]*sessionv1.Summary{}
	err := Read(ctx, js, Options{}, func(e Entry) error {
		if e.Event == nil {
			return nil
		}
		id := e.Event.GetSessionId()
		if sum, ok := Summarize(out[id], e.Event); ok {
			out[id] = sum
		}
		return nil
	})
	return out, err
}
