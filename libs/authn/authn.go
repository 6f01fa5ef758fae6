// Package authn is the client side of the identity service: it asks
// sluice.api.identity.token.verify to verify a token and caches the verified
// principal until the token expires (never longer than MaxAge), so that a
// worker verifies each token once. Failures are not cached, and the cache
// is keyed by a hash of the token: raw tokens are never kept.
//
// A client that follows the identity configuration (SetIdentityDigest)
// trusts only answers made under the configuration it knows, and forgets
// every cached verification the moment the configuration changes: a token
// that the new configuration refuses stops working at once.
package authn

import (
	"context"
	"crypto/sha256"
	"errors"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"

	"sluice.dev/sluice/libs/bus"
	commonv1 "sluice.dev/sluice/proto/sluice/common/v1"
	identityv1 "sluice.dev/sluice/proto/sluice/identity/v1"
)

// CodeUnavailable is returned when the identity service cannot be reached.
const CodeUnavailable = "unavailable"

// Client verifies tokens through the identity service.
type Client struct {
	nc *nats.Conn
	// MaxEntries bounds the cache; default 65536.
	MaxEntries int
	// MaxAge bounds how long a verification is reused; default 5 minutes.
	MaxAge time.Duration
	// Timeout bounds one verification round trip; default 5 seconds.
	Timeout time.Duration

	mu    sync.Mutex
	cache map[[32]byte]entry
	now   func() time.Time
	// digest is the identity configuration answers must be made under;
	// following says whether it is known (SetIdentityDigest was called).
	digest    string
	following bool
	// gen counts configuration changes (Generation).
	gen uint64
}

type entry struct {
	p       *commonv1.Principal
	expires time.Time
}

// New returns a client on nc.
func New(nc *nats.Conn) *Client {
	return &Client{nc: nc, cache: map[[32]byte]entry{}, now: time.Now}
}

// SetIdentityDigest tells the client which identity configuration is in
// force (controlstate.View.IdentityDigest). When it changes, every cached
// verification is forgotten; from then on only answers made under it count.
// It reports whether the digest changed.
func (c *Client) SetIdentityDigest(d string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	changed := !c.following || c.digest != d
	c.digest, c.following = d, true
	if changed {
		clear(c.cache)
		c.gen++
	}
	return changed
}

// Generation counts identity configuration changes: a verification made
// while it had one value may be stale once it has another.
func (c *Client) Generation() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

// Verify returns the token's principal, or a client-safe error.
func (c *Client) Verify(ctx context.Context, token string) (*commonv1.Principal, *commonv1.Error) {
	if !utf8.ValidString(token) {
		// Not a JWT, and not something a request can carry.
		return nil, &commonv1.Error{Code: "malformed", Message: "a token must be a signed JWT (three dot-separated parts)"}
	}
	key := sha256.Sum256([]byte(token))
	now := c.now()
	c.mu.Lock()
	if e, ok := c.cache[key]; ok {
		if now.Before(e.expires) {
			c.mu.Unlock()
			return e.p, nil
		}
		delete(c.cache, key)
	}
	c.mu.Unlock()

	timeout := c.Timeout
	if timeout == 0 {
		timeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var resp identityv1.VerifyTokenResponse
	for {
		resp.Reset()
		err := bus.RequestIdempotent(ctx, c.nc, bus.APIIdentityVerify, &identityv1.VerifyTokenRequest{Token: token}, &resp)
		if err != nil {
			msg := "the identity service is unavailable"
			if errors.Is(err, bus.ErrNoResponders) {
				msg = "no identity service is running"
			}
			return nil, &commonv1.Error{Code: CodeUnavailable, Message: msg}
		}
		c.mu.Lock()
		want, following := c.digest, c.following
		c.mu.Unlock()
		if !following || resp.GetIdentityDigest() == want {
			break
		}
		// The identity service answered under another configuration than
		// the one in force here: it has not caught up (or this client has
		// not). Ask again shortly; never trust the stale answer.
		select {
		case <-ctx.Done():
			return nil, &commonv1.Error{Code: CodeUnavailable, Message: "the identity service has not applied the current identity configuration"}
		case <-time.After(25 * time.Millisecond):
		}
	}
	if resp.Error != nil {
		return nil, resp.Error
	}
	p := resp.GetPrincipal()
	if p == nil {
		return nil, &commonv1.Error{Code: CodeUnavailable, Message: "the identity service gave no answer"}
	}
	expires := now.Add(c.maxAge())
	if exp := p.GetExpiresAt().AsTime(); p.GetExpiresAt() != nil && exp.Before(expires) {
		expires = exp
	}
	if !now.Before(expires) {
		return nil, &commonv1.Error{Code: "token_expired", Message: "the token expired"}
	}
	c.mu.Lock()
	if c.following && c.digest != resp.GetIdentityDigest() {
		// The configuration changed while this answer was in flight.
		c.mu.Unlock()
		return nil, &commonv1.Error{Code: CodeUnavailable, Message: "the identity configuration changed during verification; retry"}
	}
	if len(c.cache) >= c.maxEntries() {
		c.evict(now)
	}
	c.cache[key] = entry{p: p, expires: expires}
	c.mu.Unlock()
	return p, nil
}

// Caller verifies the access token that the request being served carried
// (bus.CallerToken): the principal a service authorizes. A request without
// one is refused.
func (c *Client) Caller(ctx context.Context) (*commonv1.Principal, *commonv1.Error) {
	tok := bus.CallerToken(ctx)
	if tok == "" {
		return nil, &commonv1.Error{Code: "unauthenticated", Message: "the request carries no caller token"}
	}
	return c.Verify(ctx, tok)
}

func (c *Client) maxAge() time.Duration {
	if c.MaxAge > 0 {
		return c.MaxAge
	}
	return 5 * time.Minute
}

func (c *Client) maxEntries() int {
	if c.MaxEntries > 0 {
		return c.MaxEntries
	}
	return 65536
}

// evict drops expired entries, then arbitrary ones until a quarter is free.
func (c *Client) evict(now time.Time) {
	for k, e := range c.cache {
		if !now.Before(e.expires) {
			delete(c.cache, k)
		}
	}
	for k := range c.cache {
		if len(c.cache) < c.maxEntries()*3/4 {
			return
		}
		delete(c.cache, k)
	}
}
