package pgworker

import (
	"fmt"
	"sync"

	"sluice.dev/sluice/libs/gateway"
	"sluice.dev/sluice/libs/pgmask"
	policyv1 "sluice.dev/sluice/proto/sluice/policy/v1"
)

// planFor returns the masking plan of a decision (libs/pgmask), nil when
// nothing is masked. Plans are cached per session by rule set, and shared
// by the worker's sessions on the same catalog (planCache).
func (s *session) planFor(d *policyv1.Decision) (*pgmask.Plan, error) {
	if len(d.GetMasks()) == 0 {
		return nil, nil
	}
	if err := s.freshCatalog(d); err != nil {
		return nil, fmt.Errorf("the masked columns could not be resolved again: %w", err)
	}
	// Cached decisions are shared and never change: remember the plan of
	// the last one, the common case of a statement run again and again.
	if d == s.lastDecision && s.lastDecisionPlan != nil {
		return s.lastDecisionPlan, nil
	}
	key := gateway.MaskRulesKey(d)
	if p, ok := s.plans[key]; ok {
		s.lastDecision, s.lastDecisionPlan = d, p
		return p, nil
	}
	p, err := s.w.plans.get(s.catalog, key, func() (*pgmask.Plan, error) {
		m, err := s.w.k.Masker(key, d)
		if err != nil {
			return nil, err
		}
		return pgmask.NewPlan(m, d, s.catalog), nil
	})
	if err != nil {
		return nil, err
	}
	s.plans[key] = p
	s.lastPlan.Store(p)
	s.lastDecision, s.lastDecisionPlan = d, p
	return p, nil
}

// planCache shares masking plans between a worker's sessions: a plan is
// read only once built, and depends on nothing but its catalog and its
// rules, so a session on the same catalog under the same rules (each new
// connection of an agent) takes the one built before.
type planCache struct {
	mu sync.Mutex
	m  map[planKey]*pgmask.Plan
}

type planKey struct {
	cat   *pgmask.Catalog
	rules string
}

// maxCachedPlans bounds the cache: past it, it starts again (catalogs are
// resolved anew as they age, and old ones are never asked for again).
const maxCachedPlans = 512

func (c *planCache) get(cat *pgmask.Catalog, rules string, build func() (*pgmask.Plan, error)) (*pgmask.Plan, error) {
	k := planKey{cat, rules}
	c.mu.Lock()
	p, ok := c.m[k]
	c.mu.Unlock()
	if ok {
		return p, nil
	}
	p, err := build()
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= maxCachedPlans {
		c.m = map[planKey]*pgmask.Plan{}
	}
	c.m[k] = p
	c.mu.Unlock()
	return p, nil
}
