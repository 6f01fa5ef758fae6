package gateway

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/testkit"
	policyv1 "sluice.dev/sluice/proto/sluice/policy/v1"
)

// TestSlowHandshakesCannotTakeEverySlot: connections still authenticating
// are bounded by MaxStarting; beyond it a new one is closed at once, and a
// connection that authenticated frees its place.
func TestSlowHandshakesCannotTakeEverySlot(t *testing.T) {
	_, conn := testkit.NATS(t)
	k := New(Config{Conn: conn, Protocol: "test", MaxStarting: 2, MaxSessions: 10})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	authenticate := make(chan struct{})
	go func() {
		_ = k.Serve(ctx, ln, func(ctx context.Context, c net.Conn, full bool) {
			select {
			case <-authenticate: // this one authenticates
				Started(ctx)
			case <-ctx.Done():
				return
			}
			<-ctx.Done()
		})
	}()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", ln.Addr().String())
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		return c
	}
	// closedSoon: the server closed c (a read ends with an error other
	// than the deadline).
	closedSoon := func(c net.Conn) bool {
		_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		_, err := c.Read(make([]byte, 1))
		var ne net.Error
		return err != nil && !(errors.As(err, &ne) && ne.Timeout())
	}
	a, b := dial(), dial()
	time.Sleep(100 * time.Millisecond)
	c := dial()
	assert.True(t, closedSoon(c), "a third connection still authenticating is refused")
	assert.False(t, closedSoon(a), "the first two wait")
	assert.False(t, closedSoon(b))
	authenticate <- struct{}{} // one of them authenticates
	time.Sleep(100 * time.Millisecond)
	d := dial()
	assert.False(t, closedSoon(d), "its place is free again")
}

// A decision its caller gave up waiting for (the client left, the request
// was cancelled) is not the policy service failing: it is denied under a
// rule of its own, and the count of builtin:policy-unavailable, which pages
// an operator, stays as it was. A service that does not answer in time is
// still policy-unavailable.
func TestAGivenUpDecisionIsNotPolicyUnavailable(t *testing.T) {
	_, conn := testkit.NATS(t)
	k := New(Config{Conn: conn, Protocol: "test", PolicyTimeout: 300 * time.Millisecond})
	silent, err := conn.NC.Subscribe(bus.APIPolicyEvaluate, func(*nats.Msg) {}) // never answers
	require.NoError(t, err)
	defer silent.Unsubscribe() //nolint:errcheck
	unavailable := func() float64 {
		return testutil.ToFloat64(k.metrics.decisions.WithLabelValues("deny", RulePolicyUnavailable))
	}
	before := unavailable()

	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	d, _ := k.Decide(ctx, &policyv1.EvaluateRequest{SessionId: "s"}, [16]byte{}, "SELECT 1", nil)
	assert.Equal(t, "deny", d.GetAction())
	assert.Equal(t, RuleGivenUp, d.GetRule())
	assert.Equal(t, before, unavailable())

	d, _ = k.Decide(context.Background(), &policyv1.EvaluateRequest{SessionId: "s"}, [16]byte{}, "SELECT 1", nil)
	assert.Equal(t, "deny", d.GetAction())
	assert.Equal(t, RulePolicyUnavailable, d.GetRule())
	assert.Equal(t, before+1, unavailable())
}
