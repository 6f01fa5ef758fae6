package identity_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"sluice.dev/sluice/libs/authn"
	"sluice.dev/sluice/libs/devissuer"
	"sluice.dev/sluice/libs/testkit"
	"sluice.dev/sluice/services/identity"
)

type idp struct {
	iss       *devissuer.Issuer
	srv       *httptest.Server
	jwksCalls atomic.Int32
}

// newIDP serves a real issuer (discovery + JWKS) over HTTP.
func newIDP(t *testing.T) *idp {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	p := &idp{iss: &devissuer.Issuer{Audience: "sluice", Key: key}}
	h := http.StripPrefix("/oidc", p.iss.Handler())
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/jwks") {
			p.jwksCalls.Add(1)
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(p.srv.Close)
	p.iss.URL = p.srv.URL + "/oidc"
	return p
}

func (p *idp) provider() identity.Provider {
	return identity.Provider{Issuer: p.iss.URL, Audience: "sluice", JWKSRefreshInterval: time.Hour}
}

func (p *idp) mint(t *testing.T, c devissuer.Claims) string {
	t.Helper()
	tok, err := p.iss.Mint(c)
	require.NoError(t, err)
	return tok
}

func b64(v any) string {
	b, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(b)
}

func signWith(t *testing.T, key *ecdsa.PrivateKey, kid, typ string, claims map[string]any) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithType(jose.ContentType(typ)).WithHeader("kid", kid)
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, opts)
	require.NoError(t, err)
	tok, err := jwt.Signed(s).Claims(claims).Serialize()
	require.NoError(t, err)
	return tok
}

func TestVerifyRefusals(t *testing.T) {
	p := newIDP(t)
	v := identity.NewVerifier(p.provider(), nil)
	ctx := context.Background()
	now := time.Now()
	good := map[string]any{"iss": p.iss.URL, "sub": "alice", "aud": "sluice", "exp": now.Add(time.Hour).Unix(), "iat": now.Unix()}
	with := func(k string, val any) map[string]any {
		m := map[string]any{}
		for a, b := range good {
			m[a] = b
		}
		m[k] = val
		return m
	}
	kid := devissuer.KeyID(p.iss.Key)
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pubDER, _ := x509.MarshalPKIXPublicKey(&p.iss.Key.PublicKey)
	hsHeader := b64(map[string]string{"alg": "HS256", "typ": "JWT", "kid": kid})
	hsBody := b64(good)
	mac := hmac.New(sha256.New, pubDER)
	mac.Write([]byte(hsHeader + "." + hsBody))
	hs256 := hsHeader + "." + hsBody + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))

	tests := []struct {
		name, token, code, reason string
	}{
		{"empty", "", identity.CodeMissing, "no token"},
		{"garbage", "not-a-jwt", identity.CodeMalformed, "three"},
		{"expired", p.mint(t, devissuer.Claims{Subject: "alice", TTL: -time.Minute}), identity.CodeExpired, "expired at"},
		{"wrong audience", p.mint(t, devissuer.Claims{Subject: "alice", Audience: "someone-else"}), identity.CodeWrongAudience, `"sluice"`},
		{"wrong issuer", signWith(t, p.iss.Key, kid, "at+jwt", with("iss", "https://evil.example")), identity.CodeWrongIssuer, "evil.example"},
		{"alg none", b64(map[string]string{"alg": "none"}) + "." + b64(good) + ".", identity.CodeAlgorithm, "alg none"},
		{"hs256 confusion", hs256, identity.CodeAlgorithm, "HMAC"},
		{"unknown key", signWith(t, otherKey, "not-a-known-kid", "at+jwt", good), identity.CodeUnknownKey, "key id"},
		{"bad signature", signWith(t, otherKey, kid, "at+jwt", good), identity.CodeBadSignature, "signature"},
		{"id token", signWith(t, p.iss.Key, kid, "JWT", with("nonce", "n-0S6_WzA2Mj")), identity.CodeNotAccessToken, "ID token"},
		{"not yet valid", signWith(t, p.iss.Key, kid, "at+jwt", with("nbf", now.Add(time.Hour).Unix())), identity.CodeNotYetValid, "not valid before"},
		{"groups not strings", signWith(t, p.iss.Key, kid, "at+jwt", with("groups", []any{1, 2})), identity.CodeClaimsInvalid, "groups"},
		{"no subject", signWith(t, p.iss.Key, kid, "at+jwt", with("sub", "")), identity.CodeClaimsInvalid, "subject"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pr, f := v.Verify(ctx, tc.token)
			require.Nil(t, pr)
			require.NotNil(t, f)
			assert.Equal(t, tc.code, f.Code)
			assert.Contains(t, f.Reason, tc.reason)
		})
	}
}

