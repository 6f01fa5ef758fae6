package recorder_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"sluice.dev/sluice/libs/auditlog"
	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/recording"
	"sluice.dev/sluice/libs/testkit"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
	"sluice.dev/sluice/services/recorder"
)

// A sessions-index write the bucket refuses (as while a NATS node is down
// and the bucket elects a leader) is kept and written once the bucket takes
// writes again, with the session's later events in order behind it; the
// records are stored meanwhile.
func TestIndexWritesTheBucketRefusedAreWrittenLater(t *testing.T) {
	e := setup(t)
	e.start(t, e.conn, recorder.Config{})
	rec := recording.New(e.conn.JS)
	ctx := context.Background()
	ended := func(n int64) *sessionv1.Event {
		return &sessionv1.Event{Body: &sessionv1.Event_Ended{Ended: &sessionv1.Ended{Reason: "client closed", Commands: n}}}
	}
	indexed := func() map[string]*sessionv1.Summary {
		sums, err := auditlog.Sessions(ctx, e.conn.JS)
		require.NoError(t, err)
		out := map[string]*sessionv1.Summary{}
		for _, s := range sums {
			out[s.GetSessionId()] = s
		}
		return out
	}
	first := rec.Open(recording.NewSessionID())
	require.NoError(t, first.Record(ctx, started()))
	waitRecorded(t, e.conn.JS, 1)
	testkit.Eventually(t, 10*time.Second, func() error {
		if indexed()[first.ID] == nil {
			return fmt.Errorf("the first session is not indexed yet")
		}
		return nil
	})

	// The bucket takes no new key: it holds as many as it may, and
	// refuses rather than discards.
	stream, err := e.conn.JS.Stream(ctx, "KV_"+bus.BucketSessions)
	require.NoError(t, err)
	open := stream.CachedInfo().Config
	full := open
	full.MaxMsgs, full.Discard = 1, jetstream.DiscardNew
	_, err = e.conn.JS.UpdateStream(ctx, full)
	require.NoError(t, err)

	deferred := testutil.ToFloat64(recorder.IndexDeferredMetric)
	var later []*recording.Session
	for i := 0; i < 3; i++ {
		s := rec.Open(recording.NewSessionID())
		later = append(later, s)
		require.NoError(t, s.Record(ctx, started()))
		for c := 1; c <= 2; c++ {
			_, err := s.Emit(command(c))
			require.NoError(t, err)
		}
		require.NoError(t, s.Record(ctx, ended(2)))
	}
	waitRecorded(t, e.conn.JS, 1+3*4)
	testkit.Eventually(t, 10*time.Second, func() error {
		if got := testutil.ToFloat64(recorder.IndexDeferredMetric) - deferred; got != 3*2 {
			return fmt.Errorf("%v index events deferred", got)
		}
		return nil
	})
	for _, s := range later {
		assert.Nil(t, indexed()[s.ID], "the bucket took no new key")
	}

	_, err = e.conn.JS.UpdateStream(ctx, open)
	require.NoError(t, err)
	testkit.Eventually(t, 15*time.Second, func() error {
		got := indexed()
		for _, s := range later {
			sum := got[s.ID]
			if sum == nil || sum.GetEndedAt() == nil {
				return fmt.Errorf("session %s: %v", s.ID, sum)
			}
			if sum.GetPrincipal().GetSubject() != "alice" || sum.GetCommands() != 2 || sum.GetLastSeq() != 4 {
				return fmt.Errorf("session %s indexed as %v: the start and the end are both in it", s.ID, sum)
			}
		}
		return nil
	})
	assert.Equal(t, deferred, testutil.ToFloat64(recorder.IndexDeferredMetric), "nothing waits any more")
	assert.Empty(t, verify(t, e, ""))
}

