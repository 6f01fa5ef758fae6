package bus

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// FollowKV keeps a read model current with a KV bucket until ctx is done:
// it passes every entry to apply, closes ready once the initial values have
// been delivered, and watches again when a watch ends (a NATS node lost, a
// reconnect). Before ready is closed, a failure is returned to the caller;
// after, the follower retries. Only one goroutine may follow a given ready.
func FollowKV(ctx context.Context, js jetstream.JetStream, bucket string, ready chan struct{}, apply func(jetstream.KeyValueEntry) error) error {
	for {
		err := watchKV(ctx, js, bucket, ready, apply)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil && !closed(ready) {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func watchKV(ctx context.Context, js jetstream.JetStream, bucket string, ready chan struct{}, apply func(jetstream.KeyValueEntry) error) error {
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		return fmt.Errorf("bucket %s: %w", bucket, err)
	}
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch %s: %w", bucket, err)
	}
	// Stopping a watch also deletes its ephemeral consumer, which the
	// workers' NATS user may not do: that request would hold the next watch
	// (or the shutdown) for its whole timeout. The server removes an
	// ephemeral consumer nobody listens to on its own.
	defer func() { go w.Stop() }() //nolint:errcheck
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return nil
			}
			if e == nil {
				if !closed(ready) {
					close(ready)
				}
				continue
			}
			if err := apply(e); err != nil {
				return err
			}
		}
	}
}

func closed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