func TestVerifyPrincipal(t *testing.T) {
	p := newIDP(t)
	v := identity.NewVerifier(p.provider(), nil)
	ctx := context.Background()

	pr, f := v.Verify(ctx, p.mint(t, devissuer.Claims{Subject: "alice", Email: "alice@example.com", Groups: []string{"engineers", "dba"}}))
	require.Nil(t, f)
	assert.Equal(t, "alice", pr.Subject)
	assert.Equal(t, "alice@example.com", pr.Email)
	assert.Equal(t, []string{"engineers", "dba"}, pr.Groups)
	assert.False(t, pr.Machine)
	assert.Equal(t, p.iss.URL, pr.Issuer)

	pr, f = v.Verify(ctx, p.mint(t, devissuer.Claims{Subject: "ci-bot", Groups: []string{"engineers"}, Machine: true}))
	require.Nil(t, f)
	assert.True(t, pr.Machine)

	// Nested groups claim (Keycloak style) and a configured machine claim.
	prov := p.provider()
	prov.GroupsClaim = "realm_access.roles"
	prov.MachineClaim = "is_bot"
	v2 := identity.NewVerifier(prov, nil)
	tok := p.mint(t, devissuer.Claims{Subject: "kc", Extra: map[string]any{"realm_access": map[string]any{"roles": []string{"ops"}}, "is_bot": true}})
	pr, f = v2.Verify(ctx, tok)
	require.Nil(t, f)
	assert.Equal(t, []string{"ops"}, pr.Groups)
	assert.True(t, pr.Machine)
}

func TestUnknownKeyRefreshIsRateLimited(t *testing.T) {
	p := newIDP(t)
	prov := p.provider()
	prov.JWKSRefreshInterval = time.Hour
	v := identity.NewVerifier(prov, nil)
	ctx := context.Background()
	_, f := v.Verify(ctx, p.mint(t, devissuer.Claims{Subject: "alice"}))
	require.Nil(t, f)
	base := p.jwksCalls.Load()

	now := time.Now().Unix()
	for i := 0; i < 50; i++ {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tok := signWith(t, k, "random-"+string(rune('a'+i%26))+time.Now().String(), "at+jwt",
			map[string]any{"iss": p.iss.URL, "sub": "x", "aud": "sluice", "exp": now + 60})
		_, f := v.Verify(ctx, tok)
		require.NotNil(t, f)
		assert.Equal(t, identity.CodeUnknownKey, f.Code)
	}
	// Fifty unknown key ids cost at most one JWKS fetch within the interval.
	assert.LessOrEqual(t, p.jwksCalls.Load()-base, int32(1))
}

func TestKeyRotation(t *testing.T) {
	p := newIDP(t)
	prov := p.provider()
	prov.JWKSRefreshInterval = time.Millisecond
	v := identity.NewVerifier(prov, nil)
	ctx := context.Background()
	_, f := v.Verify(ctx, p.mint(t, devissuer.Claims{Subject: "alice"}))
	require.Nil(t, f)

	// The issuer rotates its key: a token signed with the new key verifies
	// after one refresh, and the old key stops being trusted.
	newKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	oldKey := p.iss.Key
	p.iss.Key = newKey
	time.Sleep(5 * time.Millisecond) // let the refresh interval pass
	_, f = v.Verify(ctx, p.mint(t, devissuer.Claims{Subject: "alice"}))
	require.Nil(t, f)
	old := signWith(t, oldKey, devissuer.KeyID(oldKey), "at+jwt", map[string]any{"iss": p.iss.URL, "sub": "a", "aud": "sluice", "exp": time.Now().Add(time.Minute).Unix()})
	time.Sleep(5 * time.Millisecond)
	_, f = v.Verify(ctx, old)
	require.NotNil(t, f)
	assert.Equal(t, identity.CodeUnknownKey, f.Code)
}

func TestServiceOverNATS(t *testing.T) {
	p := newIDP(t)
	_, conn := testkit.NATS(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	svc := identity.New(identity.Config{Conn: conn, Provider: p.provider()})
	// The control bucket is provisioned by every process at start.
	require.NoError(t, provision(ctx, conn))
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()

	// Two replicas in the same queue group share the work.
	conn2 := testkit.Connect(t, conn.NC.ConnectedUrl())
	go func() { _ = identity.New(identity.Config{Conn: conn2, Provider: p.provider()}).Run(ctx) }()

	c := authn.New(conn.NC)
	tok := p.mint(t, devissuer.Claims{Subject: "alice", Groups: []string{"engineers"}})
	testkit.Eventually(t, 5*time.Second, func() error {
		_, e := c.Verify(ctx, tok)
		if e != nil {
			return assert.AnError
		}
		return nil
	})
	pr, e := c.Verify(ctx, tok)
	require.Nil(t, e)
	assert.Equal(t, "alice", pr.Subject)

	_, e = c.Verify(ctx, p.mint(t, devissuer.Claims{Subject: "alice", TTL: -time.Second}))
	require.NotNil(t, e)
	assert.Equal(t, identity.CodeExpired, e.Code)
	cancel()
	require.NoError(t, <-done)
}
