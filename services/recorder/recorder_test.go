package recorder_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"sluice.dev/sluice/libs/auditchain"
	"sluice.dev/sluice/libs/auditlog"
	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/recording"
	"sluice.dev/sluice/libs/testkit"
	auditv1 "sluice.dev/sluice/proto/sluice/audit/v1"
	commonv1 "sluice.dev/sluice/proto/sluice/common/v1"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
	"sluice.dev/sluice/services/recorder"
)

type env struct {
	conn *bus.Conn
	key  ed25519.PrivateKey
	keys map[string]ed25519.PublicKey
}

func setup(t *testing.T) *env {
	t.Helper()
	_, conn := testkit.NATS(t)
	require.NoError(t, bus.Provision(context.Background(), conn.JS, bus.Topology{}))
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	return &env{conn: conn, key: priv, keys: map[string]ed25519.PublicKey{auditchain.KeyID(pub): pub}}
}

func (e *env) start(t *testing.T, conn *bus.Conn, cfg recorder.Config) (*recorder.Service, context.CancelFunc) {
	t.Helper()
	cfg.Conn, cfg.SigningKey, cfg.Log = conn, e.key, zerolog.Nop()
	if cfg.CheckpointInterval == 0 {
		cfg.CheckpointInterval = 50 * time.Millisecond
	}
	s := recorder.New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		assert.NoError(t, s.Run(ctx))
	}()
	stop := func() { cancel(); <-done }
	t.Cleanup(stop)
	return s, stop
}

func started() *sessionv1.Event {
	return &sessionv1.Event{Body: &sessionv1.Event_Started{Started: &sessionv1.Started{
		Principal: &commonv1.Principal{Subject: "alice", Groups: []string{"engineers"}},
		Target:    &commonv1.Target{Name: "demo", Kind: "postgres"}, Protocol: "postgres", ClientAddr: "127.0.0.1:5000",
	}}}
}

func command(i int) *sessionv1.Event {
	return &sessionv1.Event{Body: &sessionv1.Event_Command{Command: &sessionv1.Command{CommandId: uint64(i), Text: fmt.Sprintf("SELECT %d", i)}}}
}

// rawCommand is command(seq) as session id's event seq, encoded as a
// worker puts it in a batch.
func rawCommand(id string, seq uint64) []byte {
	x := command(int(seq))
	x.Id, x.SessionId, x.Seq = fmt.Sprintf("ev%d", seq), id, seq
	b, _ := proto.Marshal(x)
	return b
}

// publishBatch publishes events as one SESSIONS batch of a recorder named
// by from, as a worker would (or a worker restarted, or a replayer).
func publishBatch(t *testing.T, js jetstream.JetStream, from string, n uint64, events ...[]byte) {
	t.Helper()
	data, err := proto.Marshal(&sessionv1.Batch{Events: events})
	require.NoError(t, err)
	m := nats.NewMsg(recording.BatchSubject(from, n))
	m.Data = data
	_, err = js.PublishMsg(context.Background(), m, jetstream.WithMsgID(fmt.Sprintf("%s.%d", from, n)))
	require.NoError(t, err)
}

// waitRecorded polls until AUDIT holds want events.
func waitRecorded(t *testing.T, js jetstream.JetStream, want int) {
	t.Helper()
	testkit.Eventually(t, 30*time.Second, func() error {
		n := 0
		err := auditlog.Read(context.Background(), js, auditlog.Options{}, func(auditlog.Entry) error { n++; return nil })
		if err != nil {
			return err
		}
		if n != want {
			return fmt.Errorf("%d of %d events", n, want)
		}
		return nil
	})
}

// waitSessionsDrained polls until every SESSIONS message is acknowledged.
func waitSessionsDrained(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	ctx := context.Background()
	stream, err := js.Stream(ctx, bus.StreamSessions)
	require.NoError(t, err)
	testkit.Eventually(t, 10*time.Second, func() error {
		info, err := stream.Info(ctx)
		if err == nil && info.State.Msgs != 0 {
			err = fmt.Errorf("%d messages left in SESSIONS", info.State.Msgs)
		}
		return err
	})
}

func verify(t *testing.T, e *env, session string) []auditchain.Problem {
	t.Helper()
	_, problems, err := auditlog.Verify(context.Background(), e.conn.JS, session, e.keys)
	require.NoError(t, err)
	return problems
}

