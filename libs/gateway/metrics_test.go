package gateway

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"

	"sluice.dev/sluice/libs/testkit"
	commonv1 "sluice.dev/sluice/proto/sluice/common/v1"
	policyv1 "sluice.dev/sluice/proto/sluice/policy/v1"
)

type countedSession struct{ id string }

func (s countedSession) ID() string              { return s.id }
func (s countedSession) CallerToken() string     { return "" }
func (s countedSession) PrincipalKey() [16]byte  { return [16]byte{} }
func (s countedSession) End(_ EndCode, _ string) {}

// TestKernelCounts: sessions, decisions (cached or not, and the deny made
// without a policy service) and a hold that could not be opened are
// counted under the kernel's protocol.
func TestKernelCounts(t *testing.T) {
	_, conn := testkit.NATS(t)
	const protocol = "metrics-test"
	k := New(Config{Conn: conn, Protocol: protocol, PolicyTimeout: time.Second})
	ctx := context.Background()

	a, b := countedSession{"a"}, countedSession{"b"}
	k.Register(a)
	k.Register(b)
	k.Unregister(a)
	k.Unregister(a) // already gone: not counted again
	assert.Equal(t, 2.0, testutil.ToFloat64(sessionsStarted.WithLabelValues(protocol)))
	assert.Equal(t, 1.0, testutil.ToFloat64(sessionsActive.WithLabelValues(protocol)))

	req := func() *policyv1.EvaluateRequest {
		return &policyv1.EvaluateRequest{Target: &commonv1.Target{Name: "db"}}
	}
	// No policy service answers: denied, and counted.
	d, cached := k.Decide(ctx, req(), [16]byte{1}, "DELETE FROM t", nil)
	assert.False(t, cached)
	assert.Equal(t, RulePolicyUnavailable, d.GetRule())
	assert.Equal(t, 1.0, testutil.ToFloat64(decisions.WithLabelValues(protocol, "deny", RulePolicyUnavailable)))

	// A cached decision counts as well.
	allow := &policyv1.Decision{Action: "allow", Rule: "reads", Cache: &policyv1.Cache{Cacheable: true, TtlMs: 60000}}
	k.Decisions.Put(CacheKey{Principal: [16]byte{1}, Target: "db", Text: "SELECT 1"}, allow, time.Now(), k.Decisions.Generation())
	for range 2 {
		_, cached = k.Decide(ctx, req(), [16]byte{1}, "SELECT 1", nil)
		assert.True(t, cached)
	}
	assert.Equal(t, 2.0, testutil.ToFloat64(decisions.WithLabelValues(protocol, "allow", "reads")))

	// No approvals service answers: the hold is refused, and counted.
	id, refusal := k.OpenHold(ctx, HoldRequest{SessionID: "b", Target: "db", Command: "DELETE FROM t", Hash: "h",
		Decision: &policyv1.Decision{Action: "hold", Rule: "writes", Approvers: []string{"dba"}}})
	assert.Empty(t, id)
	assert.NotEmpty(t, refusal)
	assert.Equal(t, 1.0, testutil.ToFloat64(holds.WithLabelValues(protocol, "refused")))
	assert.Equal(t, 0.0, testutil.ToFloat64(holds.WithLabelValues(protocol, "approved")))
}
