package cli

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"sluice.dev/sluice/libs/devissuer"
)

func TestConnectListensOnLoopbackUnlessTold(t *testing.T) {
	for addr, want := range map[string]struct{ remote, refused bool }{
		"127.0.0.1:0":    {},
		"[::1]:5432":     {},
		"localhost:5432": {},
		":5432":          {remote: true, refused: true}, // every interface: the easy mistake
		"0.0.0.0:5432":   {remote: true, refused: true},
		"10.1.2.3:5432":  {remote: true, refused: true},
	} {
		remote, err := checkListen(addr, false)
		assert.Equal(t, want.remote, remote, addr)
		assert.Equal(t, want.refused, err != nil, addr)
		remote, err = checkListen(addr, true)
		assert.Equal(t, want.remote, remote, addr)
		assert.NoError(t, err, addr)
	}
}

func TestTokenExpiryComesFromTheToken(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	iss := &devissuer.Issuer{URL: "http://127.0.0.1/oidc", Audience: "sluice", Key: key}
	tok, err := iss.Mint(devissuer.Claims{Subject: "alice", TTL: 10 * time.Minute})
	require.NoError(t, err)
	assert.WithinDuration(t, time.Now().Add(10*time.Minute), tokenExpiry(tok), 2*time.Second)
	assert.True(t, tokenExpiry("opaque").IsZero())
	assert.True(t, tokenExpiry("a.!!.c").IsZero())
}

// Sessions share a token while it is in the first third of its lifetime;
// a renewal gets one that ends later than the session, or an error that
// names the token source.
func TestTokenCache(t *testing.T) {
	t.Setenv("SLUICE_TOKEN", "")
	t.Setenv("SLUICE_CLIENT_ID", "")
	const life = 900 * time.Millisecond
	calls := 0
	fixed := false
	var last time.Time
	c := &tokenCache{source: func(context.Context) (string, time.Time, error) {
		if !fixed || calls == 0 {
			last = time.Now().Add(life)
		}
		calls++
		return "t", last, nil
	}}
	ctx := context.Background()
	_, exp1, err := c.get(ctx, time.Now())
	require.NoError(t, err)
	_, exp2, err := c.get(ctx, time.Now())
	require.NoError(t, err)
	assert.Equal(t, 1, calls, "shared while fresh")
	assert.Equal(t, exp1, exp2)
	_, exp3, err := c.get(ctx, exp1)
	require.NoError(t, err)
	assert.Equal(t, 2, calls, "a renewal needs a token that ends later")
	assert.True(t, exp3.After(exp1))

	fixed = true // a source that keeps giving the same token ($SLUICE_TOKEN, an old login)
	_, _, err = c.get(ctx, exp3)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "sluice login")
	assert.Equal(t, renewalTime(time.Unix(0, 0), time.Unix(90, 0)), time.Unix(60, 0), "renewed at two thirds of the lifetime")
}
