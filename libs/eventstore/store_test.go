package eventstore_test

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/eventstore"
	"sluice.dev/sluice/libs/testkit"
	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
)

func newStore(t *testing.T) (*eventstore.Store, *bus.Conn) {
	t.Helper()
	_, c := testkit.NATS(t)
	ctx := context.Background()
	_, err := bus.EnsureStream(ctx, c.JS, bus.Topology{}.EventStream(bus.StreamControl, bus.SubjectControl))
	require.NoError(t, err)
	return eventstore.New(c.JS, bus.StreamControl, bus.SubjectControl), c
}

func removed(name string) eventstore.Pending {
	return eventstore.NewEvent("removed", &controlv1.TargetRemoved{Name: name})
}

func TestAppendLoad(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()

	_, err := s.Load(ctx, "target", "Demo.DB")
	require.ErrorIs(t, err, eventstore.ErrNotFound)

	pos, err := s.Append(ctx, "target", "Demo.DB", eventstore.Position{}, removed("a"), removed("b"))
	require.NoError(t, err)
	assert.Equal(t, uint64(2), pos.Version)

	// Another aggregate does not disturb this one.
	_, err = s.Append(ctx, "target", "other", eventstore.Position{}, removed("x"))
	require.NoError(t, err)

	agg, err := s.Load(ctx, "target", "Demo.DB")
	require.NoError(t, err)
	require.Len(t, agg.Events, 2)
	assert.Equal(t, pos, agg.Position)
	var m controlv1.TargetRemoved
	require.NoError(t, agg.Events[1].Decode(&m))
	assert.Equal(t, "b", m.Name)
	assert.Equal(t, "Demo.DB", agg.Events[0].AggregateID)
	assert.Equal(t, "target", agg.Events[0].Aggregate)
	assert.Equal(t, uint64(1), agg.Events[0].Version)
	assert.Equal(t, "sluice.control.v1.TargetRemoved", agg.Events[0].Type)
	assert.WithinDuration(t, time.Now(), agg.Events[0].Time, time.Minute)
}

func TestAppendConflict(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	pos, err := s.Append(ctx, "target", "t", eventstore.Position{}, removed("1"))
	require.NoError(t, err)

	// A writer that loaded before pos lost the race.
	_, err = s.Append(ctx, "target", "t", eventstore.Position{}, removed("2"))
	require.ErrorIs(t, err, eventstore.ErrConflict)

	_, err = s.Append(ctx, "target", "t", pos, removed("3"))
	require.NoError(t, err)
}

func TestAppendIdempotent(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	ev := removed("once")
	pos1, err := s.Append(ctx, "target", "t", eventstore.Position{}, ev)
	require.NoError(t, err)
	// The same event again (a retried request) succeeds and writes nothing.
	pos2, err := s.Append(ctx, "target", "t", eventstore.Position{}, ev)
	require.NoError(t, err)
	assert.Equal(t, pos1, pos2)
	agg, err := s.Load(ctx, "target", "t")
	require.NoError(t, err)
	assert.Len(t, agg.Events, 1)
}

func TestConcurrentAppendsSerialize(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	var ok atomic.Int32
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				agg, err := s.Load(ctx, "target", "t")
				if err != nil && err != eventstore.ErrNotFound {
					t.Error(err)
					return
				}
				_, err = s.Append(ctx, "target", "t", agg.Position, removed("x"))
				if err == nil {
					ok.Add(1)
					return
				}
				if err != eventstore.ErrConflict {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	agg, err := s.Load(ctx, "target", "t")
	require.NoError(t, err)
	assert.Len(t, agg.Events, 8)
	for i, e := range agg.Events {
		assert.Equal(t, uint64(i+1), e.Version)
	}
}

func TestProjectionResumes(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	for _, id := range []string{"a", "b", "c"} {
		_, err := s.Append(ctx, "target", id, eventstore.Position{}, removed(id))
		require.NoError(t, err)
	}
	var mu sync.Mutex
	var seen []string
	run := func() (context.CancelFunc, chan struct{}) {
		pctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			err := s.Run(pctx, eventstore.Projection{Name: "test", Filter: "target.>", Apply: func(_ context.Context, e eventstore.Event) error {
				mu.Lock()
				seen = append(seen, e.AggregateID)
				mu.Unlock()
				return nil
			}})
			assert.NoError(t, err)
		}()
		return cancel, done
	}
	cancel, done := run()
	testkit.Eventually(t, 10*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(seen) < 3 {
			return assert.AnError
		}
		return nil
	})
	cancel()
	<-done

	// Events appended while it is stopped are applied after restart; the
	// earlier ones are not applied again.
	pos, err := s.Append(ctx, "target", "d", eventstore.Position{}, removed("d"))
	require.NoError(t, err)
	cancel, done = run()
	defer func() { cancel(); <-done }()
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	require.NoError(t, s.WaitApplied(wctx, "test", pos.Sequence))
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, []string{"a", "b", "c", "d"}, seen)
}

