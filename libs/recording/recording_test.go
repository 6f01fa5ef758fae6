package recording_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/recording"
	"sluice.dev/sluice/libs/testkit"
	commonv1 "sluice.dev/sluice/proto/sluice/common/v1"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
)

func command(i int) *sessionv1.Event {
	return &sessionv1.Event{Body: &sessionv1.Event_Command{Command: &sessionv1.Command{CommandId: uint64(i), Text: "SELECT 1"}}}
}

// fenceable gives rec a fence the test raises and lowers.
func fenceable(rec *recording.Recorder) *atomic.Bool {
	var fenced atomic.Bool
	rec.Fenced = func() error {
		if fenced.Load() {
			return errors.New("fenced")
		}
		return nil
	}
	return &fenced
}

// stored reads SESSIONS back: every batch in stream order, each event
// decoded.
func stored(t *testing.T, js jetstream.JetStream) (batches []string, events []*sessionv1.Event) {
	t.Helper()
	ctx := context.Background()
	s, err := js.Stream(ctx, bus.StreamSessions)
	require.NoError(t, err)
	info, err := s.Info(ctx)
	require.NoError(t, err)
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		require.NoError(t, err)
		batches = append(batches, m.Subject)
		var b sessionv1.Batch
		require.NoError(t, proto.Unmarshal(m.Data, &b))
		for _, data := range b.GetEvents() {
			var ev sessionv1.Event
			require.NoError(t, proto.Unmarshal(data, &ev))
			events = append(events, &ev)
		}
	}
	return batches, events
}

