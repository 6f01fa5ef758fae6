package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// consumerPatience is how long Consumer keeps trying: long enough to ride
// out a cluster electing a stream leader as the services start, short
// enough that a wrong setting still stops a service.
const consumerPatience = 30 * time.Second

// Consumer creates or updates a durable consumer, trying again (with
// backoff) while the cluster does not answer in time, as a freshly started
// three-node cluster may not.
func Consumer(ctx context.Context, js jetstream.JetStream, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	give := time.Now().Add(consumerPatience)
	wait := 50 * time.Millisecond
	for {
		cons, err := js.CreateOrUpdateConsumer(ctx, stream, cfg)
		if err == nil || ctx.Err() != nil || time.Now().After(give) || !transient(err) {
			if err != nil {
				return nil, fmt.Errorf("consumer %s on %s: %w", cfg.Durable, stream, err)
			}
			return cons, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// transient says an error may pass by itself: the cluster timed out or
// had no JetStream leader to answer.
func transient(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, jetstream.ErrNoHeartbeat) ||
		errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrServerShutdown) ||
		errors.Is(err, jetstream.ErrStreamNotFound) || isTimeout(err)
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// Pulls of a long-lived consumer (Messages) expire after PullExpiry and
// carry a heartbeat every PullHeartbeat. A pull request that never reached
// the consumer's leader (sent while the consumer had none: it was just
// created on a cluster, or its leader's node died) is answered by nobody;
// the client notices only when two heartbeats are missing and pulls again.
// With the client's defaults (30 s, heartbeats every 15 s) that stalls
// the consumer for 30 s; here for two seconds.
const (
	PullExpiry    = 10 * time.Second
	PullHeartbeat = time.Second
)

// Messages is cons.Messages with PullExpiry and PullHeartbeat, for
// consumers that follow a stream for the life of a service.
func Messages(cons jetstream.Consumer, opts ...jetstream.PullMessagesOpt) (jetstream.MessagesContext, error) {
	return cons.Messages(append([]jetstream.PullMessagesOpt{jetstream.PullExpiry(PullExpiry), jetstream.PullHeartbeat(PullHeartbeat)}, opts...)...)
}
