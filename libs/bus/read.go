package bus

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"
)

// StreamRead is a read of a stream's messages in stream order.
type StreamRead struct {
	Stream string
	// Filters are the subjects read; none reads every message.
	Filters []string
	// From is the first stream sequence read (0: the first); FromTime, when
	// From is 0, the time of the first message read.
	From     uint64
	FromTime time.Time
	// Follow keeps reading what is stored later until ctx is done, and then
	// ends without error. Without it the read ends at the last message
	// stored when it started, and a ctx done before is an error.
	Follow bool
	// Batch is how many messages one pull asks for (default 256).
	Batch int
}

// Read attempts: how often a read starts again, and how long one request of
// it may take (the JetStream API or a pull).
const (
	readAttempts = 8
	readTimeout  = 5 * time.Second
)

// errReadAgain ends one consumer of a read: the read goes on with another.
var errReadAgain = errors.New("read again")

// ReadStream passes each message of r to fn, in stream order, each once.
//
// It reads through one consumer of its own (in memory, on one server,
// unacknowledged), not a consumer made again for every pull. In a cluster
// that consumer may be placed on a server that has just died and not yet
// been noticed, or be still in the making, and its requests then go
// unanswered or answer "no responders": the read then makes another, placed
// anew, and goes on after the last message it passed on. It gives up after
// a few attempts in a row that passed nothing on. An error from fn ends the
// read and is returned as it is.
func ReadStream(ctx context.Context, js jetstream.JetStream, r StreamRead, fn func(jetstream.Msg) error) error {
	if r.Batch <= 0 {
		r.Batch = 256
	}
	var (
		last    uint64 // without Follow, the last message to read
		next    uint64 // after a message was passed on, the one after it
		lastErr error
	)
	for attempt := 1; attempt <= readAttempts; attempt++ {
		if attempt > 1 {
			select {
			case <-ctx.Done():
				return endOf(ctx, r, ctx.Err())
			case <-time.After(time.Duration(attempt-1) * 100 * time.Millisecond):
			}
		}
		if !r.Follow && last == 0 {
			seq, at, err := lastOf(ctx, js, r)
			if err != nil {
				if lastErr = err; retryable(ctx, err) {
					continue
				}
				return fmt.Errorf("read %s: %w", r.Stream, err)
			}
			if seq == 0 || seq < r.From || r.From == 0 && at.Before(r.FromTime) {
				return nil // nothing stored on the filters from the start asked
			}
			last = seq
		}
		from := next
		done, err := readWith(ctx, js, r, next, last, func(m jetstream.Msg, seq uint64) error {
			if err := fn(m); err != nil {
				return err
			}
			next = seq + 1
			return nil
		})
		if err == nil || done {
			return err
		}
		if lastErr = err; !retryable(ctx, err) {
			return endOf(ctx, r, err)
		}
		if next != from {
			attempt = 1 // it got on: attempts count again
		}
	}
	return fmt.Errorf("read %s: %d attempts: %w", r.Stream, readAttempts, lastErr)
}

// lastOf is the stream sequence and time of the last message stored on
// r's filters (0: none).
func lastOf(ctx context.Context, js jetstream.JetStream, r StreamRead) (uint64, time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, readTimeout)
	defer cancel()
	stream, err := js.Stream(ctx, r.Stream)
	if err != nil {
		return 0, time.Time{}, err
	}
	if len(r.Filters) == 0 {
		st := stream.CachedInfo().State
		return st.LastSeq, st.LastTime, nil
	}
	var last uint64
	var at time.Time
	for _, f := range r.Filters {
		m, err := stream.GetLastMsgForSubject(ctx, f)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return 0, time.Time{}, err
		}
		if m.Sequence > last {
			last, at = m.Sequence, m.Time
		}
	}
	return last, at, nil
}

// endOf is what a read that stopped with err returns: nothing when it
// followed the stream until ctx was done.
func endOf(ctx context.Context, r StreamRead, err error) error {
	if r.Follow && ctx.Err() != nil {
		return nil
	}
	return err
}

// readWith reads through one consumer from next (0: from r's start) up to
// last (without Follow). done reports that fn failed: its error ends the
// read.
func readWith(ctx context.Context, js jetstream.JetStream, r StreamRead, next, last uint64, fn func(jetstream.Msg, uint64) error) (done bool, err error) {
	cfg := jetstream.ConsumerConfig{
		Name:              "read_" + strings.ToLower(ulid.Make().String()),
		FilterSubjects:    r.Filters,
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		AckPolicy:         jetstream.AckNonePolicy,
		MemoryStorage:     true,
		Replicas:          1,
		InactiveThreshold: 5 * time.Minute,
	}
	switch {
	case next > 0:
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, next
	case r.From > 0:
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, r.From
	case !r.FromTime.IsZero():
		t := r.FromTime
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &t
	}
	actx, cancel := context.WithTimeout(ctx, readTimeout)
	cons, err := js.CreateOrUpdateConsumer(actx, r.Stream, cfg)
	cancel()
	if err != nil {
		return false, fmt.Errorf("read %s: %w", r.Stream, err)
	}
	defer func() {
		// Gone by itself once inactive; removed at once when the server
		// answers.
		go func() {
			dctx, cancel := context.WithTimeout(context.Background(), readTimeout)
			defer cancel()
			_ = js.DeleteConsumer(dctx, r.Stream, cfg.Name)
		}()
	}()
	var delivered uint64 // the consumer's sequence of the last message
	for {
		wait := 2 * time.Second
		if r.Follow {
			wait = time.Second // to notice ctx done soon
		}
		batch, err := cons.Fetch(r.Batch, jetstream.FetchMaxWait(wait))
		if err != nil {
			return false, fmt.Errorf("read %s: %w", r.Stream, err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				return false, fmt.Errorf("read %s: %w", r.Stream, err)
			}
			if md.Sequence.Consumer != delivered+1 {
				// A message went missing on its way: read again from the
				// one after the last passed on.
				return false, errReadAgain
			}
			delivered = md.Sequence.Consumer
			if err := fn(m, md.Sequence.Stream); err != nil {
				return true, err
			}
			if !r.Follow && md.Sequence.Stream >= last {
				return false, nil
			}
		}
		if err := ctx.Err(); err != nil {
			if r.Follow {
				return true, nil
			}
			return true, err
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, nats.ErrTimeout) {
			return false, fmt.Errorf("read %s: %w", r.Stream, err)
		}
		if n == 0 && !r.Follow {
			// The last message has not come: none is left after where the
			// read started (a start past it), or the consumer is not being
			// served.
			ictx, cancel := context.WithTimeout(ctx, readTimeout)
			info, err := cons.Info(ictx)
			cancel()
			if err == nil && info.NumPending == 0 && info.NumAckPending == 0 {
				return false, nil
			}
			return false, errReadAgain
		}
	}
}

// retryable reports whether a read that ended with err may start again:
// its own request went unanswered or met "no responders", or its consumer
// went away, while ctx still runs.
func retryable(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	return errors.Is(err, errReadAgain) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoHeartbeat) ||
		errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrConsumerDeleted)
}