func TestRecordsChainAndCheckpoint(t *testing.T) {
	e := setup(t)
	events, chains := testutil.ToFloat64(recorder.EventsMetric), testutil.ToFloat64(recorder.ChainsMetric)
	e.start(t, e.conn, recorder.Config{})
	rec := recording.New(e.conn.JS)
	ctx := context.Background()
	var ids []string
	for s := 0; s < 5; s++ {
		sess := rec.Open(recording.NewSessionID())
		ids = append(ids, sess.ID)
		require.NoError(t, sess.Record(ctx, started()))
		for i := 1; i <= 20; i++ {
			_, err := sess.Emit(command(i))
			require.NoError(t, err)
		}
		require.NoError(t, sess.Record(ctx, &sessionv1.Event{Body: &sessionv1.Event_Ended{Ended: &sessionv1.Ended{Reason: "client closed", Commands: 20}}}))
	}
	// One session still open.
	open := rec.Open(recording.NewSessionID())
	require.NoError(t, open.Record(ctx, started()))
	waitRecorded(t, e.conn.JS, 5*22+1)
	// Counted: the events chained, and the chain heads kept: only the open
	// session's (an ended session's head is let go).
	testkit.Eventually(t, 10*time.Second, func() error {
		if got := testutil.ToFloat64(recorder.EventsMetric) - events; got != 5*22+1 {
			return fmt.Errorf("%v events counted", got)
		}
		if got := testutil.ToFloat64(recorder.ChainsMetric) - chains; got != 1 {
			return fmt.Errorf("%v chains counted", got)
		}
		return nil
	})
	// The open session goes on after its head was kept, and an ended one
	// that gets a late event reloads its head from AUDIT: both chains stay
	// whole.
	_, err := open.Emit(command(1))
	require.NoError(t, err)
	require.NoError(t, open.Record(ctx, &sessionv1.Event{Body: &sessionv1.Event_Ended{Ended: &sessionv1.Ended{Reason: "client closed", Commands: 1}}}))
	waitRecorded(t, e.conn.JS, 5*22+3)
	assert.Empty(t, verify(t, e, open.ID))
	// A checkpoint covers every session's head.
	testkit.Eventually(t, 10*time.Second, func() error {
		covered := map[string]uint64{}
		err := auditlog.Read(ctx, e.conn.JS, auditlog.Options{Checkpoints: true}, func(en auditlog.Entry) error {
			if en.Checkpoint != nil {
				for _, h := range en.Checkpoint.GetHeads() {
					covered[h.GetSessionId()] = h.GetSeq()
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, id := range ids {
			if covered[id] != 22 {
				return fmt.Errorf("session %s signed up to %d", id, covered[id])
			}
		}
		return nil
	})
	assert.Empty(t, verify(t, e, ""))

	// The session index knows who and how it ended.
	sums, err := auditlog.Sessions(ctx, e.conn.JS)
	require.NoError(t, err)
	require.Len(t, sums, 6)
	assert.Equal(t, "alice", sums[0].GetPrincipal().GetSubject())
	assert.Equal(t, open.ID, sums[0].GetSessionId(), "newest first")
	assert.Equal(t, int64(1), sums[0].GetCommands())
	assert.Equal(t, int64(20), sums[1].GetCommands())
}

func TestAuditStreamRefusesDeletion(t *testing.T) {
	e := setup(t)
	e.start(t, e.conn, recorder.Config{})
	sess := recording.New(e.conn.JS).Open(recording.NewSessionID())
	require.NoError(t, sess.Record(context.Background(), started()))
	waitRecorded(t, e.conn.JS, 1)
	ctx := context.Background()
	stream, err := e.conn.JS.Stream(ctx, bus.StreamAudit)
	require.NoError(t, err)
	err = stream.DeleteMsg(ctx, 1)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "not permitted")
	err = stream.Purge(ctx)
	require.Error(t, err)
	cfg := stream.CachedInfo().Config
	cfg.DenyDelete = false
	_, err = e.conn.JS.UpdateStream(ctx, cfg)
	require.Error(t, err, "deny-delete cannot be lifted")
	assert.Empty(t, verify(t, e, ""))
}

func TestRedeliveryAndDuplicatesAreRecordedOnce(t *testing.T) {
	e := setup(t)
	e.start(t, e.conn, recorder.Config{})
	ctx := context.Background()
	id := recording.NewSessionID()
	sess := recording.New(e.conn.JS).Open(id)
	require.NoError(t, sess.Record(ctx, started()))
	require.NoError(t, sess.Record(ctx, command(1)))
	waitRecorded(t, e.conn.JS, 2)

	// The same event published again under another message id (past the
	// duplicate window) is recognised by its seq.
	var rec *auditlog.Entry
	require.NoError(t, auditlog.Read(ctx, e.conn.JS, auditlog.Options{Session: id}, func(en auditlog.Entry) error {
		if en.Seq == 2 {
			rec = &en
		}
		return nil
	}))
	require.NotNil(t, rec)
	publishBatch(t, e.conn.JS, "replayer", 1, rec.Record.GetEvents()[rec.Index])
	require.NoError(t, sess.Record(ctx, command(2)))
	waitRecorded(t, e.conn.JS, 3)
	assert.Empty(t, verify(t, e, id))
}

// A session's first event starts its chain without reading a head (there
// is none yet), but a copy of it that comes back later, first delivered
// under another message id after the session ended and its head was let
// go, must not start a second chain: the store refuses a record that does
// not follow the session's last, and the copy is then seen as recorded.
func TestACopyOfTheFirstEventNeverStartsASecondChain(t *testing.T) {
	e := setup(t)
	e.start(t, e.conn, recorder.Config{FlushInterval: 100 * time.Millisecond})
	ctx := context.Background()
	id := recording.NewSessionID()
	sess := recording.New(e.conn.JS).Open(id)
	_, err := sess.Emit(started())
	require.NoError(t, err)
	_, err = sess.Emit(command(1))
	require.NoError(t, err)
	require.NoError(t, sess.Record(ctx, &sessionv1.Event{Body: &sessionv1.Event_Ended{Ended: &sessionv1.Ended{Reason: "client closed", Commands: 1}}}))
	waitRecorded(t, e.conn.JS, 3)

	var first []byte
	require.NoError(t, auditlog.Read(ctx, e.conn.JS, auditlog.Options{Session: id}, func(en auditlog.Entry) error {
		if en.Seq == 1 {
			first = en.Record.GetEvents()[en.Index]
		}
		return nil
	}))
	require.NotNil(t, first)
	publishBatch(t, e.conn.JS, "replayer", 1, first)
	waitSessionsDrained(t, e.conn.JS)
	waitRecorded(t, e.conn.JS, 3)
	assert.Empty(t, verify(t, e, id))
}

func TestLostEventBecomesAGap(t *testing.T) {
	e := setup(t)
	e.start(t, e.conn, recorder.Config{GapTimeout: 200 * time.Millisecond})
	id := recording.NewSessionID()
	from := recording.NewSessionID()
	publish := func(n, seq uint64) {
		ev := command(int(seq))
		ev.Id, ev.SessionId, ev.Seq = fmt.Sprintf("ev%d", seq), id, seq
		data, _ := proto.Marshal(ev)
		publishBatch(t, e.conn.JS, from, n, data)
	}
	publish(1, 1)
	publish(2, 2)
	publish(3, 5) // 3 and 4 never arrive
	waitRecorded(t, e.conn.JS, 4)
	problems := verify(t, e, id)
	require.Len(t, problems, 1)
	assert.Equal(t, auditchain.Lost, problems[0].Kind)
	assert.Equal(t, uint64(3), problems[0].Seq)
}

func TestTwoReplicasUnderLoad(t *testing.T) {
	e := setup(t)
	conn2 := testkit.Connect(t, e.conn.NC.ConnectedUrl())
	e.start(t, e.conn, recorder.Config{})
	e.start(t, conn2, recorder.Config{})
	rec := recording.New(e.conn.JS)
	ctx := context.Background()
	const sessions, events = 20, 50
	var wg sync.WaitGroup
	for s := 0; s < sessions; s++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sess := rec.Open(recording.NewSessionID())
			for i := 0; i < events; i++ {
				if _, err := sess.Emit(command(i)); err != nil {
					t.Error(err)
					return
				}
			}
			if err := sess.Durable(ctx); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	waitRecorded(t, e.conn.JS, sessions*events)
	assert.Empty(t, verify(t, e, ""))
	// Events that arrive together share records and batches.
	st := rec.Stats()
	assert.Equal(t, uint64(sessions*events), st.Events)
	assert.Less(t, st.Batches, st.Events)
	records := 0
	require.NoError(t, auditlog.Read(ctx, e.conn.JS, auditlog.Options{}, func(en auditlog.Entry) error {
		if en.First() {
			records++
		}
		return nil
	}))
	assert.Less(t, records, sessions*events)
}

// A batch that waits in SESSIONS (its recorder was killed before
// acknowledging it) holds back a later batch's events of the same session
// instead of letting them be recorded as a gap.
func TestEarlierBatchStillPendingIsNotAGap(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	id, from := recording.NewSessionID(), recording.NewSessionID()
	ev := func(seq uint64) []byte { return rawCommand(id, seq) }
	// Batch 1 is fetched by a recorder that is then killed: it never
	// acknowledges it, so it comes back only after AckWait. Batch 2 is
	// delivered at once to the recorder that takes over.
	publishBatch(t, e.conn.JS, from, 1, ev(1), ev(2))
	cons, err := e.conn.JS.CreateOrUpdateConsumer(ctx, bus.StreamSessions, recorder.ConsumerConfig(2*time.Second))
	require.NoError(t, err)
	got, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second), jetstream.FetchPriorityGroup(recorder.PriorityGroup))
	require.NoError(t, err)
	n := 0
	for range got.Messages() {
		n++
	}
	require.Equal(t, 1, n)
	stream, err := e.conn.JS.Stream(ctx, bus.StreamSessions)
	require.NoError(t, err)
	require.NoError(t, stream.UnpinConsumer(ctx, recorder.ConsumerName, recorder.PriorityGroup))

	e.start(t, e.conn, recorder.Config{GapTimeout: 100 * time.Millisecond, AckWait: 2 * time.Second})
	publishBatch(t, e.conn.JS, from, 2, ev(3))
	waitRecorded(t, e.conn.JS, 3)
	assert.Empty(t, verify(t, e, id), "seq 3 waited for 1 and 2 instead of recording them as lost")
}

// A batch delivered twice in the same gather window (a redelivery racing
// the original) is recorded once, and both copies leave SESSIONS only once
// the record is stored.
func TestDuplicateBatchInOneWindow(t *testing.T) {
	e := setup(t)
	e.start(t, e.conn, recorder.Config{FlushInterval: 200 * time.Millisecond})
	id, from := recording.NewSessionID(), recording.NewSessionID()
	var evs [][]byte
	for seq := uint64(1); seq <= 3; seq++ {
		evs = append(evs, rawCommand(id, seq))
	}
	publishBatch(t, e.conn.JS, from, 1, evs...)
	publishBatch(t, e.conn.JS, from+"copy", 1, evs...)
	waitRecorded(t, e.conn.JS, 3)
	assert.Empty(t, verify(t, e, id))
	waitSessionsDrained(t, e.conn.JS)
}

// replaceAudit deletes the AUDIT stream and creates it again, empty, with
// the same configuration: what the NATS admin identity can do.
func replaceAudit(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	ctx := context.Background()
	st, err := js.Stream(ctx, bus.StreamAudit)
	require.NoError(t, err)
	info, err := st.Info(ctx)
	require.NoError(t, err)
	require.NoError(t, js.DeleteStream(ctx, bus.StreamAudit))
	_, err = js.CreateStream(ctx, info.Config)
	require.NoError(t, err)
}

func lostHistory(t *testing.T, js jetstream.JetStream) *auditv1.Checkpoint {
	t.Helper()
	var found *auditv1.Checkpoint
	require.NoError(t, auditlog.Read(context.Background(), js, auditlog.Options{Checkpoints: true}, func(e auditlog.Entry) error {
		if e.Checkpoint != nil && e.Checkpoint.GetLostHistory() != nil {
			found = e.Checkpoint
		}
		return nil
	}))
	return found
}

// A recorder never starts a new chain over a stream that lost its history
// as if nothing had been: while it runs, and when it starts over a
// replaced stream, its next checkpoint chains to the anchored one and says,
// signed, that it is gone; verification against the anchor file fails.
func TestReplacedStreamIsDeclared(t *testing.T) {
	e := setup(t)
	anchors := filepath.Join(t.TempDir(), "anchor.jsonl")
	_, stop := e.start(t, e.conn, recorder.Config{AnchorFile: anchors})
	rec := recording.New(e.conn.JS)
	sess := rec.Open(recording.NewSessionID())
	require.NoError(t, sess.Record(context.Background(), started()))
	require.NoError(t, sess.Record(context.Background(), command(1)))
	var anchor *auditchain.Anchor
	testkit.Eventually(t, 10*time.Second, func() error {
		a, err := auditchain.LastAnchor(anchors)
		if err != nil || a == nil || a.Sessions == 0 {
			return fmt.Errorf("no anchor yet (%v)", err)
		}
		anchor = a
		return nil
	})
	_, problems, err := auditlog.Verify(context.Background(), e.conn.JS, "", e.keys, anchor)
	require.NoError(t, err)
	assert.Empty(t, problems)

	// While the recorder runs.
	replaceAudit(t, e.conn.JS)
	testkit.Eventually(t, 10*time.Second, func() error {
		if lostHistory(t, e.conn.JS) == nil {
			return fmt.Errorf("no lost-history checkpoint yet")
		}
		return nil
	})
	lh := lostHistory(t, e.conn.JS)
	assert.Equal(t, anchor.Checkpoint, lh.GetLostHistory().GetCheckpoint())
	assert.Equal(t, anchor.Checkpoint, lh.GetPrevious(), "it chains to the anchored checkpoint")
	_, problems, err = auditlog.Verify(context.Background(), e.conn.JS, "", e.keys, anchor)
	require.NoError(t, err)
	assert.Contains(t, kindsOf(problems), auditchain.HistoryLost)
	// The sessions index still lists the session: its records are gone.
	_, problems, err = auditlog.Verify(context.Background(), e.conn.JS, "", e.keys)
	require.NoError(t, err)
	assert.Contains(t, kindsOf(problems), auditchain.HistoryLost)

	// Stopped, then started over another replaced stream: it says so at once.
	stop()
	last, err := auditchain.LastAnchor(anchors)
	require.NoError(t, err)
	assert.Equal(t, lh.GetId(), last.Checkpoint, "the lost-history checkpoint is anchored in turn")
	replaceAudit(t, e.conn.JS)
	e.start(t, e.conn, recorder.Config{AnchorFile: anchors})
	testkit.Eventually(t, 10*time.Second, func() error {
		if cp := lostHistory(t, e.conn.JS); cp == nil || cp.GetLostHistory().GetCheckpoint() != last.Checkpoint {
			return fmt.Errorf("no lost-history checkpoint for %s yet", last.Checkpoint)
		}
		return nil
	})
}

func kindsOf(ps []auditchain.Problem) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Kind)
	}
	return out
}

