package bus_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/testkit"
)

// A consumer asked for before its stream exists (a cluster still electing
// its leaders answers likewise) is made once the stream is there; a wrong
// setting fails at once.
func TestConsumerWaitsForTheCluster(t *testing.T) {
	_, conn := testkit.NATS(t)
	ctx := context.Background()
	made := make(chan error, 1)
	go func() {
		_, err := bus.Consumer(ctx, conn.JS, "LATE", jetstream.ConsumerConfig{Durable: "d", AckPolicy: jetstream.AckExplicitPolicy})
		made <- err
	}()
	time.Sleep(200 * time.Millisecond)
	_, err := conn.JS.CreateStream(ctx, jetstream.StreamConfig{Name: "LATE", Subjects: []string{"late.>"}})
	require.NoError(t, err)
	require.NoError(t, <-made)

	start := time.Now()
	_, err = bus.Consumer(ctx, conn.JS, "LATE", jetstream.ConsumerConfig{Durable: "not.a.name"})
	assert.Error(t, err)
	assert.Less(t, time.Since(start), 5*time.Second, "a wrong setting is not retried")
}
