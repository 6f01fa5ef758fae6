package testkit

import (
	"context"
	"sync/atomic"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// NoRespondersOnce wraps js as a clustered stream that lost a node can
// behave: the first consumer made through it passes one message on, then
// answers its next pull with "no responders". Later consumers work.
// Consumers counts the consumers made.
type NoRespondersOnce struct {
	jetstream.JetStream
	Consumers atomic.Int32
}

func (f *NoRespondersOnce) CreateOrUpdateConsumer(ctx context.Context, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	c, err := f.JetStream.CreateOrUpdateConsumer(ctx, stream, cfg)
	return &flakyConsumer{Consumer: c, flaky: f.Consumers.Add(1) == 1}, err
}

type flakyConsumer struct {
	jetstream.Consumer
	flaky   bool
	fetches int
}

func (c *flakyConsumer) Fetch(n int, opts ...jetstream.FetchOpt) (jetstream.MessageBatch, error) {
	c.fetches++
	if !c.flaky {
		return c.Consumer.Fetch(n, opts...)
	}
	if c.fetches == 1 {
		return c.Consumer.Fetch(1, opts...)
	}
	return nil, nats.ErrNoResponders
}
