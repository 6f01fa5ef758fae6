package bus_test

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/testkit"
)

// A view whose watch stops delivering does not go on answering as if it
// were current: it is told it is stale, follows again, and is told when it
// has caught up.
func TestFollowNoticesAStalledWatch(t *testing.T) {
	_, conn := testkit.NATS(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	kv, err := conn.JS.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "followtest"})
	require.NoError(t, err)
	_, err = kv.PutString(ctx, "a", "1")
	require.NoError(t, err)

	var mu sync.Mutex
	view := map[string]string{}
	var staleness []bool
	ready := make(chan struct{})
	f := bus.Follow{Bucket: "followtest", StaleAfter: time.Second, Check: 100 * time.Millisecond, OnStale: func(s bool) {
		mu.Lock()
		staleness = append(staleness, s)
		mu.Unlock()
	}}.StallAt(func(watch int, e jetstream.KeyValueEntry) bool { return watch == 0 && e.Key() == "stuck" })
	done := make(chan error, 1)
	go func() {
		done <- f.Run(ctx, conn.JS, ready, func(e jetstream.KeyValueEntry) error {
			mu.Lock()
			view[e.Key()] = string(e.Value())
			mu.Unlock()
			return nil
		})
	}()
	<-ready
	state := func() (map[string]string, []bool) {
		mu.Lock()
		defer mu.Unlock()
		return maps.Clone(view), append([]bool(nil), staleness...)
	}
	// The first watch sticks at "stuck"; "b" behind it is not seen either.
	_, err = kv.PutString(ctx, "stuck", "2")
	require.NoError(t, err)
	_, err = kv.PutString(ctx, "b", "3")
	require.NoError(t, err)
	testkit.Eventually(t, 10*time.Second, func() error {
		v, s := state()
		if len(s) < 2 || v["b"] != "3" {
			return fmt.Errorf("staleness %v, view %v", s, v)
		}
		return nil
	})
	v, s := state()
	assert.Equal(t, []bool{true, false}, s, "stale, then current again")
	assert.Equal(t, map[string]string{"a": "1", "stuck": "2", "b": "3"}, v)

	// A view that keeps up is never called stale.
	for i := 0; i < 20; i++ {
		_, err = kv.PutString(ctx, "a", "x")
		require.NoError(t, err)
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(1500 * time.Millisecond)
	_, s = state()
	assert.Equal(t, []bool{true, false}, s)
	cancel()
	require.NoError(t, <-done)

	// Nor is a view whose bucket's last message is gone (here a purged
	// key's marker, removed in turn): the stream's last sequence is then
	// one no watch delivers.
	_, err = kv.PutString(context.Background(), "gone", "4")
	require.NoError(t, err)
	require.NoError(t, kv.Purge(context.Background(), "gone"))
	require.NoError(t, kv.PurgeDeletes(context.Background(), jetstream.DeleteMarkersOlderThan(-1)))
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	var stale2 []bool
	ready2 := make(chan struct{})
	go func() {
		_ = bus.Follow{Bucket: "followtest", StaleAfter: 500 * time.Millisecond, Check: 100 * time.Millisecond, OnStale: func(s bool) {
			mu.Lock()
			stale2 = append(stale2, s)
			mu.Unlock()
		}}.Run(ctx2, conn.JS, ready2, func(jetstream.KeyValueEntry) error { return nil })
	}()
	<-ready2
	time.Sleep(2 * time.Second)
	mu.Lock()
	defer mu.Unlock()
	assert.Empty(t, stale2)
}

// kvTimesOut answers its first KeyValue lookups as a JetStream cluster
// electing leaders does: the request times out.
type kvTimesOut struct {
	jetstream.JetStream
	mu       sync.Mutex
	failures int
}

func (k *kvTimesOut) KeyValue(ctx context.Context, bucket string) (jetstream.KeyValue, error) {
	k.mu.Lock()
	fail := k.failures > 0
	if fail {
		k.failures--
	}
	k.mu.Unlock()
	if fail {
		return nil, context.DeadlineExceeded
	}
	return k.JetStream.KeyValue(ctx, bucket)
}

// A view whose first load fails for a while (a NATS node lost as it
// starts) loads once the bucket answers, instead of stopping its service;
// a failure that lasts StartRetry is returned.
func TestFollowStartsThroughAFailover(t *testing.T) {
	_, conn := testkit.NATS(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	kv, err := conn.JS.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "followstart"})
	require.NoError(t, err)
	_, err = kv.PutString(ctx, "a", "1")
	require.NoError(t, err)

	got := make(chan string, 1)
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- bus.Follow{Bucket: "followstart"}.Run(ctx, &kvTimesOut{JetStream: conn.JS, failures: 3}, ready, func(e jetstream.KeyValueEntry) error {
			got <- string(e.Value())
			return nil
		})
	}()
	select {
	case <-ready:
		assert.Equal(t, "1", <-got)
	case err := <-done:
		t.Fatalf("the follower gave up: %v", err)
	case <-time.After(15 * time.Second):
		t.Fatal("the view never loaded")
	}

	start := time.Now()
	err = bus.Follow{Bucket: "followstart", StartRetry: time.Second}.Run(ctx, &kvTimesOut{JetStream: conn.JS, failures: 1 << 30}, make(chan struct{}),
		func(jetstream.KeyValueEntry) error { return nil })
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.GreaterOrEqual(t, time.Since(start), time.Second)
}
