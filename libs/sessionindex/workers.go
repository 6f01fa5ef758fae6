package sessionindex

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"sluice.dev/sluice/libs/bus"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
)

// Workers is the presence read model: each protocol worker's last word in
// the sluice_workers bucket. It tells a session that is open from one that
// will never end because its worker is gone (killed outright, its host
// lost): such a session has no Ended event, and its summary alone would
// show it open for ever.
type Workers struct {
	mu sync.RWMutex
	by map[string]presence
	// asOf, when set, is the time the view was last known to be current:
	// it has since fallen behind the bucket (this replica cut off from
	// NATS, a stuck watch), and silence is judged as of then, not now. A
	// worker that went on writing its presence must not be called silent
	// because this replica stopped hearing it.
	asOf time.Time
	// now is the clock (tests).
	now func() time.Time
	// staleAfter is how long the view may lag before it counts as behind
	// (tests shorten it).
	staleAfter time.Duration
}

type presence struct {
	started, seen time.Time
}

// NewWorkers returns an empty presence view.
func NewWorkers() *Workers {
	return &Workers{by: map[string]presence{}, now: time.Now, staleAfter: presenceStaleAfter}
}

// presenceStaleAfter is how long the presence view may lag behind the
// bucket before it counts as behind.
const presenceStaleAfter = 5 * time.Second

// setStale notes that the view fell behind the bucket (stale) or caught
// up. Falling behind is noticed only once the lag has lasted staleAfter,
// so the view is known current up to that long before.
func (w *Workers) setStale(stale bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case !stale:
		w.asOf = time.Time{}
	case w.asOf.IsZero():
		w.asOf = w.now().Add(-w.staleAfter)
	}
}

// Put notes a worker's presence, written at seen.
func (w *Workers) Put(key string, p *sessionv1.WorkerPresence, seen time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.by[key] = presence{started: p.GetStartedAt().AsTime(), seen: seen}
}

// Delete notes that a worker withdrew its presence (it stopped).
func (w *Workers) Delete(key string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.by, key)
}

// Lost says why a session that has not ended never will, or "" if it has
// ended or its worker still serves it: the worker is not present (it
// stopped, or was never heard of), has been silent for longer than
// bus.WorkerSilence, or has started again since the session started. While
// the view is behind the bucket, silence is judged as of the last time it
// was current.
func (w *Workers) Lost(s *sessionv1.Summary) string {
	if s.GetEndedAt() != nil || s.GetWorker() == "" {
		return ""
	}
	w.mu.RLock()
	p, ok := w.by[bus.WorkerKey(s.GetWorker())]
	clock := w.asOf
	w.mu.RUnlock()
	if clock.IsZero() {
		clock = w.now()
	}
	name := s.GetWorker()
	switch {
	case !ok:
		return fmt.Sprintf("its worker %s stopped without ending it", name)
	case p.started.After(s.GetStartedAt().AsTime()):
		return fmt.Sprintf("its worker %s started again at %s without ending it", name, p.started.UTC().Format(time.RFC3339))
	case clock.Sub(p.seen) > bus.WorkerSilence:
		return fmt.Sprintf("its worker %s has been silent since %s", name, p.seen.UTC().Format(time.RFC3339))
	}
	return ""
}

// FollowWorkers keeps w equal to the sluice_workers bucket until ctx is
// done; ready is closed once w holds what the bucket held when it started.
// When the view falls behind the bucket (NATS out of reach), w judges
// silence as of the last time it was current until it catches up.
func FollowWorkers(ctx context.Context, js jetstream.JetStream, w *Workers, ready chan struct{}) error {
	f := bus.Follow{Bucket: bus.BucketWorkers, StaleAfter: w.staleAfter, Check: w.staleAfter / 5, OnStale: w.setStale}
	return f.Run(ctx, js, ready, func(e jetstream.KeyValueEntry) error {
		if e.Operation() != jetstream.KeyValuePut {
			w.Delete(e.Key())
			return nil
		}
		var p sessionv1.WorkerPresence
		if proto.Unmarshal(e.Value(), &p) != nil {
			return nil
		}
		w.Put(e.Key(), &p, e.Created())
		return nil
	})
}