// Concurrent sessions that each wait for their record (write-ahead) share
// batches: fewer SESSIONS messages than events, every event stored once,
// each session's events numbered without gaps and in order.
func TestGroupCommit(t *testing.T) {
	_, conn := testkit.NATS(t)
	require.NoError(t, bus.Provision(context.Background(), conn.JS, bus.Topology{}))
	rec := recording.New(conn.JS)
	const sessions, statements = 8, 200
	var wg sync.WaitGroup
	for range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sess := rec.Open(recording.NewSessionID())
			for i := range statements {
				if err := sess.Record(context.Background(), command(i)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	st := rec.Stats()
	assert.Equal(t, uint64(sessions*statements), st.Events)
	assert.Less(t, st.Batches, st.Events, "no batch held more than one event")
	t.Logf("%d events in %d batches", st.Events, st.Batches)

	subjects, events := stored(t, conn.JS)
	assert.Len(t, subjects, int(st.Batches))
	for i, subj := range subjects {
		assert.Equal(t, recording.BatchSubject(rec.ID(), uint64(i+1)), subj, "batches are published in order, without gaps")
	}
	require.Len(t, events, sessions*statements)
	next := map[string]uint64{}
	for _, ev := range events {
		next[ev.GetSessionId()]++
		assert.Equal(t, next[ev.GetSessionId()], ev.GetSeq(), "session %s out of order", ev.GetSessionId())
	}
	assert.Len(t, next, sessions)
}

// streamGone returns a recorder with the given timeout and a session that
// recorded one event, after which the SESSIONS stream was deleted.
func streamGone(t *testing.T, timeout time.Duration) (*bus.Conn, *recording.Recorder, *recording.Session) {
	t.Helper()
	_, conn := testkit.NATS(t)
	ctx := context.Background()
	require.NoError(t, bus.Provision(ctx, conn.JS, bus.Topology{}))
	rec := recording.New(conn.JS)
	rec.Timeout = timeout
	sess := rec.Open(recording.NewSessionID())
	require.NoError(t, sess.Record(ctx, command(1)))
	require.NoError(t, conn.JS.DeleteStream(ctx, bus.StreamSessions))
	return conn, rec, sess
}

// When the stream refuses events, the sessions whose events were lost are
// closed for good, and say why.
func TestFailureIsSticky(t *testing.T) {
	conn, rec, sess := streamGone(t, 300*time.Millisecond)
	ctx := context.Background()
	failures := testutil.ToFloat64(recording.FailuresMetric)
	start := time.Now()
	err := sess.Record(ctx, command(2))
	require.Error(t, err)
	assert.True(t, errors.Is(err, recording.ErrNotRecording), err)
	assert.Less(t, time.Since(start), 2*time.Second)
	assert.Equal(t, failures+1, testutil.ToFloat64(recording.FailuresMetric), "the lost event is counted")
	_, err = sess.Emit(command(3))
	assert.ErrorIs(t, err, recording.ErrNotRecording)

	// A new session records again once the stream is back.
	require.NoError(t, bus.Provision(ctx, conn.JS, bus.Topology{}))
	other := rec.Open(recording.NewSessionID())
	require.NoError(t, other.Record(ctx, command(1)))
	assert.ErrorIs(t, sess.Err(), recording.ErrNotRecording)
}

// A caller that gives up its wait (its client left, its request was
// cancelled) learns nothing about the audit stream: the session is not
// closed, the event it waited for is still stored, and so is what the
// session records next, its end above all.
func TestAWaitGivenUpLeavesTheSessionRecording(t *testing.T) {
	conn, _, sess := streamGone(t, 2*time.Second)
	ctx := context.Background()
	seq, err := sess.Emit(command(2))
	require.NoError(t, err)
	wctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	err = sess.WaitFor(wctx, seq)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.NotErrorIs(t, err, recording.ErrNotRecording)
	require.NoError(t, sess.Err(), "the session still records")

	require.NoError(t, bus.Provision(ctx, conn.JS, bus.Topology{}))
	require.NoError(t, sess.Record(ctx, &sessionv1.Event{Body: &sessionv1.Event_Ended{Ended: &sessionv1.Ended{Reason: "the client left"}}}))
	_, events := stored(t, conn.JS)
	require.Len(t, events, 2)
	assert.Equal(t, uint64(2), events[0].GetSeq(), "the event the caller stopped waiting for")
	assert.Equal(t, "the client left", events[1].GetEnded().GetReason())

	// A session whose events were lost is closed for good, whatever its
	// callers do.
	require.NoError(t, conn.JS.DeleteStream(ctx, bus.StreamSessions))
	seq, err = sess.Emit(command(4))
	require.NoError(t, err)
	wctx, cancel = context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, sess.WaitFor(wctx, seq), context.DeadlineExceeded)
	assert.ErrorIs(t, sess.WaitFor(ctx, seq), recording.ErrNotRecording, "the batch's retries end, and the session with them")
	assert.ErrorIs(t, sess.Err(), recording.ErrNotRecording)
}

// A session whose events were lost does not record its end after them (a
// gap in its chain): Close says so. One that failed without losing an event
// records its end once the stream takes events again, tried under one seq.
func TestCloseRecordsTheEndOnlyWithoutAGap(t *testing.T) {
	conn, _, sess := streamGone(t, 300*time.Millisecond)
	ctx := context.Background()
	require.ErrorIs(t, sess.Record(ctx, command(2)), recording.ErrNotRecording)
	end := &sessionv1.Event{Body: &sessionv1.Event_Ended{Ended: &sessionv1.Ended{Reason: "the audit stream stopped accepting records"}}}
	require.ErrorIs(t, sess.Close(ctx, end, 100*time.Millisecond), recording.ErrNotRecording, "event 2 was lost")

	// Nothing lost: refused while fenced, before taking a seq.
	require.NoError(t, bus.Provision(ctx, conn.JS, bus.Topology{}))
	rec := recording.New(conn.JS)
	fenced := fenceable(rec)
	other := rec.Open(recording.NewSessionID())
	require.NoError(t, other.Record(ctx, command(1)))
	fenced.Store(true)
	require.ErrorIs(t, other.Record(ctx, command(2)), recording.ErrNotRecording)
	go func() {
		time.Sleep(time.Second) // a few tries are refused first
		fenced.Store(false)
	}()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	require.NoError(t, other.Close(cctx, end, 100*time.Millisecond))
	_, events := stored(t, conn.JS)
	require.Len(t, events, 2)
	assert.Equal(t, uint64(2), events[1].GetSeq(), "right after the last stored event: no seq spent on the tries")
	assert.NotNil(t, events[1].GetEnded())
}

// Cut closes every session opened before it for good (nothing of theirs is
// sent, but their end); sessions opened after record as usual. A fence
// raised after an event was stored keeps the caller from acting on it.
func TestCutAndFence(t *testing.T) {
	_, conn := testkit.NATS(t)
	ctx := context.Background()
	require.NoError(t, bus.Provision(ctx, conn.JS, bus.Topology{}))
	rec := recording.New(conn.JS)
	fenced := fenceable(rec)
	before := rec.Open(recording.NewSessionID())
	require.NoError(t, before.Record(ctx, command(1)))

	rec.Cut(errors.New("cut off"))
	_, err := before.Emit(command(2))
	require.ErrorIs(t, err, recording.ErrNotRecording)
	assert.Contains(t, err.Error(), "cut off")
	after := rec.Open(recording.NewSessionID())
	require.NoError(t, after.Record(ctx, command(1)), "a session opened after the cut records")
	end := &sessionv1.Event{Body: &sessionv1.Event_Ended{Ended: &sessionv1.Ended{Reason: "cut off"}}}
	require.NoError(t, before.Close(ctx, end, 10*time.Millisecond), "its end is recorded all the same")

	// Stored, then fenced before the caller acts: the caller must not.
	seq, err := after.Emit(command(2))
	require.NoError(t, err)
	require.NoError(t, after.WaitFor(ctx, seq))
	fenced.Store(true)
	require.ErrorIs(t, after.WaitFor(ctx, seq), recording.ErrNotRecording, "stored, but the fence stands")
	// And nothing is sent while it stands.
	third := rec.Open(recording.NewSessionID())
	require.ErrorIs(t, third.Record(ctx, command(1)), recording.ErrNotRecording)

	_, events := stored(t, conn.JS)
	var got []string
	for _, ev := range events {
		s := "after"
		if ev.GetSessionId() == before.ID {
			s = "before"
		}
		got = append(got, fmt.Sprintf("%s %d %s", s, ev.GetSeq(), recording.Kind(ev)))
	}
	assert.Equal(t, []string{"before 1 command", "after 1 command", "before 2 ended", "after 2 command"}, got,
		"the cut session's refused command took no seq; its end follows its last event")
}

func TestPubAckError(t *testing.T) {
	assert.NoError(t, recording.PubAckErrorForTest([]byte(`{"stream":"SESSIONS","seq":42}`)))
	assert.NoError(t, recording.PubAckErrorForTest([]byte(`{"stream":"SESSIONS","seq":42,"duplicate":true}`)))
	err := recording.PubAckErrorForTest([]byte(`{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"}}`))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "maximum messages exceeded")
	assert.Error(t, recording.PubAckErrorForTest([]byte(`+OK`)))
}

