package eventstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"sluice.dev/sluice/libs/bus"
)

// Projection applies a stream's events, in order, to some read model.
type Projection struct {
	// Name is the durable consumer name; it keeps the position across restarts.
	Name string
	// Filter is the subject filter relative to the store prefix, e.g. "target.>";
	// empty means every event of the stream.
	Filter string
	// Apply must be idempotent: after a crash the last event may be applied again.
	Apply func(ctx context.Context, e Event) error
	// Log receives apply failures; the zero value discards them.
	Log zerolog.Logger
}

// Run applies events until ctx is done. Several replicas may run the same
// projection: the durable consumer hands each event to one of them, one at a
// time, in order (at most one unacknowledged event).
func (s *Store) Run(ctx context.Context, p Projection) error {
	for ctx.Err() == nil {
		c, err := s.consumer(ctx, p)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if err := s.consume(ctx, c, p); err != nil && ctx.Err() == nil {
			p.Log.Warn().Err(err).Str("projection", p.Name).Msg("projection interrupted; resuming")
			sleep(ctx, time.Second)
		}
	}
	return nil
}

func (s *Store) consume(ctx context.Context, c jetstream.Consumer, p Projection) error {
	it, err := bus.Messages(c, jetstream.PullMaxMessages(16))
	if err != nil {
		return err
	}
	go func() {
		<-ctx.Done()
		it.Stop()
	}()
	defer it.Stop()
	for {
		m, err := it.Next()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return nil
			}
			if errors.Is(err, jetstream.ErrNoHeartbeat) {
				continue // a lost pull: the iterator pulls again
			}
			return err
		}
		e, err := s.decode(m)
		if err == nil {
			err = p.Apply(ctx, e)
		}
		if err != nil {
			p.Log.Error().Err(err).Str("projection", p.Name).Str("subject", m.Subject()).Msg("projection apply failed; will retry")
			_ = m.NakWithDelay(time.Second)
			continue
		}
		if err := m.DoubleAck(ctx); err != nil && ctx.Err() == nil {
			p.Log.Warn().Err(err).Str("projection", p.Name).Msg("projection ack failed")
		}
	}
}

func (s *Store) consumer(ctx context.Context, p Projection) (jetstream.Consumer, error) {
	filter := s.prefix + ".>"
	if p.Filter != "" {
		filter = bus.Subject(s.prefix, p.Filter)
	}
	c, err := bus.Consumer(ctx, s.js, s.stream, jetstream.ConsumerConfig{
		Durable:       p.Name,
		FilterSubject: filter,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		MaxAckPending: 1,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("projection %s: %w", p.Name, err)
	}
	return c, nil
}

// WaitApplied blocks until projection name has applied every event up to seq.
func (s *Store) WaitApplied(ctx context.Context, name string, seq uint64) error {
	if seq == 0 {
		return nil // nothing stored, nothing to apply
	}
	for {
		c, err := s.js.Consumer(ctx, s.stream, name)
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			// The projection is starting (its durable is made as it
			// first runs): it has applied nothing yet.
			if !sleep(ctx, 5*time.Millisecond) {
				return ctx.Err()
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("projection %s: %w", name, err)
		}
		info, err := c.Info(ctx)
		if err != nil {
			return fmt.Errorf("projection %s: %w", name, err)
		}
		if info.AckFloor.Stream >= seq {
			return nil
		}
		if !sleep(ctx, 5*time.Millisecond) {
			return ctx.Err()
		}
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
