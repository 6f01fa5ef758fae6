package gateway

import (
	"crypto/sha256"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	commonv1 "sluice.dev/sluice/proto/sluice/common/v1"
	policyv1 "sluice.dev/sluice/proto/sluice/policy/v1"
)

// DecisionCache reuses decisions per principal, target and command key (a
// protocol's exact command, or a shape when the policy service allowed it)
// for one policy revision. A new revision empties it.
type DecisionCache struct {
	mu       sync.RWMutex
	revision uint64
	// gen counts flushes: a decision asked for before a flush (a grant
	// changed meanwhile) is not stored after it.
	gen uint64
	max int
	m   map[CacheKey]cached
}

// CacheKey names a decision: who, where, and the protocol's key for the
// command (Shape marks keys that stand for a statement shape).
type CacheKey struct {
	Principal [16]byte
	Target    string
	Shape     bool
	Text      string
}

type cached struct {
	d       *policyv1.Decision
	expires time.Time
}

// NewDecisionCache holds at most max decisions.
func NewDecisionCache(max int) *DecisionCache {
	return &DecisionCache{max: max, m: map[CacheKey]cached{}}
}

// SetRevision records the policy revision in force; older decisions go.
func (c *DecisionCache) SetRevision(rev uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if rev != c.revision {
		c.revision = rev
		c.m = map[CacheKey]cached{}
		c.gen++
	}
}

// Revision is the newest policy revision the cache has seen.
func (c *DecisionCache) Revision() uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.revision
}

// Flush forgets every decision.
func (c *DecisionCache) Flush() {
	c.mu.Lock()
	c.m = map[CacheKey]cached{}
	c.gen++
	c.mu.Unlock()
}

// Generation counts the times every decision was forgotten (a flush, a new
// policy revision): for Put, and for decisions a worker keeps beyond the
// cache (a prepared statement's), which hold only within one generation.
func (c *DecisionCache) Generation() uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.gen
}

// Get returns a decision still valid at now, or nil.
func (c *DecisionCache) Get(k CacheKey, now time.Time) *policyv1.Decision {
	c.mu.RLock()
	e, ok := c.m[k]
	c.mu.RUnlock()
	if !ok || now.After(e.expires) {
		return nil
	}
	return e.d
}

// Put stores d unless the cache was flushed since gen was read.
func (c *DecisionCache) Put(k CacheKey, d *policyv1.Decision, now time.Time, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen {
		return
	}
	if d.GetRevision() > c.revision {
		c.revision = d.GetRevision()
		c.m = map[CacheKey]cached{}
		c.gen++
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

// PrincipalKey identifies everything about a principal a policy can see.
func PrincipalKey(p *commonv1.Principal) [16]byte {
	q := &commonv1.Principal{Subject: p.GetSubject(), Email: p.GetEmail(), Groups: p.GetGroups(), Issuer: p.GetIssuer(), Machine: p.GetMachine(), ClientId: p.GetClientId()}
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(q)
	sum := sha256.Sum256(b)
	var k [16]byte
	copy(k[:], sum[:])
	return k
}
