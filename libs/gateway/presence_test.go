package gateway

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"sluice.dev/sluice/libs/bus"
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
