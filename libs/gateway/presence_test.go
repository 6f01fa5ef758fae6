package gateway

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/recording"
	"sluice.dev/sluice/libs/sessionindex"
	"sluice.dev/sluice/libs/testkit"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
)

// A worker announces itself while it serves and withdraws when it stops;
// the presence view the API keeps tells its open sessions from those of a
// worker that is gone.
func TestPresence(t *testing.T) {
	_, conn := testkit.NATS(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	require.NoError(t, bus.Provision(ctx, conn.JS, bus.Topology{}))
	k := New(Config{Conn: conn, Protocol: "postgres", Name: "gw.example-7"})
	stop := k.announce(ctx)

	kv, err := conn.JS.KeyValue(ctx, bus.BucketWorkers)
	require.NoError(t, err)
	e, err := kv.Get(ctx, bus.WorkerKey("gw.example-7"))
	require.NoError(t, err)
	var p sessionv1.WorkerPresence
	require.NoError(t, proto.Unmarshal(e.Value(), &p))
	assert.Equal(t, "gw.example-7", p.GetName())
	assert.Equal(t, "postgres", p.GetProtocol())
	assert.WithinDuration(t, k.started, p.GetStartedAt().AsTime(), time.Millisecond)

	workers := sessionindex.NewWorkers()
	ready := make(chan struct{})
	go func() { _ = sessionindex.FollowWorkers(ctx, conn.JS, workers, ready) }()
	<-ready
	mine := &sessionv1.Summary{SessionId: "s", Worker: "gw.example-7", StartedAt: timestamppb.Now()}
	assert.Empty(t, workers.Lost(mine))

	stop()
	_, err = kv.Get(ctx, bus.WorkerKey("gw.example-7"))
	require.Error(t, err, "withdrawn")
	testkit.Eventually(t, 5*time.Second, func() error {
		if workers.Lost(mine) == "" {
			return assert.AnError
		}
		return nil
	})
	assert.Equal(t, "its worker gw.example-7 stopped without ending it", workers.Lost(mine))
}

// endings is a session that notes how the kernel ended it.
type endings struct {
	id  string
	end chan EndCode
}

func (s *endings) ID() string             { return s.id }
func (s *endings) CallerToken() string    { return "" }
func (s *endings) PrincipalKey() [16]byte { return [16]byte{} }
func (s *endings) End(code EndCode, _ string) {
	select {
	case s.end <- code:
	default:
	}
}

// A worker that cannot write its presence for FenceAfter is fenced before
// it could be shown gone: its sessions end, and it records nothing (so runs
// nothing) until a write succeeds again. A lapsed lease is enough for the
// recorder to refuse, before the watchdog has noticed (a worker waking from
// a pause).
func TestFencedWhenThePresenceLapses(t *testing.T) {
	_, conn := testkit.NATS(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	require.NoError(t, bus.Provision(ctx, conn.JS, bus.Topology{}))
	k := New(Config{Conn: conn, Protocol: "postgres", Name: "gw-fenced", FenceAfter: 600 * time.Millisecond})
	withdraw := k.announce(ctx)
	defer withdraw()
	s := &endings{id: "s1", end: make(chan EndCode, 1)}
	k.Register(s)
	rec := k.Rec.Open(recording.NewSessionID())
	require.NoError(t, rec.Record(ctx, &sessionv1.Event{Body: &sessionv1.Event_Started{Started: &sessionv1.Started{}}}))

	// The presence bucket is gone: every write fails from now on.
	require.NoError(t, conn.JS.DeleteKeyValue(ctx, bus.BucketWorkers))
	select {
	case code := <-s.end:
		assert.Equal(t, EndFenced, code)
	case <-time.After(10 * time.Second):
		t.Fatal("the session was not ended")
	}
	err := rec.Record(ctx, &sessionv1.Event{Body: &sessionv1.Event_Ended{Ended: &sessionv1.Ended{}}})
	require.ErrorIs(t, err, recording.ErrNotRecording)
	assert.Contains(t, err.Error(), "could not write its presence")
	other := k.Rec.Open(recording.NewSessionID())
	require.ErrorIs(t, other.Record(ctx, &sessionv1.Event{Body: &sessionv1.Event_Started{Started: &sessionv1.Started{}}}), recording.ErrNotRecording,
		"no session starts while fenced")
	assert.Equal(t, 1.0, testutil.ToFloat64(k.metrics.fenced))

	// Written again (at the next beat): the worker records again.
	require.NoError(t, bus.Provision(ctx, conn.JS, bus.Topology{}))
	testkit.Eventually(t, 2*bus.WorkerPresenceEvery, func() error {
		return k.Rec.Open(recording.NewSessionID()).Record(ctx, &sessionv1.Event{Body: &sessionv1.Event_Started{Started: &sessionv1.Started{}}})
	})
	testkit.Eventually(t, 5*time.Second, func() error {
		if testutil.ToFloat64(k.metrics.fenced) != 0 {
			return errors.New("still shown fenced")
		}
		return nil
	})

	// A lease that lapsed on the wall clock only (a suspended host, whose
	// monotonic clock stood still) is refused at once, whatever the
	// watchdog knows; so is one that lapsed on the monotonic clock.
	startEvent := func() *sessionv1.Event {
		return &sessionv1.Event{Body: &sessionv1.Event_Started{Started: &sessionv1.Started{}}}
	}
	k.leaseWall.Store(time.Now().Add(-time.Second).UnixNano())
	require.ErrorIs(t, k.Rec.Open(recording.NewSessionID()).Record(ctx, startEvent()), recording.ErrNotRecording)
	testkit.Eventually(t, 5*time.Second, func() error {
		if !k.fenced.Load() {
			return errors.New("the watchdog has not fenced")
		}
		return nil
	})
	k.renewLease()
	require.NoError(t, k.Rec.Open(recording.NewSessionID()).Record(ctx, startEvent()))
	k.lease.Store(1)
	require.ErrorIs(t, k.Rec.Open(recording.NewSessionID()).Record(ctx, startEvent()), recording.ErrNotRecording)
}
