package gateway

import (
	"testing"
	"time"

	"sluice.dev/sluice/libs/sqlshape"
	policyv1 "sluice.dev/sluice/proto/sluice/policy/v1"
)

// BenchmarkCachedDecision is the warm path of a decision: the statement's
// shape and a cache lookup, with no parse and no round trip.
func BenchmarkCachedDecision(b *testing.B) {
	c := NewDecisionCache(1000)
	d := &policyv1.Decision{Action: "allow", Revision: 1, Cache: &policyv1.Cache{Cacheable: true, TtlMs: 60000, ShapeCacheable: true}}
	shape, _ := sqlshape.Shape("SELECT abalance FROM pgbench_accounts WHERE aid = 1")
	now := time.Now()
	c.Put(CacheKey{Target: "demo", Shape: true, Text: shape}, d, now, c.Generation())
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		s, _ := sqlshape.Shape("SELECT abalance FROM pgbench_accounts WHERE aid = 424242")
		if c.Get(CacheKey{Target: "demo", Shape: true, Text: s}, now) == nil {
			b.Fatal("miss")
		}
	}
}

// A decision asked for before a flush (a grant changed meanwhile) is not
// stored after it.
func TestFlushDiscardsDecisionsInFlight(t *testing.T) {
	c := NewDecisionCache(10)
	d := &policyv1.Decision{Action: "allow", Revision: 1, Cache: &policyv1.Cache{Cacheable: true, TtlMs: 60000}}
	now := time.Now()
	k := CacheKey{Target: "demo", Text: "INSERT INTO t VALUES (1)"}
	gen := c.Generation()
	c.Flush() // the grant was revoked while the decision was on its way
	c.Put(k, d, now, gen)
	if c.Get(k, now) != nil {
		t.Fatal("a decision from before the flush was stored")
	}
	c.Put(k, d, now, c.Generation())
	if c.Get(k, now) == nil {
		t.Fatal("a current decision was not stored")
	}
}