// A batch refused because no stream listens is retried with the same
// message id until its deadline: a stream that comes back in time stores
// the event once, and the session goes on.
func TestRetryUntilTheStreamReturns(t *testing.T) {
	conn, _, sess := streamGone(t, 5*time.Second)
	ctx := context.Background()

	go func() {
		time.Sleep(300 * time.Millisecond)
		assert.NoError(t, bus.Provision(ctx, conn.JS, bus.Topology{}))
	}()
	start := time.Now()
	require.NoError(t, sess.Record(ctx, command(2)))
	assert.GreaterOrEqual(t, time.Since(start), 250*time.Millisecond)
	_, events := stored(t, conn.JS)
	require.Len(t, events, 1, "the re-created stream holds the retried event once")
	assert.Equal(t, uint64(2), events[0].GetSeq())
}

func TestEscape(t *testing.T) {
	for in, want := range map[string]string{
		"SELECT 1":          "SELECT 1",
		"SELECT 'é'":        "SELECT 'é'",
		"SELECT '\xff'":     `SELECT '\xff'`,
		"a\xc3(b":           `a\xc3(b`,
		"\xe2\x82":          `\xe2\x82`,
		"ok \xed\xa0\x80 z": `ok \xed\xa0\x80 z`, // a surrogate is not UTF-8
	} {
		got, escaped := recording.Escape(in)
		assert.Equal(t, want, got, "%q", in)
		assert.Equal(t, in != want, escaped, "%q", in)
	}
}