// Waiting for a projection that has not started yet (its durable does not
// exist) waits for it to start and catch up, as a service's first request
// may arrive before its projection runs.
func TestWaitAppliedBeforeTheProjectionStarts(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	pos, err := s.Append(ctx, "target", "a", eventstore.Position{}, removed("a"))
	require.NoError(t, err)
	waited := make(chan error, 1)
	go func() {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		waited <- s.WaitApplied(wctx, "late", pos.Sequence)
	}()
	time.Sleep(50 * time.Millisecond)
	pctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Run(pctx, eventstore.Projection{Name: "late", Filter: "target.>", Apply: func(context.Context, eventstore.Event) error { return nil }})
	}()
	defer func() { cancel(); <-done }()
	require.NoError(t, <-waited)
	// Nothing stored, nothing to wait for.
	require.NoError(t, s.WaitApplied(ctx, "never-started", 0))
}

// A read that meets "no responders" (a clustered stream setting up the
// consumer it just made) starts again after the last event it passed on:
// every event once, in order.
func TestReadStartsAgainAfterNoResponders(t *testing.T) {
	_, c := testkit.NATS(t)
	ctx := context.Background()
	_, err := bus.EnsureStream(ctx, c.JS, bus.Topology{}.EventStream(bus.StreamControl, bus.SubjectControl))
	require.NoError(t, err)
	flaky := &testkit.NoRespondersOnce{JetStream: c.JS}
	s := eventstore.New(flaky, bus.StreamControl, bus.SubjectControl)
	_, err = s.Append(ctx, "target", "t", eventstore.Position{}, removed("a"), removed("b"), removed("c"))
	require.NoError(t, err)

	var got []string
	require.NoError(t, s.Read(ctx, bus.SubjectControl+".>", func(e eventstore.Event) error {
		var m controlv1.TargetRemoved
		require.NoError(t, e.Decode(&m))
		got = append(got, m.Name)
		return nil
	}))
	assert.Equal(t, []string{"a", "b", "c"}, got)
	assert.Equal(t, int32(2), flaky.Consumers.Load(), "read again once")
}

// An append in flight when its NATS node dies is lost without an error
// (here its acknowledgement is), and the client connects again: the event
// is sent again after a second and stored once.
func TestAnAppendLostWithItsConnectionIsSentAgain(t *testing.T) {
	srv, c := testkit.NATS(t)
	ctx := context.Background()
	_, err := bus.EnsureStream(ctx, c.JS, bus.Topology{}.EventStream(bus.StreamControl, bus.SubjectControl))
	require.NoError(t, err)
	proxy := testkit.NewProxy(t, strings.TrimPrefix(srv.ClientURL(), "nats://"))
	client := testkit.Connect(t, "nats://"+proxy.Addr())
	s := eventstore.New(client.JS, bus.StreamControl, bus.SubjectControl)
	pos, err := s.Append(ctx, "target", "t", eventstore.Position{}, removed("a"))
	require.NoError(t, err)

	proxy.DropReplies()
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		_, err := s.Append(actx, "target", "t", pos, removed("b"))
		done <- err
	}()
	time.Sleep(100 * time.Millisecond) // stored, its acknowledgement lost
	proxy.Cut()
	require.NoError(t, <-done)
	assert.Less(t, time.Since(start), 5*time.Second)
	agg, err := eventstore.New(c.JS, bus.StreamControl, bus.SubjectControl).Load(ctx, "target", "t")
	require.NoError(t, err)
	assert.Len(t, agg.Events, 2, "stored once")
}
