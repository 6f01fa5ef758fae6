package pgworker

import (
	"context"
	"crypto/sha256"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/sqlshape"
	commonv1 "sluice.dev/sluice/proto/sluice/common/v1"
	policyv1 "sluice.dev/sluice/proto/sluice/policy/v1"
)

// Built-in rules the worker applies itself.
const (
	rulePolicyUnavailable = "builtin:policy-unavailable"
	ruleFunctionCall      = "builtin:function-call"
	ruleMaskedCopy        = "builtin:masked-data-copy"
	ruleInvalidEncoding   = "builtin:invalid-encoding"
	ruleUnfollowableNames = "builtin:unfollowable-names"
)

// decisionCache reuses decisions per principal, target and statement (exact
// text, or shape when the policy service allowed it) for one policy
// revision. A new revision empties it.
type decisionCache struct {
	mu       sync.RWMutex
	revision uint64
	// gen counts flushes: a decision asked for before a flush (a grant
	// changed meanwhile) is not stored after it.
	gen uint64
	max int
	m   map[cacheKey]cached
}

type cacheKey struct {
	principal [16]byte
	target    string
	shape     bool
	text      string
}

type cached struct {
	d       *policyv1.Decision
	expires time.Time
}

func newDecisionCache(max int) *decisionCache {
	return &decisionCache{max: max, m: map[cacheKey]cached{}}
}

// setRevision records the policy revision in force; older decisions go.
func (c *decisionCache) setRevision(rev uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if rev != c.revision {
		c.revision = rev
		c.m = map[cacheKey]cached{}
	}
}

// flush forgets every decision.
func (c *decisionCache) flush() {
	c.mu.Lock()
	c.m = map[cacheKey]cached{}
	c.gen++
	c.mu.Unlock()
}

// generation is the flush count, for put.
func (c *decisionCache) generation() uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.gen
}

func (c *decisionCache) get(k cacheKey, now time.Time) *policyv1.Decision {
	c.mu.RLock()
	e, ok := c.m[k]
	c.mu.RUnlock()
	if !ok || now.After(e.expires) {
		return nil
	}
	return e.d
}

// put stores d unless the cache was flushed since gen was read.
func (c *decisionCache) put(k cacheKey, d *policyv1.Decision, now time.Time, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen {
		return
	}
	if d.GetRevision() > c.revision {
		c.revision = d.GetRevision()
		c.m = map[cacheKey]cached{}
	}
	if d.GetRevision() != c.revision {
		return // decided under an older policy
	}
	if len(c.m) >= c.max {
		for k := range c.m { // drop an arbitrary eighth
			delete(c.m, k)
			if len(c.m) < c.max*7/8 {
				break
			}
		}
	}
	c.m[k] = cached{d: d, expires: now.Add(time.Duration(d.GetCache().GetTtlMs()) * time.Millisecond)}
}

// principalKey identifies everything about a principal a policy can see.
func principalKey(p *commonv1.Principal) [16]byte {
	q := &commonv1.Principal{Subject: p.GetSubject(), Email: p.GetEmail(), Groups: p.GetGroups(), Issuer: p.GetIssuer(), Machine: p.GetMachine(), ClientId: p.GetClientId()}
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(q)
	sum := sha256.Sum256(b)
	var k [16]byte
	copy(k[:], sum[:])
	return k
}

// decide rules on a SQL string for the session: from the cache when it
// may, else from the policy service. Without an answer the verdict is deny.
func (s *session) decide(ctx context.Context, text string) (*policyv1.Decision, bool) {
	now := time.Now()
	exact := cacheKey{principal: s.pkey, target: s.targetRef.GetName(), text: text}
	if d := s.w.decisions.get(exact, now); d != nil {
		return d, true
	}
	shape, shapeOK := sqlshape.Shape(text)
	shapeKey := cacheKey{principal: s.pkey, target: s.targetRef.GetName(), shape: true, text: shape}
	if shapeOK {
		if d := s.w.decisions.get(shapeKey, now); d != nil {
			return d, true
		}
	}
	ctx, cancel := context.WithTimeout(ctx, s.w.cfg.PolicyTimeout)
	defer cancel()
	gen := s.w.decisions.generation()
	var d policyv1.Decision
	err := bus.Request(ctx, s.w.cfg.Conn.NC, bus.APIPolicyEvaluate, &policyv1.EvaluateRequest{
		Principal: s.principal, Target: s.targetRef, SessionId: s.id,
		// Decided with grants at least as current as this worker has seen.
		MinGrantsRevision: s.w.approvals.GrantRevision(),
		Command:           &policyv1.EvaluateRequest_Sql{Sql: &policyv1.SQLCommand{Text: text}},
	}, &d)
	if err != nil {
		s.w.cfg.Log.Warn().Err(err).Str("session", s.id).Msg("no policy decision; denying")
		return &policyv1.Decision{Action: "deny", Rule: rulePolicyUnavailable, Reason: "the policy service did not answer; nothing runs without a decision"}, false
	}
	if c := d.GetCache(); c.GetCacheable() {
		s.w.decisions.put(exact, &d, now, gen)
		if shapeOK && c.GetShapeCacheable() && c.GetShape() == shape {
			s.w.decisions.put(shapeKey, &d, now, gen)
		}
	}
	return &d, false
}

// readOnly reports whether every statement only reads, so that its result
// (rather than the statement) may wait for the record to be durable.
func readOnly(d *policyv1.Decision) bool {
	if len(d.GetStatements()) == 0 {
		return false
	}
	for _, st := range d.GetStatements() {
		if st.GetKind() != "read" {
			return false
		}
		for _, f := range st.GetFlags() {
			switch f {
			case "side_effect_function", "lock", "explain_analyze", "cte_write", "select_into", "dynamic_sql":
				return false
			}
		}
	}
	return true
}