// An event the recorder is given again (a redelivery after a recorder died
// before it acknowledged, a replay) is indexed once: a summary that has it
// is left as it is, and one that lost it (the recorder died after storing
// the record, before indexing it) gets it back.
func TestEventsGivenAgainAreIndexedOnce(t *testing.T) {
	e := setup(t)
	e.start(t, e.conn, recorder.Config{})
	ctx := context.Background()
	id := recording.NewSessionID()
	sess := recording.New(e.conn.JS).Open(id)
	require.NoError(t, sess.Record(ctx, started()))
	require.NoError(t, sess.Record(ctx, command(1)))
	require.NoError(t, sess.Record(ctx, &sessionv1.Event{Body: &sessionv1.Event_Approval{Approval: &sessionv1.Approval{CommandId: 1, ApprovalId: "a1", State: "pending"}}}))
	require.NoError(t, sess.Record(ctx, &sessionv1.Event{Body: &sessionv1.Event_Masking{Masking: &sessionv1.Masking{CommandId: 1}}}))
	require.NoError(t, sess.Record(ctx, &sessionv1.Event{Body: &sessionv1.Event_Ended{Ended: &sessionv1.Ended{Reason: "client closed", Commands: 1}}}))
	waitRecorded(t, e.conn.JS, 5)
	kv, err := e.conn.JS.KeyValue(ctx, bus.BucketSessions)
	require.NoError(t, err)
	summary := func() (*sessionv1.Summary, error) {
		en, err := kv.Get(ctx, id)
		if err != nil {
			return nil, err
		}
		var s sessionv1.Summary
		return &s, proto.Unmarshal(en.Value(), &s)
	}
	var want *sessionv1.Summary
	testkit.Eventually(t, 10*time.Second, func() error {
		s, err := summary()
		if err != nil {
			return err
		}
		if s.GetEndedAt() == nil {
			return fmt.Errorf("not ended yet: %v", s)
		}
		want = s
		return nil
	})
	assert.Equal(t, int64(1), want.GetHeld())
	assert.Equal(t, int64(1), want.GetMasked())
	assert.Equal(t, uint64(5), want.GetFoldedSeq())

	// Every event stored, given again one per batch under other message ids.
	var events [][]byte
	require.NoError(t, auditlog.Read(ctx, e.conn.JS, auditlog.Options{Session: id}, func(en auditlog.Entry) error {
		events = append(events, en.Record.GetEvents()[en.Index])
		return nil
	}))
	require.Len(t, events, 5)
	again := func(from string, events ...[]byte) {
		for i, ev := range events {
			publishBatch(t, e.conn.JS, from, uint64(i+1), ev)
		}
		waitSessionsDrained(t, e.conn.JS)
	}
	// The hold and the masking only (a redelivered batch), then all of it.
	for i, evs := range [][][]byte{events[2:4], events} {
		again(fmt.Sprint("replayer-", i), evs...)
		got, err := summary()
		require.NoError(t, err)
		assert.True(t, proto.Equal(want, got), "counted once: want %v, got %v", want, got)
	}

	// The summary lost (its recorder died after storing, before indexing).
	require.NoError(t, kv.Delete(ctx, id))
	again("replayer-lost", events...)
	testkit.Eventually(t, 10*time.Second, func() error {
		got, err := summary()
		if err != nil {
			return err
		}
		if !proto.Equal(want, got) {
			return fmt.Errorf("want %v, got %v", want, got)
		}
		return nil
	})
	waitRecorded(t, e.conn.JS, 5)
	assert.Empty(t, verify(t, e, id))
}

// A session's events indexed before its start (the start's batch came
// again after a failover, once later records were stored and indexed)
// still give the summary AUDIT gives: the start is folded in from AUDIT,
// never lost behind what the summary folded first.
func TestIndexWritesOutOfOrderKeepTheStart(t *testing.T) {
	e := setup(t)
	s, _ := e.start(t, e.conn, recorder.Config{})
	ctx := context.Background()
	rec := recording.New(e.conn.JS)
	sess := rec.Open(recording.NewSessionID())
	require.NoError(t, sess.Record(ctx, started()))
	_, err := sess.Emit(command(1))
	require.NoError(t, err)
	require.NoError(t, sess.Record(ctx, &sessionv1.Event{Body: &sessionv1.Event_Ended{Ended: &sessionv1.Ended{Reason: "client closed", Commands: 1}}}))
	waitRecorded(t, e.conn.JS, 3)
	var evs []*sessionv1.Event
	testkit.Eventually(t, 10*time.Second, func() error {
		evs = nil
		require.NoError(t, auditlog.Read(ctx, e.conn.JS, auditlog.Options{Session: sess.ID}, func(en auditlog.Entry) error {
			if en.Event != nil {
				evs = append(evs, en.Event)
			}
			return nil
		}))
		if len(evs) != 3 {
			return fmt.Errorf("%d events in AUDIT", len(evs))
		}
		return nil
	})
	folded, err := auditlog.Summaries(ctx, e.conn.JS)
	require.NoError(t, err)
	want := folded[sess.ID]
	require.NotNil(t, want.GetStartedAt())

	kv, err := e.conn.JS.KeyValue(ctx, bus.BucketSessions)
	require.NoError(t, err)
	testkit.Eventually(t, 10*time.Second, func() error {
		if _, err := kv.Get(ctx, sess.ID); err != nil {
			return err
		}
		return nil
	})
	require.NoError(t, kv.Purge(ctx, sess.ID))
	require.NoError(t, s.WriteSummaryForTest(ctx, sess.ID, evs[1:])) // the later record first
	require.NoError(t, s.WriteSummaryForTest(ctx, sess.ID, evs[:1])) // then the start, given again
	got, err := kv.Get(ctx, sess.ID)
	require.NoError(t, err)
	var sum sessionv1.Summary
	require.NoError(t, proto.Unmarshal(got.Value(), &sum))
	assert.True(t, proto.Equal(want, &sum), "indexed %v, AUDIT gives %v", &sum, want)
}
