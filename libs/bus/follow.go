package bus

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// FollowKV keeps a read model current with a KV bucket until ctx is done:
// it passes every entry to apply, closes ready once the initial values have
// been delivered, and watches again when a watch ends (a NATS node lost, a
// reconnect). Before ready is closed, a failure that lasts StartRetry (a
// cluster electing leaders as the view starts fails for a while) is
// returned to the caller; after, the follower retries for good. Only one
// goroutine may follow a given ready.
func FollowKV(ctx context.Context, js jetstream.JetStream, bucket string, ready chan struct{}, apply func(jetstream.KeyValueEntry) error) error {
	return Follow{Bucket: bucket}.Run(ctx, js, ready, apply)
}

// Follow follows a KV bucket and notices when the view it feeds falls
// behind: the bucket holds entries the watch has not delivered for longer
// than StaleAfter. Nothing a client sends may stop a view every session
// depends on, and a stalled view must not keep answering as if it were
// current: OnStale(true) says so (the view then fails closed), the watch is
// started again from the beginning, and OnStale(false) says the view has
// caught up.
type Follow struct {
	Bucket string
	// StaleAfter is how long the view may lag behind the bucket; default 5s.
	StaleAfter time.Duration
	// Check is how often the lag is measured; default 1s.
	Check time.Duration
	// OnStale, if set, hears when the view goes stale and when it is
	// current again.
	OnStale func(stale bool)
	// StartRetry is how long the first load may keep failing before Run
	// gives up; default 30s.
	StartRetry time.Duration

	// stall, in tests, withholds an entry from the view as a stuck watch
	// would (and every later one of the same watch).
	stall func(watch int, e jetstream.KeyValueEntry) bool
}

// Run follows until ctx is done (see FollowKV).
func (f Follow) Run(ctx context.Context, js jetstream.JetStream, ready chan struct{}, apply func(jetstream.KeyValueEntry) error) error {
	if f.StaleAfter <= 0 {
		f.StaleAfter = 5 * time.Second
	}
	if f.Check <= 0 {
		f.Check = time.Second
	}
	if f.StartRetry <= 0 {
		f.StartRetry = 30 * time.Second
	}
	var failingSince time.Time // when the first load began to fail
	var seen atomic.Uint64     // the highest bucket revision applied
	var mu sync.Mutex
	stale := false
	setStale := func(s bool) {
		mu.Lock()
		defer mu.Unlock()
		if s != stale {
			stale = s
			if f.OnStale != nil {
				f.OnStale(s)
			}
		}
	}
	for watch := 0; ; watch++ {
		wctx, cancel := context.WithCancel(ctx)
		lagged := make(chan struct{})
		go f.watchLag(wctx, func() {
			// At once, even if apply itself is what stalls.
			setStale(true)
			close(lagged)
			cancel()
		}, js, &seen, ready)
		stuck := false
		err := watchKV(wctx, js, f.Bucket, ready, func(e jetstream.KeyValueEntry) error {
			if stuck = stuck || (f.stall != nil && f.stall(watch, e)); stuck {
				return nil
			}
			if err := apply(e); err != nil {
				return err
			}
			seen.Store(max(seen.Load(), e.Revision()))
			return nil
		}, func() { setStale(false) })
		behind := closed(lagged)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		if behind {
			// Stale until a new watch has delivered everything.
			seen.Store(0)
			continue
		}
		if err != nil && !closed(ready) {
			if failingSince.IsZero() {
				failingSince = time.Now()
			}
			if time.Since(failingSince) >= f.StartRetry {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// watchLag calls lagged (once) when the view has not reached, within
// StaleAfter, an entry the bucket held (one still there: the stream's
// last sequence may be a message since removed), or when the lag cannot
// be measured for that long.
func (f Follow) watchLag(ctx context.Context, lagged func(), js jetstream.JetStream, seen *atomic.Uint64, ready chan struct{}) {
	t := time.NewTicker(f.Check)
	defer t.Stop()
	var stream jetstream.Stream
	var target uint64             // an entry the view must reach
	var since, measured time.Time // since when it must; the last measurement
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !closed(ready) {
			continue
		}
		now := time.Now()
		if measured.IsZero() {
			measured = now
		}
		// A request waits at most StaleAfter (at least a second): two
		// failures in a row, StaleAfter apart, make the view stale.
		rctx, cancel := context.WithTimeout(ctx, max(f.StaleAfter, time.Second))
		last, err := f.lastSeq(rctx, js, &stream)
		cancel()
		if err != nil {
			if now.Sub(measured) > f.StaleAfter {
				lagged() // cannot tell: fail closed
				return
			}
			continue
		}
		measured = now
		cur := seen.Load()
		switch {
		case cur >= target:
			// Caught up with what it had to reach: measure anew.
			target, since = last, now
			if cur >= last {
				target = 0
			}
		case now.Sub(since) > f.StaleAfter:
			if m, err := stream.GetLastMsgForSubject(ctx, "$KV."+f.Bucket+".>"); err == nil && m.Sequence <= cur {
				target = 0 // only removed messages are ahead
				continue
			}
			lagged()
			return
		}
	}
}

// lastSeq is the bucket stream's last sequence, with one request.
func (f Follow) lastSeq(ctx context.Context, js jetstream.JetStream, stream *jetstream.Stream) (uint64, error) {
	if *stream == nil {
		s, err := js.Stream(ctx, KVStream(f.Bucket))
		if err != nil {
			return 0, err
		}
		*stream = s
		return s.CachedInfo().State.LastSeq, nil
	}
	info, err := (*stream).Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.State.LastSeq, nil
}

func watchKV(ctx context.Context, js jetstream.JetStream, bucket string, ready chan struct{}, apply func(jetstream.KeyValueEntry) error, current func()) error {
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		return fmt.Errorf("bucket %s: %w", bucket, err)
	}
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch %s: %w", bucket, err)
	}
	// Stopping a watch also deletes its ephemeral consumer; that request
	// may wait out a timeout (the server removes an ephemeral consumer
	// nobody listens to on its own), so it never holds the next watch.
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
				// The initial values are delivered: the view is current.
				if !closed(ready) {
					close(ready)
				}
				current()
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
