package pgworker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"google.golang.org/protobuf/proto"

	"sluice.dev/sluice/libs/pgmask"
	"sluice.dev/sluice/libs/targets"
	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
)

// catalogs holds the masked columns of each target as last resolved
// (libs/pgmask: the columns' table OIDs and attribute numbers, and every
// view over them), shared by the worker's sessions. The catalog is what
// lineage masking follows: a view created after it was resolved is not in
// it. So no session plans a masked statement on a catalog older than
// Config.CatalogMaxAge. A new session takes the target's catalog when it
// is that recent, or resolves it on its own connection and shares it; an
// open one whose catalog ages past it takes a fresher one, resolved once
// for all of them on a connection of its own.
type catalogs struct {
	mu sync.Mutex
	m  map[string]*catalogEntry
	// resolved counts resolutions made on a connection of their own.
	resolved atomic.Int64
}

type catalogEntry struct {
	// mu is held while the catalog is resolved: one resolution at a time
	// per target, whose result every waiting session takes.
	mu  sync.Mutex
	cat *pgmask.Catalog
	at  time.Time // when the resolution started
}

// maxCatalogEntries bounds the targets (and policy versions) remembered;
// past it, entries unused for a minute are dropped.
const maxCatalogEntries = 256

func (c *catalogs) entry(key string) *catalogEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]*catalogEntry{}
	}
	e := c.m[key]
	if e == nil {
		if len(c.m) >= maxCatalogEntries {
			for k, old := range c.m {
				if old.mu.TryLock() {
					stale := time.Since(old.at) > time.Minute
					old.mu.Unlock()
					if stale {
						delete(c.m, k)
					}
				}
			}
		}
		e = &catalogEntry{}
		c.m[key] = e
	}
	return e
}

// put offers a catalog resolved at at (by a session as it started).
func (c *catalogs) put(key string, cat *pgmask.Catalog, at time.Time) {
	e := c.entry(key)
	e.mu.Lock()
	defer e.mu.Unlock()
	if at.After(e.at) {
		e.cat, e.at = cat, at
	}
}

// recent returns the target's catalog if one resolved no more than maxAge
// ago is at hand (never waiting for a resolution in progress).
func (c *catalogs) recent(key string, maxAge time.Duration) (*pgmask.Catalog, time.Time) {
	e := c.entry(key)
	if !e.mu.TryLock() {
		return nil, time.Time{}
	}
	defer e.mu.Unlock()
	if e.cat == nil || time.Since(e.at) > maxAge {
		return nil, time.Time{}
	}
	return e.cat, e.at
}

// fresh returns the target's catalog resolved no more than maxAge ago,
// resolving it (once, whoever else waits) when there is none.
func (c *catalogs) fresh(ctx context.Context, key string, maxAge time.Duration, resolve func(context.Context) (*pgmask.Catalog, error)) (*pgmask.Catalog, time.Time, error) {
	e := c.entry(key)
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cat != nil && time.Since(e.at) <= maxAge {
		return e.cat, e.at, nil
	}
	at := time.Now()
	cat, err := resolve(ctx)
	if err != nil {
		return nil, time.Time{}, err
	}
	c.resolved.Add(1)
	e.cat, e.at = cat, at
	return cat, at, nil
}

// catalogKey names a target's catalog for a set of masked columns: the
// target's connection settings (host, database, user) and the columns.
func catalogKey(pg *controlv1.PostgresTarget, cols []string) string {
	h := sha256.New()
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(pg)
	h.Write(b)
	h.Write([]byte{0})
	h.Write([]byte(strings.Join(cols, "\x00")))
	return hex.EncodeToString(h.Sum(nil))
}

// resolveCatalog logs in to the target on a connection of its own and
// resolves the masked columns there.
func (w *Worker) resolveCatalog(ctx context.Context, pg *controlv1.PostgresTarget, runtime map[string]string, cols []string) (*pgmask.Catalog, error) {
	cfg, err := targets.PostgresConfig(pg, w.cfg.MasterKey, runtime)
	if err != nil {
		return nil, err
	}
	pc, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer pc.Close(context.Background())
	return pgmask.ResolveCatalog(ctx, pc, cols)
}

// catalogRefreshTimeout bounds how long a statement waits for a fresh
// catalog before its session is closed (masking must not guess).
const catalogRefreshTimeout = 10 * time.Second

// freshCatalog makes sure the session's catalog is no older than
// CatalogMaxAge (and covers the masked columns of the policy in force),
// taking a fresher one of the same target when there is one.
func (s *session) freshCatalog() error {
	maxAge := s.w.cfg.CatalogMaxAge
	if maxAge < 0 || s.upstream == nil || s.upstream.pg == nil {
		return nil
	}
	policy := s.w.k.View.Policy()
	if policy == s.catalogPolicy && time.Since(s.catalogAt) <= maxAge {
		return nil
	}
	cols := pgmask.MaskColumns(policy.GetRules())
	key := catalogKey(s.upstream.pg, cols)
	s.catalogPolicy = policy
	if key == s.catalogKey && time.Since(s.catalogAt) <= maxAge {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), catalogRefreshTimeout)
	defer cancel()
	cat, at, err := s.w.catalogs.fresh(ctx, key, maxAge, func(ctx context.Context) (*pgmask.Catalog, error) {
		return s.w.resolveCatalog(ctx, s.upstream.pg, s.upstream.runtime, cols)
	})
	if err != nil {
		return err
	}
	if key != s.catalogKey || at.After(s.catalogAt) {
		s.catalog, s.catalogAt, s.catalogKey = cat, at, key
		// Plans are built on the catalog.
		clear(s.plans)
		s.lastDecision, s.lastDecisionPlan = nil, nil
	}
	return nil
}
