package gateway

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"sluice.dev/sluice/libs/testkit"
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
