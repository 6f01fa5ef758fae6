package pgmask

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
)

// Catalogs holds each target's Catalog as last resolved, shared by a
// worker's sessions and calls. A Catalog is what lineage masking follows:
// a view created after it was resolved is not in it. So a worker plans no
// masked statement on a Catalog older than its maximum age: it takes the
// target's from here when it is that recent (Recent, Fresh), and resolves
// it anew otherwise, once for everyone waiting (Fresh).
type Catalogs struct {
	mu sync.Mutex
	m  map[string]*catalogEntry
	// resolved counts the resolutions made (Fresh, Put).
	resolved atomic.Int64
}

type catalogEntry struct {
	// mu guards the fields; it is never held while resolving.
	mu  sync.Mutex
	cat *Catalog
	at  time.Time // when its resolution started
	// resolving is the resolution in progress, if any: one at a time per
	// target, whose outcome every caller waiting for it takes.
	resolving *flight
}

// flight is one resolution: done is closed when it ends, err says how.
type flight struct {
	done chan struct{}
	err  error
}

// maxCatalogEntries bounds the targets (and policy versions) remembered.
const maxCatalogEntries = 256

// CatalogKey names a target's Catalog for a set of masked columns: the
// target's connection settings (host, database, user) and the columns.
func CatalogKey(pg *controlv1.PostgresTarget, cols []string) string {
	h := sha256.New()
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(pg)
	h.Write(b)
	h.Write([]byte{0})
	h.Write([]byte(strings.Join(cols, "\x00")))
	return hex.EncodeToString(h.Sum(nil))
}

func (c *Catalogs) entry(key string) *catalogEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]*catalogEntry{}
	}
	e := c.m[key]
	if e == nil {
		if len(c.m) >= maxCatalogEntries {
			c.evict()
		}
		e = &catalogEntry{}
		c.m[key] = e
	}
	return e
}

// evict drops the entries resolved over a minute ago and not resolving,
// or else the oldest one (c.mu held).
func (c *Catalogs) evict() {
	var oldest string
	var oldestAt time.Time
	for k, e := range c.m {
		e.mu.Lock()
		at, busy := e.at, e.resolving != nil
		e.mu.Unlock()
		switch {
		case busy:
		case time.Since(at) > time.Minute:
			delete(c.m, k)
		case oldest == "" || at.Before(oldestAt):
			oldest, oldestAt = k, at
		}
	}
	if len(c.m) >= maxCatalogEntries && oldest != "" {
		delete(c.m, oldest)
	}
}

// Put offers a Catalog resolved at at (by a session as it started).
func (c *Catalogs) Put(key string, cat *Catalog, at time.Time) {
	c.resolved.Add(1)
	e := c.entry(key)
	e.mu.Lock()
	defer e.mu.Unlock()
	if at.After(e.at) {
		e.cat, e.at = cat, at
	}
}

// Last returns the target's Catalog as last resolved, however old: what a
// new resolution follows masked columns from (ResolveCatalogAfter).
func (c *Catalogs) Last(key string) *Catalog {
	e := c.entry(key)
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.cat
}

// Recent returns the target's Catalog if one resolved no more than maxAge
// ago is at hand, never waiting for a resolution in progress.
func (c *Catalogs) Recent(key string, maxAge time.Duration) (*Catalog, time.Time) {
	e := c.entry(key)
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cat == nil || time.Since(e.at) > maxAge {
		return nil, time.Time{}
	}
	return e.cat, e.at
}

// Fresh returns the target's Catalog resolved no more than maxAge ago. When
// there is none it resolves one, once for every caller meanwhile: they wait
// for it (as long as their ctx allows) and take its outcome, failure
// included.
func (c *Catalogs) Fresh(ctx context.Context, key string, maxAge time.Duration, resolve func(context.Context) (*Catalog, error)) (*Catalog, time.Time, error) {
	e := c.entry(key)
	for {
		e.mu.Lock()
		if e.cat != nil && time.Since(e.at) <= maxAge {
			cat, at := e.cat, e.at
			e.mu.Unlock()
			return cat, at, nil
		}
		if f := e.resolving; f != nil {
			e.mu.Unlock()
			select {
			case <-f.done:
			case <-ctx.Done():
				return nil, time.Time{}, ctx.Err()
			}
			if f.err != nil {
				return nil, time.Time{}, f.err
			}
			continue
		}
		f := &flight{done: make(chan struct{})}
		e.resolving = f
		e.mu.Unlock()
		at := time.Now()
		cat, err := resolve(ctx)
		e.mu.Lock()
		if err == nil {
			c.resolved.Add(1)
			if at.After(e.at) {
				e.cat, e.at = cat, at
			}
		}
		f.err = err
		e.resolving = nil
		e.mu.Unlock()
		close(f.done)
		if err != nil {
			return nil, time.Time{}, err
		}
		return cat, at, nil
	}
}

// Resolutions is how many Catalogs were resolved (Fresh, Put).
func (c *Catalogs) Resolutions() int64 { return c.resolved.Load() }
