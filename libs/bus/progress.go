package bus

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
)

// Progress is how far a view has applied its bucket: the highest revision
// it applied. A view lags its bucket by the watch's delivery; CatchUp
// waits that lag out, for a caller that must answer from what the bucket
// already holds (its own write that has returned, a refusal that must not
// rest on the lag). The zero value is ready to use.
type Progress struct {
	mu    sync.Mutex
	rev   uint64
	moved chan struct{}
}

// Applied records that the view applied an entry of revision rev.
func (p *Progress) Applied(rev uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if rev > p.rev {
		p.rev = rev
		if p.moved != nil {
			close(p.moved)
			p.moved = nil
		}
	}
}

// CatchUp returns once the view has applied every entry bucket holds now,
// or with an error when ctx is done first.
func (p *Progress) CatchUp(ctx context.Context, js jetstream.JetStream, bucket string) error {
	s, err := js.Stream(ctx, KVStream(bucket))
	if err != nil {
		return fmt.Errorf("bucket %s: %w", bucket, err)
	}
	// The newest message still held (the stream's last sequence may be
	// one since removed, which no watch delivers).
	m, err := s.GetLastMsgForSubject(ctx, "$KV."+bucket+".>")
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil // an empty bucket
	}
	if err != nil {
		return fmt.Errorf("bucket %s: %w", bucket, err)
	}
	for {
		p.mu.Lock()
		rev := p.rev
		if p.moved == nil {
			p.moved = make(chan struct{})
		}
		moved := p.moved
		p.mu.Unlock()
		if rev >= m.Sequence {
			return nil
		}
		select {
		case <-moved:
		case <-ctx.Done():
			return fmt.Errorf("the view of %s has not reached revision %d (at %d): %w", bucket, m.Sequence, rev, ctx.Err())
		}
	}
}
