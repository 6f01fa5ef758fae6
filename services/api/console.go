package api

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"sluice.dev/sluice/libs/authz"
	commonv1 "sluice.dev/sluice/proto/sluice/common/v1"
)

// The web console: a static page and a small script (console/), embedded,
// that use the JSON API under /api/v1 like the CLI does. The browser never
// holds a token: the API signs it in with the OIDC provider
// (authorization code with PKCE), keeps the access token in a sealed,
// HttpOnly cookie, and takes that cookie where the CLI sends a bearer
// token, with a CSRF token on every request that changes something.

//go:embed console
var consoleFiles embed.FS

const (
	sessionCookie = "sluice_console"
	loginCookie   = "sluice_console_login"
	// CSRFHeader carries the console session's CSRF token on every
	// request that is not GET or HEAD.
	CSRFHeader = "X-Sluice-CSRF"
	loginTTL   = 10 * time.Minute
)

// contentSecurityPolicy allows only the console's own script and style, no
// inline code, no framing, and forms that post back to the console.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// consoleHeaders are set on every console response.
func consoleHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
}

func (s *Server) consoleRoutes() {
	if s.cfg.ConsoleClientID == "" {
		s.mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
			consoleHeaders(w)
			writeError(w, http.StatusNotFound, "console_off", "the web console is off: start the API with --console-client-id (sluice dev turns it on)")
		})
		return
	}
	static, _ := fs.Sub(consoleFiles, "console")
	files := http.StripPrefix("/console/static/", http.FileServerFS(static))
	s.mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/console/", http.StatusFound)
	})
	s.mux.HandleFunc("GET /console/static/", func(w http.ResponseWriter, r *http.Request) {
		consoleHeaders(w)
		w.Header().Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
	index, err := consoleFiles.ReadFile("console/index.html")
	if err != nil {
		panic(err)
	}
	s.mux.HandleFunc("GET /console/", func(w http.ResponseWriter, r *http.Request) {
		consoleHeaders(w)
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write(index)
	})
	s.mux.HandleFunc("GET /console/login", s.consoleLogin)
	s.mux.HandleFunc("GET /console/callback", s.consoleCallback)
	s.mux.HandleFunc("POST /console/logout", s.consoleLogout)
	s.handle("GET /api/v1/console/session", "console_session", anyone, s.consoleSession)
}

// sealer encrypts and authenticates cookie values (AES-256-GCM; the
// cookie's name is the associated data, so one cookie cannot stand for
// another).
type sealer struct{ aead cipher.AEAD }

func newSealer(key []byte) (*sealer, error) {
	if len(key) == 0 {
		key = make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
	}
	if len(key) != 32 {
		return nil, fmt.Errorf("console key: want 32 bytes, got %d", len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &sealer{aead: aead}, nil
}

func (k *sealer) seal(name string, v any) (string, error) {
	plain, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	nonce := make([]byte, k.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(k.aead.Seal(nonce, nonce, plain, []byte(name))), nil
}

func (k *sealer) open(name, value string, v any) error {
	raw, err := base64.RawURLEncoding.DecodeString(value)
	if err != nil || len(raw) < k.aead.NonceSize() {
		return errors.New("malformed")
	}
	plain, err := k.aead.Open(nil, raw[:k.aead.NonceSize()], raw[k.aead.NonceSize():], []byte(name))
	if err != nil {
		return errors.New("not sealed by this console")
	}
	return json.Unmarshal(plain, v)
}

// consoleSessionState is the session cookie's content.
type consoleSessionState struct {
	Token   string `json:"t"`
	CSRF    string `json:"c"`
	Expires int64  `json:"e"`
}

// loginState is the sign-in cookie's content, between /console/login and
// the provider's redirect back.
type loginState struct {
	State, Verifier, Next string
	Expires               int64
}

func randomToken() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// consoleURL is the console's base URL as browsers reach it.
func (s *Server) consoleURL(r *http.Request) string {
	if s.cfg.ConsoleURL != "" {
		return strings.TrimSuffix(s.cfg.ConsoleURL, "/")
	}
	return "http://" + r.Host
}

func (s *Server) secureCookies(r *http.Request) bool {
	return r.TLS != nil || strings.HasPrefix(s.cfg.ConsoleURL, "https://")
}

// providerEndpoints are the OIDC provider's, from its discovery document.
type providerEndpoints struct {
	Authorization string `json:"authorization_endpoint"`
	Token         string `json:"token_endpoint"`
}

type discovery struct {
	mu  sync.Mutex
	at  time.Time
	eps providerEndpoints
}

func (s *Server) endpoints(ctx context.Context) (providerEndpoints, error) {
	d := &s.discovery
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.eps.Token != "" && time.Since(d.at) < 10*time.Minute {
		return d.eps, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(s.cfg.Issuer, "/")+"/.well-known/openid-configuration", nil)
	if err != nil {
		return providerEndpoints{}, err
	}
	resp, err := s.httpClient().Do(req)
	if err != nil {
		return providerEndpoints{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return providerEndpoints{}, fmt.Errorf("discovery: %s", resp.Status)
	}
	var eps providerEndpoints
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&eps); err != nil {
		return providerEndpoints{}, fmt.Errorf("discovery: %w", err)
	}
	if eps.Authorization == "" || eps.Token == "" {
		return providerEndpoints{}, errors.New("discovery: the provider names no authorization or token endpoint")
	}
	d.eps, d.at = eps, time.Now()
	return eps, nil
}

func (s *Server) httpClient() *http.Client {
	if s.cfg.HTTPClient != nil {
		return s.cfg.HTTPClient
	}
	return &http.Client{Timeout: 15 * time.Second}
}

// localPath keeps a post-sign-in destination inside the console.
func localPath(next string) string {
	if !strings.HasPrefix(next, "/console/") || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") {
		return "/console/"
	}
	return next
}

func (s *Server) consoleFail(w http.ResponseWriter, status int, code, reason string) {
	consoleHeaders(w)
	writeError(w, status, code, reason)
}

func (s *Server) consoleLogin(w http.ResponseWriter, r *http.Request) {
	eps, err := s.endpoints(r.Context())
	if err != nil {
		s.cfg.Log.Warn().Err(err).Str("issuer", s.cfg.Issuer).Msg("console sign-in: the OIDC provider cannot be discovered")
		s.consoleFail(w, http.StatusBadGateway, "provider_unavailable", "the identity provider cannot be reached: "+err.Error())
		return
	}
	st := loginState{State: randomToken(), Verifier: randomToken() + randomToken(), Next: localPath(r.URL.Query().Get("next")),
		Expires: time.Now().Add(loginTTL).Unix()}
	sealed, err := s.sealer.seal(loginCookie, st)
	if err != nil {
		s.consoleFail(w, http.StatusInternalServerError, "internal", "cannot start a sign-in")
		return
	}
	// Lax: the provider's redirect back is a top-level navigation from
	// another site, which must carry this cookie.
	http.SetCookie(w, &http.Cookie{Name: loginCookie, Value: sealed, Path: "/console/", MaxAge: int(loginTTL.Seconds()),
		HttpOnly: true, Secure: s.secureCookies(r), SameSite: http.SameSiteLaxMode})
	sum := sha256.Sum256([]byte(st.Verifier))
	u, err := url.Parse(eps.Authorization)
	if err != nil {
		s.consoleFail(w, http.StatusBadGateway, "provider_unavailable", "the provider's authorization endpoint is not a URL")
		return
	}
	q := u.Query()
	q.Set("response_type", "code")
	q.Set("client_id", s.cfg.ConsoleClientID)
	q.Set("redirect_uri", s.consoleURL(r)+"/console/callback")
	q.Set("scope", "openid profile email")
	q.Set("state", st.State)
	q.Set("code_challenge", base64.RawURLEncoding.EncodeToString(sum[:]))
	q.Set("code_challenge_method", "S256")
	if s.cfg.Audience != "" {
		q.Set("audience", s.cfg.Audience)
	}
	u.RawQuery = q.Encode()
	consoleHeaders(w)
	http.Redirect(w, r, u.String(), http.StatusFound)
}

func (s *Server) consoleCallback(w http.ResponseWriter, r *http.Request) {
	c, err := r.Cookie(loginCookie)
	var st loginState
	if err != nil || s.sealer.open(loginCookie, c.Value, &st) != nil || time.Now().Unix() > st.Expires {
		s.consoleFail(w, http.StatusBadRequest, "login_expired", "no sign-in in progress in this browser, or it expired: start again at /console/login")
		return
	}
	http.SetCookie(w, &http.Cookie{Name: loginCookie, Path: "/console/", MaxAge: -1, HttpOnly: true, Secure: s.secureCookies(r), SameSite: http.SameSiteLaxMode})
	q := r.URL.Query()
	if subtle.ConstantTimeCompare([]byte(q.Get("state")), []byte(st.State)) != 1 {
		s.consoleFail(w, http.StatusBadRequest, "state_mismatch", "the sign-in answer does not belong to this browser's sign-in")
		return
	}
	if e := q.Get("error"); e != "" {
		s.consoleFail(w, http.StatusUnauthorized, "signin_refused", "the identity provider refused the sign-in: "+e)
		return
	}
	token, err := s.redeem(r, q.Get("code"), st.Verifier)
	if err != nil {
		s.cfg.Log.Warn().Err(err).Msg("console sign-in: the code could not be redeemed")
		s.consoleFail(w, http.StatusBadGateway, "token_exchange_failed", err.Error())
		return
	}
	p, e := s.guard.Authn.Verify(r.Context(), token)
	if e != nil {
		s.consoleFail(w, http.StatusUnauthorized, e.Code, "the provider's token was refused: "+e.Message)
		return
	}
	exp := time.Now().Add(time.Hour)
	if p.GetExpiresAt() != nil {
		exp = p.GetExpiresAt().AsTime()
	}
	sealed, err := s.sealer.seal(sessionCookie, consoleSessionState{Token: token, CSRF: randomToken(), Expires: exp.Unix()})
	if err != nil {
		s.consoleFail(w, http.StatusInternalServerError, "internal", "cannot keep the session")
		return
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: sealed, Path: "/", Expires: exp, HttpOnly: true,
		Secure: s.secureCookies(r), SameSite: http.SameSiteLaxMode})
	s.cfg.Log.Info().Str("principal", p.GetSubject()).Msg("console sign-in")
	consoleHeaders(w)
	http.Redirect(w, r, st.Next, http.StatusFound)
}

// redeem exchanges the code at the provider's token endpoint (a public
// client: the PKCE verifier is its proof).
func (s *Server) redeem(r *http.Request, code, verifier string) (string, error) {
	if code == "" {
		return "", errors.New("the provider sent no code")
	}
	eps, err := s.endpoints(r.Context())
	if err != nil {
		return "", err
	}
	form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {s.consoleURL(r) + "/console/callback"},
		"client_id": {s.cfg.ConsoleClientID}, "code_verifier": {verifier}}
	ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, eps.Token, strings.NewReader(form.Encode()))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	resp, err := s.httpClient().Do(req)
	if err != nil {
		return "", fmt.Errorf("token endpoint: %w", err)
	}
	defer resp.Body.Close()
	var out struct {
		AccessToken string `json:"access_token"`
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&out); err != nil {
		return "", fmt.Errorf("token endpoint: %s: %w", resp.Status, err)
	}
	if resp.StatusCode != http.StatusOK || out.AccessToken == "" {
		return "", fmt.Errorf("token endpoint: %s: %s %s", resp.Status, out.Error, out.Description)
	}
	return out.AccessToken, nil
}

