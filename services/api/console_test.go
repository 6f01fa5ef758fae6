package api

import (
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestSealedCookies: a cookie opens only with the key that sealed it, under
// the name it was sealed for, and unaltered.
func TestSealedCookies(t *testing.T) {
	k, err := newSealer(nil)
	require.NoError(t, err)
	v, err := k.seal(sessionCookie, consoleSessionState{Token: "tok", CSRF: "c"})
	require.NoError(t, err)
	var st consoleSessionState
	require.NoError(t, k.open(sessionCookie, v, &st))
	assert.Equal(t, "tok", st.Token)

	assert.Error(t, k.open(loginCookie, v, &st), "a session cookie is not a login cookie")
	other, _ := newSealer(nil)
	assert.Error(t, other.open(sessionCookie, v, &st), "another key (another deployment) cannot open it")
	b := []byte(v)
	b[len(b)/2] ^= 1
	assert.Error(t, k.open(sessionCookie, string(b), &st), "an altered cookie is refused")
	assert.Error(t, k.open(sessionCookie, "", &st))
	_, err = newSealer([]byte("short"))
	assert.Error(t, err, "a key that is not 32 bytes is refused")
}

// TestLocalPath: after sign-in the browser goes only to a console page.
func TestLocalPath(t *testing.T) {
	for in, want := range map[string]string{
		"/console/":                "/console/",
		"/console/#/sessions":      "/console/#/sessions",
		"https://evil.test/":       "/console/",
		"//evil.test/console/":     "/console/",
		"/console/\r\nSet-Cookie:": "/console/",
		"/api/v1/whoami":           "/console/",
		"":                         "/console/",
	} {
		assert.Equal(t, want, localPath(in), in)
	}
}

// TestCSRF: with the console's cookie, a request that changes something
// needs the session's token and, when the browser names one, the console's
// origin; reads need neither.
func TestCSRF(t *testing.T) {
	s := &Server{cfg: Config{ConsoleURL: "https://sluice.example.com"}}
	st := consoleSessionState{CSRF: "secret"}
	cases := []struct {
		method, origin, token string
		ok                    bool
	}{
		{"GET", "", "", true},
		{"POST", "", "secret", true},
		{"POST", "https://sluice.example.com", "secret", true},
		{"POST", "", "", false},
		{"POST", "", "guess", false},
		{"POST", "https://evil.test", "secret", false},
		{"DELETE", "", "", false},
	}
	for _, c := range cases {
		r := httptest.NewRequest(c.method, "https://sluice.example.com/api/v1/grants", nil)
		if c.origin != "" {
			r.Header.Set("Origin", c.origin)
		}
		if c.token != "" {
			r.Header.Set(CSRFHeader, c.token)
		}
		assert.Equal(t, c.ok, s.csrfOK(r, st), "%+v", c)
	}
}
