package sessionindex

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/testkit"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
)

// A session that has not ended is lost once its worker is gone: withdrawn
// (or never heard of), silent for longer than bus.WorkerSilence, or
// started again since the session started. An ended session never is.
func TestLostSessions(t *testing.T) {
	now := epoch.Add(time.Hour)
	w := NewWorkers()
	w.now = func() time.Time { return now }
	open := func(worker string, started time.Time) *sessionv1.Summary {
		return &sessionv1.Summary{SessionId: "s", Worker: worker, StartedAt: timestamppb.New(started)}
	}
	boot := now.Add(-30 * time.Minute)
	w.Put(bus.WorkerKey("gw-1.example"), &sessionv1.WorkerPresence{Name: "gw-1.example", StartedAt: timestamppb.New(boot)}, now.Add(-time.Second))

	assert.Empty(t, w.Lost(open("gw-1.example", boot.Add(time.Minute))), "its worker serves it")
	ended := open("gone", boot)
	ended.EndedAt = timestamppb.New(now)
	assert.Empty(t, w.Lost(ended), "an ended session is not lost")
	assert.Empty(t, w.Lost(open("", boot)), "a summary naming no worker says nothing of it")

	assert.Equal(t, "its worker gone stopped without ending it", w.Lost(open("gone", boot)))
	assert.Contains(t, w.Lost(open("gw-1.example", boot.Add(-time.Minute))), "its worker gw-1.example started again at",
		"a session of the worker's previous run")

	// Silent for longer than it may be.
	w.Put(bus.WorkerKey("gw-1.example"), &sessionv1.WorkerPresence{Name: "gw-1.example", StartedAt: timestamppb.New(boot)}, now.Add(-bus.WorkerSilence-time.Second))
	assert.Contains(t, w.Lost(open("gw-1.example", boot.Add(time.Minute))), "its worker gw-1.example has been silent since")
	w.Put(bus.WorkerKey("gw-1.example"), &sessionv1.WorkerPresence{Name: "gw-1.example", StartedAt: timestamppb.New(boot)}, now)
	assert.Empty(t, w.Lost(open("gw-1.example", boot.Add(time.Minute))), "heard from again")

	w.Delete(bus.WorkerKey("gw-1.example"))
	assert.Equal(t, "its worker gw-1.example stopped without ending it", w.Lost(open("gw-1.example", boot.Add(time.Minute))))
}

// A view that fell behind the bucket judges silence as of the last time it
// was current: a worker this replica stopped hearing is not called silent,
// and once the view has caught up, silence counts from now again.
func TestLostSessionsWhileTheViewIsBehind(t *testing.T) {
	now := epoch.Add(time.Hour)
	w := NewWorkers()
	w.now = func() time.Time { return now }
	boot := now.Add(-30 * time.Minute)
	w.Put(bus.WorkerKey("gw-1"), &sessionv1.WorkerPresence{Name: "gw-1", StartedAt: timestamppb.New(boot)}, now.Add(-time.Second))
	open := &sessionv1.Summary{SessionId: "s", Worker: "gw-1", StartedAt: timestamppb.New(boot.Add(time.Minute))}

	w.setStale(true)
	now = now.Add(time.Hour)
	assert.Empty(t, w.Lost(open), "heard from just before the view fell behind")
	w.setStale(true) // still behind: as of the first time
	assert.Empty(t, w.Lost(open))
	assert.Equal(t, "its worker gone stopped without ending it",
		w.Lost(&sessionv1.Summary{SessionId: "s2", Worker: "gone", StartedAt: timestamppb.New(boot)}), "a worker withdrawn before stays gone")

	w.setStale(false)
	assert.Contains(t, w.Lost(open), "its worker gw-1 has been silent since", "caught up, and nothing heard for an hour")
}

// FollowWorkers notices when it can no longer reach the bucket (the NATS
// server gone) and stops judging silence as of now.
func TestFollowWorkersCutOff(t *testing.T) {
	srv, conn := testkit.NATS(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	require.NoError(t, bus.Provision(ctx, conn.JS, bus.Topology{}))
	kv, err := conn.JS.KeyValue(ctx, bus.BucketWorkers)
	require.NoError(t, err)
	boot := time.Now().Add(-time.Minute)
	b, err := proto.Marshal(&sessionv1.WorkerPresence{Name: "gw-1", StartedAt: timestamppb.New(boot)})
	require.NoError(t, err)
	_, err = kv.Put(ctx, bus.WorkerKey("gw-1"), b)
	require.NoError(t, err)

	w := NewWorkers()
	w.staleAfter = 500 * time.Millisecond
	var now atomic.Pointer[time.Time]
	w.now = func() time.Time {
		if t := now.Load(); t != nil {
			return *t
		}
		return time.Now()
	}
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- FollowWorkers(ctx, conn.JS, w, ready) }()
	<-ready
	open := &sessionv1.Summary{SessionId: "s", Worker: "gw-1", StartedAt: timestamppb.New(boot.Add(time.Second))}
	require.Empty(t, w.Lost(open))

	srv.Shutdown()
	testkit.Eventually(t, 10*time.Second, func() error {
		w.mu.RLock()
		defer w.mu.RUnlock()
		if w.asOf.IsZero() {
			return errors.New("the view has not noticed it is cut off")
		}
		return nil
	})
	later := time.Now().Add(bus.WorkerSilence + time.Minute)
	now.Store(&later)
	assert.Empty(t, w.Lost(open), "cut off, this replica cannot tell the worker is silent")
	cancel()
	require.NoError(t, <-done)
}

func TestWorkerKey(t *testing.T) {
	for in, want := range map[string]string{
		"gw-1": "gw-1", "vm.example.com-42": "vm_example_com-42", "a b/c*>": "a_b_c__", "": "_", "pod_7=x": "pod_7=x",
	} {
		assert.Equal(t, want, bus.WorkerKey(in), "%q", in)
	}
}
