package auditlog

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"sluice.dev/sluice/libs/bus"
	auditv1 "sluice.dev/sluice/proto/sluice/audit/v1"
	commonv1 "sluice.dev/sluice/proto/sluice/common/v1"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
)

// Summarize is what a session event makes of its session's summary in the
// sessions index (prev, nil if none yet): the start, the end, or a failed
// authentication set it, a command held for approval or masking counts in
// it; other events leave it (ok false). The recorder
// indexes with it as it records, and Summaries rebuilds the index with it.
//
// The summary notes the seq of the newest event folded into it (folded_seq),
// so that whoever folds may tell an event given again from a new one.
func Summarize(prev *sessionv1.Summary, ev *sessionv1.Event) (sum *sessionv1.Summary, ok bool) {
	sum, ok = summarize(prev, ev)
	if ok {
		sum.FoldedSeq = max(prev.GetFoldedSeq(), ev.GetSeq())
	}
	return sum, ok
}

func summarize(prev *sessionv1.Summary, ev *sessionv1.Event) (sum *sessionv1.Summary, ok bool) {
	key := ev.GetSessionId()
	switch b := ev.GetBody().(type) {
	case *sessionv1.Event_Started:
		return &sessionv1.Summary{
			SessionId: key, Principal: b.Started.GetPrincipal(), Target: b.Started.GetTarget(), Protocol: b.Started.GetProtocol(),
			ClientAddr: b.Started.GetClientAddr(), StartedAt: ev.GetTime(), Worker: b.Started.GetWorker(),
		}, true
	case *sessionv1.Event_Ended:
		sum := grow(prev, key)
		sum.SessionId = key
		sum.EndedAt = ev.GetTime()
		sum.Commands, sum.Denied, sum.EndReason = b.Ended.GetCommands(), b.Ended.GetDenied(), b.Ended.GetReason()
		sum.LastSeq = ev.GetSeq()
		return sum, true
	case *sessionv1.Event_Approval:
		// A command held for approval: counted when the hold opens.
		if b.Approval.GetState() != "pending" {
			return nil, false
		}
		sum := grow(prev, key)
		sum.Held++
		return sum, true
	case *sessionv1.Event_Masking:
		sum := grow(prev, key)
		sum.Masked++
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

// SummarizeLost is what a lost record makes of its session's summary: the
// session ended without its worker, when the record was written.
func SummarizeLost(prev *sessionv1.Summary, r *auditv1.Record) *sessionv1.Summary {
	sum := grow(prev, r.GetSessionId())
	sum.EndedAt, sum.Lost, sum.LastSeq = r.GetRecordedAt(), r.GetLost(), r.GetSeq()
	sum.EndReason = "lost: " + r.GetLost()
	sum.FoldedSeq = max(sum.GetFoldedSeq(), r.GetSeq())
	return sum
}

// grow copies prev, or starts a summary of a session whose start it has not
// seen.
func grow(prev *sessionv1.Summary, key string) *sessionv1.Summary {
	if prev == nil {
		return &sessionv1.Summary{SessionId: key}
	}
	return proto.Clone(prev).(*sessionv1.Summary)
}

// Summaries folds the sessions index from AUDIT: every session's summary
// as the recorder made it while recording (sluice admin reproject sessions
// compares and rebuilds the index with it).
//
// It fails unless it read every record up to the last one stored when it
// started: a partial fold would look like sessions that never were.
func Summaries(ctx context.Context, js jetstream.JetStream) (map[string]*sessionv1.Summary, error) {
	out := map[string]*sessionv1.Summary{}
	stream, err := js.Stream(ctx, bus.StreamAudit)
	if err != nil {
		return nil, err
	}
	last, err := stream.GetLastMsgForSubject(ctx, subjectRecords+".>")
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("last record: %w", err)
	}
	var reached uint64
	err = Read(ctx, js, Options{}, func(e Entry) error {
		reached = max(reached, e.StreamSeq)
		if e.Event == nil {
			if e.Record.GetLost() != "" {
				id := e.Record.GetSessionId()
				out[id] = SummarizeLost(out[id], e.Record)
			}
			return nil
		}
		id := e.Event.GetSessionId()
		if sum, ok := Summarize(out[id], e.Event); ok {
			out[id] = sum
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if reached < last.Sequence {
		return nil, fmt.Errorf("reading AUDIT stopped at record %d of %d; nothing was folded (try again)", reached, last.Sequence)
	}
	return out, nil
}
