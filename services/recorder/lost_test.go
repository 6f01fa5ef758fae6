package recorder_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"sluice.dev/sluice/libs/auditlog"
	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/recording"
	"sluice.dev/sluice/libs/testkit"
	auditv1 "sluice.dev/sluice/proto/sluice/audit/v1"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
	"sluice.dev/sluice/services/recorder"
)

// startedOn is a session's start on a worker.
func startedOn(worker string) *sessionv1.Event {
	ev := started()
	ev.GetStarted().Worker = worker
	return ev
}

// lastRecord is the session's last record in AUDIT (an empty one if it
// has none yet).
func lastRecord(t *testing.T, e *env, session string) *auditv1.Record {
	t.Helper()
	stream, err := e.conn.JS.Stream(context.Background(), bus.StreamAudit)
	require.NoError(t, err)
	var r auditv1.Record
	raw, err := stream.GetLastMsgForSubject(context.Background(), auditlog.SessionSubject(session))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return &r
	}
	require.NoError(t, err)
	require.NoError(t, proto.Unmarshal(raw.Data, &r))
	return &r
}

// A session whose worker is gone without ending it gets a lost record, the
// last of its chain, once its events are chained; its summary says it was
// lost. A session whose worker serves it, or that ended, gets none. What
// the gone worker sends after is not recorded: its session's end quietly
// (the lost record stands for it), anything else with an alarm. The chains
// verify, and the index is what AUDIT folds to.
func TestALostSessionsChainIsClosed(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	workers, err := e.conn.JS.KeyValue(ctx, bus.BucketWorkers)
	require.NoError(t, err)
	presence, err := proto.Marshal(&sessionv1.WorkerPresence{Name: "live", Protocol: "postgres", StartedAt: timestamppb.New(time.Now().Add(-time.Hour))})
	require.NoError(t, err)
	_, err = workers.Put(ctx, bus.WorkerKey("live"), presence)
	require.NoError(t, err)

	rec := recording.New(e.conn.JS)
	lost, open, ended := rec.Open(recording.NewSessionID()), rec.Open(recording.NewSessionID()), rec.Open(recording.NewSessionID())
	require.NoError(t, lost.Record(ctx, startedOn("gone")))
	require.NoError(t, lost.Record(ctx, command(1)))
	require.NoError(t, open.Record(ctx, startedOn("live")))
	require.NoError(t, ended.Record(ctx, startedOn("gone")))
	require.NoError(t, ended.Record(ctx, &sessionv1.Event{Body: &sessionv1.Event_Ended{Ended: &sessionv1.Ended{Reason: "client left"}}}))
	// A lost session with an event still waiting in SESSIONS (behind a
	// missing one, so it waits for the gap timeout): its chain is closed
	// only after that event.
	behind := rec.Open(recording.NewSessionID())
	require.NoError(t, behind.Record(ctx, startedOn("gone")))
	publishBatch(t, e.conn.JS, "gone-worker", 1, rawCommand(behind.ID, 3))

	closed := testutil.ToFloat64(recorder.SessionsLostMetric)
	e.start(t, e.conn, recorder.Config{LostEvery: 100 * time.Millisecond, GapTimeout: 2 * time.Second})
	testkit.Eventually(t, 20*time.Second, func() error {
		if r := lastRecord(t, e, lost.ID); r.GetLost() == "" {
			return fmt.Errorf("the lost session's last record is %d, not a lost record", r.GetSeq())
		}
		return nil
	})
	r := lastRecord(t, e, lost.ID)
	assert.Equal(t, uint64(3), r.GetSeq(), "right after its last event")
	assert.Contains(t, r.GetLost(), "its worker gone stopped without ending it")
	assert.Empty(t, r.GetEvents())
	testkit.Eventually(t, 20*time.Second, func() error {
		if r := lastRecord(t, e, behind.ID); r.GetLost() == "" {
			return fmt.Errorf("the lost session's last record is %d, not a lost record", r.GetSeq())
		}
		return nil
	})
	assert.Equal(t, uint64(4), lastRecord(t, e, behind.ID).GetSeq(), "after the gap (2) and the event that waited (3)")
	assert.Equal(t, 2.0, testutil.ToFloat64(recorder.SessionsLostMetric)-closed)
	assert.Empty(t, lastRecord(t, e, open.ID).GetLost(), "its worker is present")
	assert.Empty(t, lastRecord(t, e, ended.ID).GetLost(), "it ended")

	index, err := e.conn.JS.KeyValue(ctx, bus.BucketSessions)
	require.NoError(t, err)
	testkit.Eventually(t, 10*time.Second, func() error {
		entry, err := index.Get(ctx, lost.ID)
		if err != nil {
			return err
		}
		var sum sessionv1.Summary
		require.NoError(t, proto.Unmarshal(entry.Value(), &sum))
		if sum.GetLost() == "" || sum.GetEndedAt() == nil || sum.GetLastSeq() != 3 {
			return fmt.Errorf("summary %v", &sum)
		}
		return nil
	})

	// The gone worker comes back: its end is dropped quietly, anything
	// after it with an alarm; neither is recorded.
	after := testutil.ToFloat64(recorder.AfterLostMetric)
	require.NoError(t, lost.Record(ctx, &sessionv1.Event{Body: &sessionv1.Event_Ended{Ended: &sessionv1.Ended{Reason: "late"}}}))
	waitSessionsDrained(t, e.conn.JS)
	assert.Equal(t, 0.0, testutil.ToFloat64(recorder.AfterLostMetric)-after, "the session's end is expected")
	require.NoError(t, lost.Record(ctx, command(2)))
	waitSessionsDrained(t, e.conn.JS)
	assert.Equal(t, 1.0, testutil.ToFloat64(recorder.AfterLostMetric)-after, "anything else is not")
	assert.Equal(t, uint64(3), lastRecord(t, e, lost.ID).GetSeq(), "nothing follows the lost record")

	for _, s := range []string{lost.ID, open.ID, ended.ID} {
		assert.Empty(t, verify(t, e, s), s)
	}
	assert.Equal(t, []string{"lost"}, kindsOf(verify(t, e, behind.ID)), "the gap, and nothing else")
	want, err := auditlog.Summaries(ctx, e.conn.JS)
	require.NoError(t, err)
	entry, err := index.Get(ctx, lost.ID)
	require.NoError(t, err)
	var got sessionv1.Summary
	require.NoError(t, proto.Unmarshal(entry.Value(), &got))
	assert.True(t, proto.Equal(want[lost.ID], &got), "index %v, AUDIT folds to %v", &got, want[lost.ID])
}
