package pgworker

import (
	"fmt"

	"sluice.dev/sluice/libs/gateway"
	"sluice.dev/sluice/libs/pgmask"
	policyv1 "sluice.dev/sluice/proto/sluice/policy/v1"
)

// planFor returns the masking plan of a decision (libs/pgmask), nil when
// nothing is masked. Plans are cached per session by rule set: they are
// built on the session's catalog.
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
	m, err := s.w.k.Masker(key, d)
	if err != nil {
		return nil, err
	}
	p := pgmask.NewPlan(m, d, s.catalog)
	s.plans[key] = p
	s.lastPlan.Store(p)
	s.lastDecision, s.lastDecisionPlan = d, p
	return p, nil
}
