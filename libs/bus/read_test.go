package bus_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/testkit"
)

func readStream(t *testing.T) (jetstream.JetStream, []string) {
	t.Helper()
	_, conn := testkit.NATS(t)
	ctx := context.Background()
	_, err := conn.JS.CreateStream(ctx, jetstream.StreamConfig{Name: "READ", Subjects: []string{"read.>"}})
	require.NoError(t, err)
	var stored []string
	for i := range 6 {
		subject := fmt.Sprintf("read.%c", 'a'+i%2)
		_, err := conn.JS.Publish(ctx, subject, []byte(fmt.Sprint(i)))
		require.NoError(t, err)
		stored = append(stored, subject+"="+fmt.Sprint(i))
	}
	return conn.JS, stored
}

// read collects what a read passes on, as subject=data.
func read(t *testing.T, ctx context.Context, js jetstream.JetStream, r bus.StreamRead) ([]string, error) {
	t.Helper()
	var got []string
	err := bus.ReadStream(ctx, js, r, func(m jetstream.Msg) error {
		got = append(got, m.Subject()+"="+string(m.Data()))
		return nil
	})
	return got, err
}

// A read passes on what is stored, in order, from where it is asked to
// start and through its filters, and ends; it follows the stream when
// asked, until its context ends.
func TestReadStream(t *testing.T) {
	js, stored := readStream(t)
	ctx := context.Background()
	got, err := read(t, ctx, js, bus.StreamRead{Stream: "READ"})
	require.NoError(t, err)
	assert.Equal(t, stored, got)
	got, err = read(t, ctx, js, bus.StreamRead{Stream: "READ", Filters: []string{"read.b"}, From: 3, Batch: 1})
	require.NoError(t, err)
	assert.Equal(t, []string{"read.b=3", "read.b=5"}, got)
	got, err = read(t, ctx, js, bus.StreamRead{Stream: "READ", Filters: []string{"read.none"}})
	require.NoError(t, err)
	assert.Empty(t, got)
	// A start past the last message: nothing, at once.
	start := time.Now()
	got, err = read(t, ctx, js, bus.StreamRead{Stream: "READ", FromTime: time.Now().Add(time.Minute)})
	require.NoError(t, err)
	assert.Empty(t, got)
	got, err = read(t, ctx, js, bus.StreamRead{Stream: "READ", From: 7})
	require.NoError(t, err)
	assert.Empty(t, got)
	assert.Less(t, time.Since(start), 5*time.Second)

	fctx, cancel := context.WithCancel(ctx)
	var n atomic.Int32
	done := make(chan error, 1)
	go func() {
		done <- bus.ReadStream(fctx, js, bus.StreamRead{Stream: "READ", Filters: []string{"read.a"}, Follow: true}, func(m jetstream.Msg) error {
			if n.Add(1) == 4 {
				cancel()
			}
			return nil
		})
	}()
	testkit.Eventually(t, 10*time.Second, func() error {
		if n.Load() < 3 {
			return fmt.Errorf("%d read", n.Load())
		}
		return nil
	})
	_, err = js.Publish(ctx, "read.a", []byte("later"))
	require.NoError(t, err)
	select {
	case err := <-done:
		require.NoError(t, err, "a followed stream ends without error")
	case <-time.After(10 * time.Second):
		t.Fatal("the follow did not end with its context")
	}
	assert.Equal(t, int32(4), n.Load())

	// fn's error ends the read as it is, without another attempt.
	stop := errors.New("enough")
	counted := &countingJS{JetStream: js}
	err = bus.ReadStream(ctx, counted, bus.StreamRead{Stream: "READ"}, func(m jetstream.Msg) error { return stop })
	assert.Same(t, stop, err)
	assert.Equal(t, int32(1), counted.consumers.Load())
}

// A consumer whose making is never answered (placed on a server that died
// and is not yet known to be dead) is given up after a while, and another
// made, placed anew: the read passes everything on once.
func TestReadStreamMakesAnotherConsumerWhenOneIsNotAnswered(t *testing.T) {
	js, stored := readStream(t)
	unanswered := &countingJS{JetStream: js, hang: 1}
	start := time.Now()
	got, err := read(t, context.Background(), unanswered, bus.StreamRead{Stream: "READ"})
	require.NoError(t, err)
	assert.Equal(t, stored, got)
	assert.Equal(t, int32(2), unanswered.consumers.Load())
	t.Logf("read after %v", time.Since(start).Round(time.Millisecond))

	// "No responders" in the middle of a read: it goes on after the last
	// message passed on.
	flaky := &testkit.NoRespondersOnce{JetStream: js}
	got, err = read(t, context.Background(), flaky, bus.StreamRead{Stream: "READ", Batch: 2})
	require.NoError(t, err)
	assert.Equal(t, stored, got)
	assert.Equal(t, int32(2), flaky.Consumers.Load())

	// A read that never gets an answer gives up.
	never := &countingJS{JetStream: js, hang: 1000}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err = read(t, ctx, never, bus.StreamRead{Stream: "READ"})
	require.Error(t, err)
}

// countingJS counts the consumers made through it; the first hang of them
// are never answered.
type countingJS struct {
	jetstream.JetStream
	consumers atomic.Int32
	hang      int32
}

func (c *countingJS) CreateOrUpdateConsumer(ctx context.Context, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	if c.consumers.Add(1) <= c.hang {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return c.JetStream.CreateOrUpdateConsumer(ctx, stream, cfg)
}

// BenchmarkReadStream reads a stream of 20,000 messages through ReadStream
// and, as the baseline, through an ordered consumer (which is made again for
// every pull).
func BenchmarkReadStream(b *testing.B) {
	_, conn := testkit.NATS(b)
	ctx := context.Background()
	_, err := conn.JS.CreateStream(ctx, jetstream.StreamConfig{Name: "READ", Subjects: []string{"read.>"}})
	require.NoError(b, err)
	const n = 20000
	for i := range n {
		_, err := conn.JS.PublishAsync(fmt.Sprintf("read.%d", i%100), make([]byte, 200))
		require.NoError(b, err)
	}
	<-conn.JS.PublishAsyncComplete()
	b.Run("ReadStream", func(b *testing.B) {
		for b.Loop() {
			got := 0
			require.NoError(b, bus.ReadStream(ctx, conn.JS, bus.StreamRead{Stream: "READ", Filters: []string{"read.>"}, Batch: 512}, func(jetstream.Msg) error { got++; return nil }))
			require.Equal(b, n, got)
		}
	})
	b.Run("ordered-consumer", func(b *testing.B) {
		for b.Loop() {
			c, err := conn.JS.OrderedConsumer(ctx, "READ", jetstream.OrderedConsumerConfig{FilterSubjects: []string{"read.>"}})
			require.NoError(b, err)
			for got := 0; got < n; {
				batch, err := c.Fetch(512, jetstream.FetchMaxWait(time.Second))
				require.NoError(b, err)
				for range batch.Messages() {
					got++
				}
			}
		}
	})
}
