package auditlog_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/timestamppb"

	"sluice.dev/sluice/libs/auditlog"
	auditv1 "sluice.dev/sluice/proto/sluice/audit/v1"
	commonv1 "sluice.dev/sluice/proto/sluice/common/v1"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
)

// A session's summary, folded event by event: its start, each command held
// for approval (counted when the hold opens, not again when it is
// decided), each masking, and its end, which keeps what came before.
func TestSummarizeCountsHoldsAndMasking(t *testing.T) {
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	events := []*sessionv1.Event{
		{Body: &sessionv1.Event_Started{Started: &sessionv1.Started{Principal: &commonv1.Principal{Subject: "alice"}, Protocol: "postgres"}}},
		{Body: &sessionv1.Event_Command{Command: &sessionv1.Command{CommandId: 1, Text: "DELETE FROM t"}}},
		{Body: &sessionv1.Event_Approval{Approval: &sessionv1.Approval{CommandId: 1, State: "pending"}}},
		{Body: &sessionv1.Event_Approval{Approval: &sessionv1.Approval{CommandId: 1, State: "consumed"}}},
		{Body: &sessionv1.Event_Masking{Masking: &sessionv1.Masking{CommandId: 2}}},
		{Body: &sessionv1.Event_Masking{Masking: &sessionv1.Masking{CommandId: 3}}},
		{Body: &sessionv1.Event_Ended{Ended: &sessionv1.Ended{Reason: "bye", Commands: 3, Denied: 0}}},
	}
	var sum *sessionv1.Summary
	writes := 0
	for i, ev := range events {
		ev.SessionId, ev.Seq, ev.Time = "s1", uint64(i+1), timestamppb.New(at.Add(time.Duration(i)*time.Second))
		if next, ok := auditlog.Summarize(sum, ev); ok {
			sum = next
			writes++
		}
	}
	require.NotNil(t, sum)
	assert.Equal(t, "alice", sum.GetPrincipal().GetSubject())
	assert.EqualValues(t, 1, sum.GetHeld())
	assert.EqualValues(t, 2, sum.GetMasked())
	assert.EqualValues(t, 3, sum.GetCommands())
	assert.EqualValues(t, 7, sum.GetLastSeq())
	assert.Equal(t, 5, writes, "start, the hold, two maskings and the end change the summary; commands and decisions do not")
}

// A lost record ends its session's summary (keeping what came before),
// unless the summary holds it already; the transcript and the JSON form
// say the session was lost, and how.
func TestALostRecordEndsTheSession(t *testing.T) {
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	start := &sessionv1.Event{SessionId: "s1", Seq: 1, Time: timestamppb.New(at),
		Body: &sessionv1.Event_Started{Started: &sessionv1.Started{Principal: &commonv1.Principal{Subject: "alice"}, Worker: "vm-7"}}}
	sum, ok := auditlog.Summarize(nil, start)
	require.True(t, ok)
	lost := &auditv1.Record{SessionId: "s1", Seq: 2, Lost: "its worker vm-7 stopped without ending it", RecordedAt: timestamppb.New(at.Add(time.Minute))}
	got := auditlog.SummarizeLost(sum, lost)
	assert.Equal(t, "alice", got.GetPrincipal().GetSubject())
	assert.Equal(t, lost.GetLost(), got.GetLost())
	assert.Equal(t, "lost: "+lost.GetLost(), got.GetEndReason())
	assert.Equal(t, at.Add(time.Minute), got.GetEndedAt().AsTime())
	assert.Equal(t, []uint64{2, 2}, []uint64{got.GetLastSeq(), got.GetFoldedSeq()})
	assert.Nil(t, sum.GetEndedAt(), "the summary before is left as it was")

	e := auditlog.Entry{StreamSeq: 9, Seq: 2, Record: lost}
	var b strings.Builder
	auditlog.Transcript(&b, []auditlog.Entry{e})
	assert.Contains(t, b.String(), "the session was lost: its worker vm-7 stopped without ending it; nothing of it is recorded after event 1")
	j := auditlog.JSON(e)
	assert.Equal(t, "lost", j["kind"])
	assert.Equal(t, lost.GetLost(), j["lost"])
	assert.Equal(t, "gap", auditlog.EntryKind(auditlog.Entry{Record: &auditv1.Record{SessionId: "s1", Seq: 2, GapTo: 3}}))
}

// What a client chose cannot draw on the auditor's terminal: an escape
// that would erase the line above, a bidirectional override, a second
// line passing for the rest of a comment.
func TestTranscriptWritesOutWhatAClientChose(t *testing.T) {
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	rec := &auditv1.Record{SessionId: "s1", RecordedAt: timestamppb.New(at)}
	entries := []auditlog.Entry{
		{Seq: 1, Record: rec, Event: &sessionv1.Event{SessionId: "s1", Seq: 1, Time: timestamppb.New(at), Body: &sessionv1.Event_Started{Started: &sessionv1.Started{
			Principal: &commonv1.Principal{Subject: "agent"}, Protocol: "postgres", ClientApplication: "psql\x1b]0;owned\x07"}}}},
		{Seq: 2, Record: rec, Event: &sessionv1.Event{SessionId: "s1", Seq: 2, Time: timestamppb.New(at), Body: &sessionv1.Event_Command{Command: &sessionv1.Command{
			CommandId: 1, Text: "SELECT 1 -- read only\nDROP TABLE orders /*\x1b[1A\x1b[2K \u202e */"}}}},
	}
	var b strings.Builder
	auditlog.Transcript(&b, entries)
	out := b.String()
	assert.NotContains(t, out, "\x1b")
	assert.NotContains(t, out, "\u202e")
	assert.Contains(t, out, "(psql⟨U+001B⟩]0;owned⟨U+0007⟩)")
	assert.Contains(t, out, "#1  SELECT 1 -- read only ⏎ DROP TABLE orders /*⟨U+001B⟩[1A⟨U+001B⟩[2K ⟨U+202E⟩ */")
	// The console shows a command's JSON form's "shown".
	assert.Equal(t, "SELECT 1 -- read only\nDROP TABLE orders /*⟨U+001B⟩[1A⟨U+001B⟩[2K ⟨U+202E⟩ */", auditlog.JSON(entries[1])["shown"])
}