// The chain head of a session that has no events for HeadIdle is let go
// (a session whose worker was killed never ends), and a late event of it
// reloads the head from AUDIT: the chain stays whole.
func TestIdleChainHeadsAreLetGo(t *testing.T) {
	e := setup(t)
	chains := testutil.ToFloat64(recorder.ChainsMetric)
	e.start(t, e.conn, recorder.Config{HeadIdle: 300 * time.Millisecond})
	ctx := context.Background()
	sess := recording.New(e.conn.JS).Open(recording.NewSessionID())
	require.NoError(t, sess.Record(ctx, started()))
	require.NoError(t, sess.Record(ctx, command(1)))
	waitRecorded(t, e.conn.JS, 2)
	held := func(want float64) func() error {
		return func() error {
			if got := testutil.ToFloat64(recorder.ChainsMetric) - chains; got != want {
				return fmt.Errorf("%v chain heads kept, want %v", got, want)
			}
			return nil
		}
	}
	testkit.Eventually(t, 5*time.Second, held(0))
	require.NoError(t, sess.Record(ctx, command(2)))
	waitRecorded(t, e.conn.JS, 3)
	assert.Empty(t, verify(t, e, sess.ID))
}

// A session's events delivered in the same gather window out of order (a
// redelivery puts a batch behind the one after it, as after a NATS node
// dies) are chained in order: the later event does not wait for an earlier
// one that is right behind it, which, asked again with it, would come back
// behind it every time.
func TestEventsOfAWindowOutOfOrder(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	cfg := recorder.Config{FlushInterval: 200 * time.Millisecond, GapTimeout: time.Minute}
	_, stop := e.start(t, e.conn, cfg)
	id, from := recording.NewSessionID(), recording.NewSessionID()
	ev := func(seq uint64) []byte { return rawCommand(id, seq) }
	publishBatch(t, e.conn.JS, from, 1, ev(1))
	waitRecorded(t, e.conn.JS, 1)
	stop()
	stream, err := e.conn.JS.Stream(ctx, bus.StreamSessions)
	require.NoError(t, err)
	_ = stream.UnpinConsumer(ctx, recorder.ConsumerName, recorder.PriorityGroup)

	// Batch 3 is stored (and so delivered) before batch 2, and both are
	// delivered together to the recorder that starts.
	publishBatch(t, e.conn.JS, from, 3, ev(3), ev(4))
	publishBatch(t, e.conn.JS, from, 2, ev(2))
	e.start(t, e.conn, cfg)
	waitRecorded(t, e.conn.JS, 4)
	assert.Empty(t, verify(t, e, id))
	waitSessionsDrained(t, e.conn.JS)
	cons, err := e.conn.JS.Consumer(ctx, bus.StreamSessions, recorder.ConsumerName)
	require.NoError(t, err)
	info, err := cons.Info(ctx)
	require.NoError(t, err)
	assert.Equal(t, uint64(3), info.Delivered.Consumer, "each batch delivered once: none was asked for again")
}
