package pgmask

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Callers that ask for a target's catalog while it is being resolved wait
// for that one resolution and take its outcome, failure included; a
// caller's context bounds its wait; a recent catalog is shared as is.
func TestCatalogsResolveOnceForEveryoneWaiting(t *testing.T) {
	var c Catalogs
	release := make(chan struct{})
	var calls atomic.Int32
	resolve := func(context.Context) (*Catalog, error) {
		calls.Add(1)
		<-release
		return &Catalog{}, nil
	}
	var wg sync.WaitGroup
	got := make([]*Catalog, 5)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cat, _, err := c.Fresh(context.Background(), "k", time.Minute, resolve)
			assert.NoError(t, err)
			got[i] = cat
		}()
	}
	// A caller whose context ends stops waiting.
	require.Eventually(t, func() bool { return calls.Load() == 1 }, 5*time.Second, time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, _, err := c.Fresh(ctx, "k", time.Minute, resolve)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	close(release)
	wg.Wait()
	assert.EqualValues(t, 1, calls.Load(), "one resolution")
	for _, cat := range got {
		assert.Same(t, got[0], cat)
	}
	cat, _ := c.Recent("k", time.Minute)
	assert.Same(t, got[0], cat)
	assert.Nil(t, func() *Catalog { cat, _ := c.Recent("k", -1); return cat }(), "older than the age asked for")
	assert.EqualValues(t, 1, c.Resolutions())

	// A failure is everyone's who waited for it, and is not remembered.
	boom := errors.New("target down")
	hold := make(chan struct{})
	failing := func(context.Context) (*Catalog, error) { <-hold; return nil, boom }
	errs := make(chan error, 3)
	for range 3 {
		go func() { _, _, err := c.Fresh(context.Background(), "down", time.Minute, failing); errs <- err }()
	}
	time.Sleep(20 * time.Millisecond)
	close(hold)
	for range 3 {
		assert.ErrorIs(t, <-errs, boom)
	}
	cat, _, err = c.Fresh(context.Background(), "down", time.Minute, func(context.Context) (*Catalog, error) { return &Catalog{}, nil })
	require.NoError(t, err)
	assert.NotNil(t, cat)
}

// The cache keeps at most maxCatalogEntries targets.
func TestCatalogsAreBounded(t *testing.T) {
	var c Catalogs
	for i := range 2 * maxCatalogEntries {
		c.Put(string(rune('a'+i%26))+time.Duration(i).String(), &Catalog{}, time.Now())
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	assert.LessOrEqual(t, len(c.m), maxCatalogEntries)
}