func (s *Server) consoleLogout(w http.ResponseWriter, r *http.Request) {
	consoleHeaders(w)
	if st, ok := s.cookieSession(r); ok && !s.csrfOK(r, st) {
		writeError(w, http.StatusForbidden, "csrf", "missing or wrong "+CSRFHeader)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Path: "/", MaxAge: -1, HttpOnly: true, Secure: s.secureCookies(r), SameSite: http.SameSiteLaxMode})
	w.WriteHeader(http.StatusNoContent)
}

// cookieSession returns the console session a request carries.
func (s *Server) cookieSession(r *http.Request) (consoleSessionState, bool) {
	var st consoleSessionState
	if s.cfg.ConsoleClientID == "" {
		return st, false
	}
	c, err := r.Cookie(sessionCookie)
	if err != nil || s.sealer.open(sessionCookie, c.Value, &st) != nil || st.Token == "" {
		return st, false
	}
	return st, true
}

// csrfOK: a request that may change something carries the session's CSRF
// token in its header, and, when the browser names an origin, comes from
// the console's own.
func (s *Server) csrfOK(r *http.Request, st consoleSessionState) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	if o := r.Header.Get("Origin"); o != "" && o != s.consoleURL(r) {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(r.Header.Get(CSRFHeader)), []byte(st.CSRF)) == 1
}

// ConsoleSessionJSON is who is signed in to the console and what the pages
// may offer them.
type ConsoleSessionJSON struct {
	Principal Principal `json:"principal"`
	CSRF      string    `json:"csrf"`
	Admin     bool      `json:"admin"`
	Auditor   bool      `json:"auditor"`
	Approver  bool      `json:"approver"`
	// PolicyReader may use the policy playground.
	PolicyReader bool `json:"policy_reader"`
}

func (s *Server) consoleSession(w http.ResponseWriter, r *http.Request, p *commonv1.Principal) {
	st, _ := s.cookieSession(r)
	writeJSON(w, http.StatusOK, ConsoleSessionJSON{Principal: PrincipalJSON(p), CSRF: st.CSRF,
		Admin: s.guard.Has(p, authz.Admin), Auditor: s.guard.Has(p, authz.Auditor),
		Approver: authz.IsApprover(s.view.Approvers(), p, nil), PolicyReader: s.guard.Has(p, authz.PolicyReader)})
}