// Bytes that are not UTF-8, anywhere in an event (a client's statement, a
// startup parameter, a result's message), are recorded escaped: the event
// and the session's record go on.
func TestEventsWithInvalidUTF8AreRecorded(t *testing.T) {
	_, conn := testkit.NATS(t)
	ctx := context.Background()
	require.NoError(t, bus.Provision(ctx, conn.JS, bus.Topology{}))
	rec := recording.New(conn.JS)
	sess := rec.Open(recording.NewSessionID())
	require.NoError(t, sess.Record(ctx, &sessionv1.Event{Body: &sessionv1.Event_Started{Started: &sessionv1.Started{
		ClientApplication: "app\xff", ClientUser: "al\xfeice",
		Target: &commonv1.Target{Name: "demo", Labels: map[string]string{"env": "prod\xff", "k\xfe": "v"}}}}}))
	require.NoError(t, sess.Record(ctx, &sessionv1.Event{Body: &sessionv1.Event_Command{Command: &sessionv1.Command{
		CommandId: 1, Text: "SELECT '\xff'", Results: []*sessionv1.Result{{ErrorMessage: "bad \xc3("}}}}}))
	require.NoError(t, sess.Record(ctx, command(2)))
	_, events := stored(t, conn.JS)
	require.Len(t, events, 3)
	st := events[0].GetStarted()
	assert.Equal(t, []string{`app\xff`, `al\xfeice`}, []string{st.GetClientApplication(), st.GetClientUser()})
	assert.Equal(t, map[string]string{"env": `prod\xff`, `k\xfe`: "v"}, st.GetTarget().GetLabels())
	assert.Equal(t, `SELECT '\xff'`, events[1].GetCommand().GetText())
	assert.Equal(t, `bad \xc3(`, events[1].GetCommand().GetResults()[0].GetErrorMessage())
	assert.NoError(t, sess.Err())
}

// A batch in flight when its NATS node dies is lost without an error, or
// stored with its acknowledgement lost; the client connects again. The
// batch is sent again well before the timeout, and stored once: the
// session goes on.
func TestABatchLostWithItsConnectionIsSentAgain(t *testing.T) {
	srv, conn := testkit.NATS(t)
	ctx := context.Background()
	require.NoError(t, bus.Provision(ctx, conn.JS, bus.Topology{}))
	proxy := testkit.NewProxy(t, strings.TrimPrefix(srv.ClientURL(), "nats://"))
	worker := testkit.Connect(t, "nats://"+proxy.Addr())
	rec := recording.New(worker.JS)
	rec.Timeout = 5 * time.Second
	sess := rec.Open(recording.NewSessionID())
	require.NoError(t, sess.Record(ctx, command(1)))
	for i, lose := range []func(){proxy.Drop, proxy.DropReplies} {
		lose()
		done := make(chan error, 1)
		start := time.Now()
		go func() { done <- sess.Record(ctx, command(i+2)) }()
		time.Sleep(100 * time.Millisecond) // sent, and lost
		proxy.Cut()
		require.NoError(t, <-done)
		assert.Less(t, time.Since(start), 2500*time.Millisecond, "sent again after a fifth of the timeout")
	}
	_, events := stored(t, conn.JS)
	var seqs []uint64
	for _, ev := range events {
		seqs = append(seqs, ev.GetSeq())
	}
	assert.Equal(t, []uint64{1, 2, 3}, seqs, "each event stored once")
	assert.NoError(t, sess.Err())

	// A worker whose lease lapses while its batch is unanswered does not
	// send it again.
	fenced := fenceable(rec)
	proxy.Drop()
	done := make(chan error, 1)
	go func() { done <- sess.Record(ctx, command(4)) }()
	time.Sleep(100 * time.Millisecond)
	fenced.Store(true)
	proxy.Cut()
	require.ErrorIs(t, <-done, recording.ErrNotRecording)
	_, events = stored(t, conn.JS)
	assert.Len(t, events, 3, "the lost batch was not sent again")
}
