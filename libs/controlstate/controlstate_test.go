package controlstate_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/controlstate"
	"sluice.dev/sluice/libs/testkit"
	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
)

// CatchUp returns only once the view holds what the bucket held when it
// was called, and says so when the view cannot get there in time.
func TestCatchUp(t *testing.T) {
	ctx, conn, kv := controlBucket(t)
	v := controlstate.NewView()

	require.NoError(t, v.CatchUp(ctx, conn.JS), "an empty bucket is caught up with at once")

	put := func(admins ...string) {
		b, err := proto.Marshal(&controlv1.AccessConfigured{Admins: admins})
		require.NoError(t, err)
		_, err = kv.Put(ctx, controlstate.KeyAccess, b)
		require.NoError(t, err)
	}
	put("platform")
	short, stop := context.WithTimeout(ctx, 200*time.Millisecond)
	defer stop()
	require.Error(t, v.CatchUp(short, conn.JS), "a view that does not follow never catches up")

	go func() { _ = v.Follow(ctx, conn.JS) }()
	require.NoError(t, v.CatchUp(ctx, conn.JS))
	assert.Equal(t, []string{"platform"}, v.Access().GetAdmins())

	// Every later write is in the view when CatchUp returns.
	for i := range 50 {
		group := "g" + string(rune('a'+i%26))
		put(group)
		require.NoError(t, v.CatchUp(ctx, conn.JS))
		require.Equal(t, []string{group}, v.Access().GetAdmins(), "write %d", i)
	}
	require.NoError(t, kv.Delete(ctx, controlstate.KeyAccess))
	require.NoError(t, v.CatchUp(ctx, conn.JS))
	assert.Nil(t, v.Access(), "a deletion is caught up with too")
}

// Recheck asks again once the view has caught up: what was written before
// it was called is never refused for the view's lag, and what is not
// there is refused without waiting for the bound.
func TestRecheck(t *testing.T) {
	ctx, conn, kv := controlBucket(t)
	v := controlstate.NewView()
	assert.False(t, v.Recheck(ctx, func() bool { return false }), "a view that does not follow refuses at once")
	go func() { _ = v.Follow(ctx, conn.JS) }()
	<-v.Ready()

	for i := range 50 {
		name := "db" + string(rune('a'+i%26)) + string(rune('a'+i/26))
		b, err := proto.Marshal(&controlv1.TargetConfigured{Spec: &controlv1.TargetSpec{Name: name}})
		require.NoError(t, err)
		_, err = kv.Put(ctx, controlstate.TargetKey(name), b)
		require.NoError(t, err)
		tc, ok := v.LookupTarget(ctx, name)
		require.True(t, ok, "target %s, written before the lookup", name)
		require.Equal(t, name, tc.GetSpec().GetName())
	}
	start := time.Now()
	_, ok := v.LookupTarget(ctx, "nope")
	assert.False(t, ok)
	assert.Less(t, time.Since(start), time.Second, "a view that has caught up does not wait for the bound")
}

// controlBucket is a NATS server with the control bucket provisioned.
func controlBucket(t *testing.T) (context.Context, *bus.Conn, jetstream.KeyValue) {
	t.Helper()
	_, conn := testkit.NATS(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	require.NoError(t, bus.Provision(ctx, conn.JS, bus.Topology{}))
	kv, err := controlstate.Bucket(ctx, conn.JS)
	require.NoError(t, err)
	return ctx, conn, kv
}
