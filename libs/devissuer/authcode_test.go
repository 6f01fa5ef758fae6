package devissuer

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func pkce(verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// TestAuthorizationCodeWithPKCE: a code is issued only to a registered
// redirect URI with an S256 challenge, is redeemed once, by its client,
// with the same redirect URI and the matching verifier.
func TestAuthorizationCodeWithPKCE(t *testing.T) {
	key, err := LoadOrCreateKey(filepath.Join(t.TempDir(), "issuer.key"))
	require.NoError(t, err)
	const back = "http://127.0.0.1:8080/console/callback"
	iss := &Issuer{URL: "http://issuer.test", Audience: "sluice", Key: key,
		Clients: []Client{{ID: "console", RedirectURIs: []string{back}}, {ID: "other", RedirectURIs: []string{"http://evil.test/cb"}}}}
	srv := httptest.NewServer(iss.Handler())
	defer srv.Close()
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	verifier := strings.Repeat("v", 50)
	base := url.Values{"response_type": {"code"}, "client_id": {"console"}, "redirect_uri": {back}, "state": {"s1"},
		"code_challenge": {pkce(verifier)}, "code_challenge_method": {"S256"}}

	// Refused before any redirect: unknown client, unregistered URI, no
	// PKCE, plain PKCE, another response type.
	for name, change := range map[string]func(url.Values){
		"unknown client":    func(v url.Values) { v.Set("client_id", "nobody") },
		"other redirect":    func(v url.Values) { v.Set("redirect_uri", "http://evil.test/cb") },
		"no challenge":      func(v url.Values) { v.Del("code_challenge") },
		"plain challenge":   func(v url.Values) { v.Set("code_challenge_method", "plain") },
		"implicit response": func(v url.Values) { v.Set("response_type", "token") },
	} {
		v := url.Values{}
		for k, x := range base {
			v[k] = append([]string(nil), x...)
		}
		change(v)
		resp, err := noRedirect.Get(srv.URL + "/authorize?" + v.Encode())
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusBadRequest, resp.StatusCode, name)
		v.Set("sub", "mallory")
		v.Set("action", "approve")
		resp, err = noRedirect.PostForm(srv.URL+"/authorize", v)
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusBadRequest, resp.StatusCode, name+" (submitted)")
	}

	signIn := func() string {
		v := url.Values{}
		for k, x := range base {
			v[k] = x
		}
		v.Set("sub", "bob")
		v.Set("groups", "approvers, auditors")
		v.Set("action", "approve")
		resp, err := noRedirect.PostForm(srv.URL+"/authorize", v)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusFound, resp.StatusCode)
		loc, err := url.Parse(resp.Header.Get("Location"))
		require.NoError(t, err)
		require.Equal(t, back, loc.Scheme+"://"+loc.Host+loc.Path)
		assert.Equal(t, "s1", loc.Query().Get("state"))
		return loc.Query().Get("code")
	}
	redeem := func(form url.Values) (int, map[string]any) {
		resp, err := http.PostForm(srv.URL+"/token", form)
		require.NoError(t, err)
		defer resp.Body.Close()
		var out map[string]any
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
		return resp.StatusCode, out
	}
	good := func(code string) url.Values {
		return url.Values{"grant_type": {"authorization_code"}, "code": {code}, "client_id": {"console"}, "redirect_uri": {back}, "code_verifier": {verifier}}
	}

	for name, change := range map[string]func(url.Values){
		"wrong verifier":     func(v url.Values) { v.Set("code_verifier", strings.Repeat("w", 50)) },
		"no verifier":        func(v url.Values) { v.Del("code_verifier") },
		"another client":     func(v url.Values) { v.Set("client_id", "other") },
		"another redirect":   func(v url.Values) { v.Set("redirect_uri", "http://127.0.0.1:8080/elsewhere") },
		"a code never given": func(v url.Values) { v.Set("code", "made-up") },
	} {
		form := good(signIn())
		change(form)
		status, out := redeem(form)
		assert.Equal(t, http.StatusBadRequest, status, name)
		assert.Equal(t, "invalid_grant", out["error"], name)
		// A failed redemption burns the code.
		if form.Get("code") != "made-up" {
			status, _ = redeem(good(form.Get("code")))
			assert.Equal(t, http.StatusBadRequest, status, name+": the code is spent")
		}
	}

	code := signIn()
	status, out := redeem(good(code))
	require.Equal(t, http.StatusOK, status, out)
	tok, _ := out["access_token"].(string)
	require.NotEmpty(t, tok)
	status, out = redeem(good(code))
	assert.Equal(t, http.StatusBadRequest, status, "a code is single use")
	assert.Equal(t, "invalid_grant", out["error"])

	// Cancel sends the client an error, not a code.
	v := url.Values{}
	for k, x := range base {
		v[k] = x
	}
	v.Set("action", "deny")
	resp, err := noRedirect.PostForm(srv.URL+"/authorize", v)
	require.NoError(t, err)
	resp.Body.Close()
	loc, _ := url.Parse(resp.Header.Get("Location"))
	assert.Equal(t, "access_denied", loc.Query().Get("error"))
	assert.Empty(t, loc.Query().Get("code"))
}
