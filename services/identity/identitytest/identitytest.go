// Package identitytest runs the real identity service for other packages'
// tests, in front of a development issuer served over HTTP in the test, and
// mints access tokens it accepts: services authorize callers by their
// tokens, so their tests need both.
package identitytest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/devissuer"
	"sluice.dev/sluice/services/identity"
)

// IdP is a development issuer with the identity service in front of it.
type IdP struct {
	Issuer *devissuer.Issuer
	t      testing.TB
}

// Start serves a development issuer and runs the identity service on conn
// with it as the bootstrap provider, until ctx ends.
func Start(ctx context.Context, t testing.TB, conn *bus.Conn) *IdP {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	iss := &devissuer.Issuer{Audience: "sluice", Key: key}
	srv := httptest.NewServer(http.StripPrefix("/oidc", iss.Handler()))
	t.Cleanup(srv.Close)
	iss.URL = srv.URL + "/oidc"
	go func() {
		_ = identity.Run(ctx, identity.Config{Conn: conn, Log: zerolog.Nop(), Provider: identity.Provider{Issuer: iss.URL, Audience: "sluice"}})
	}()
	return &IdP{Issuer: iss, t: t}
}

// Token mints an access token for a human subject in groups.
func (i *IdP) Token(sub string, groups ...string) string {
	return i.Mint(devissuer.Claims{Subject: sub, Email: sub + "@example.com", Groups: groups})
}

// Mint mints an access token with the given claims.
func (i *IdP) Mint(c devissuer.Claims) string {
	i.t.Helper()
	tok, err := i.Issuer.Mint(c)
	require.NoError(i.t, err)
	return tok
}

// As returns ctx carrying tok as the caller of the requests made with it.
func As(ctx context.Context, tok string) context.Context { return bus.WithCallerToken(ctx, tok) }
