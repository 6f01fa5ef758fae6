package devissuer

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
)

// Authorization code grant with PKCE (RFC 6749 §4.1, RFC 7636), for
// browser sign-in (the web console). Only S256 challenges are accepted,
// redirect URIs must be registered exactly, and a code is single use and
// lives a minute.

type authCode struct {
	clientID, redirectURI, challenge string
	claims                           Claims
	expires                          time.Time
}

type codeStore struct {
	mu    sync.Mutex
	codes map[string]*authCode
}

const codeTTL = time.Minute

// authRequest is what /authorize was asked, checked.
type authRequest struct {
	ClientID, RedirectURI, State, Challenge string
}

// parseAuthRequest checks an authorization request. An error before the
// redirect URI is known to be registered is shown to the user, never
// redirected (RFC 6749 §4.1.2.1).
func (i *Issuer) parseAuthRequest(v url.Values) (authRequest, string) {
	req := authRequest{ClientID: v.Get("client_id"), RedirectURI: v.Get("redirect_uri"), State: v.Get("state"), Challenge: v.Get("code_challenge")}
	c, ok := i.client(req.ClientID)
	switch {
	case !ok:
		return req, "Unknown client " + req.ClientID + "."
	case !slices.Contains(c.RedirectURIs, req.RedirectURI):
		return req, "The redirect URI is not registered for this client."
	case v.Get("response_type") != "code":
		return req, "Only response_type=code is supported."
	case v.Get("code_challenge_method") != "S256" || len(req.Challenge) < 43:
		return req, "PKCE is required: code_challenge with code_challenge_method=S256."
	}
	return req, ""
}

var signInPage = template.Must(template.New("signin").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>Sluice dev sign-in</title>
<style>body{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem}label{display:block;margin:.8rem 0}input{width:100%;padding:.4rem}</style></head>
<body><h1>Sluice development sign-in</h1>
<p>This is the development identity provider of <code>sluice dev</code>: choose who you are. Never use it in production.</p>
{{if .Error}}<p id="error" style="color:#b00">{{.Error}}</p>{{end}}
{{if .Req.ClientID}}<form method="post" action="authorize">
<input type="hidden" name="client_id" value="{{.Req.ClientID}}">
<input type="hidden" name="redirect_uri" value="{{.Req.RedirectURI}}">
<input type="hidden" name="state" value="{{.Req.State}}">
<input type="hidden" name="code_challenge" value="{{.Req.Challenge}}">
<input type="hidden" name="code_challenge_method" value="S256">
<input type="hidden" name="response_type" value="code">
<p>Signing in to <strong>{{.Req.ClientID}}</strong>.</p>
<label>Subject <input id="sub" name="sub" value="{{.Subject}}" required></label>
<label>Email <input id="email" name="email" value="{{.Email}}"></label>
<label>Groups (comma-separated) <input id="groups" name="groups" value="{{.Groups}}"></label>
<button id="signin" type="submit" name="action" value="approve">Sign in</button>
<button id="cancel" type="submit" name="action" value="deny">Cancel</button>
</form>{{end}}</body></html>`))

type signInData struct {
	Req                           authRequest
	Subject, Email, Groups, Error string
}

func (i *Issuer) authorizePage(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("X-Frame-Options", "DENY")
	req, problem := i.parseAuthRequest(r.URL.Query())
	if problem != "" {
		w.WriteHeader(http.StatusBadRequest)
		_ = signInPage.Execute(w, signInData{Error: problem})
		return
	}
	_ = signInPage.Execute(w, signInData{Req: req, Groups: "engineers"})
}

func (i *Issuer) authorizeSubmit(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, "malformed form", http.StatusBadRequest)
		return
	}
	w.Header().Set("X-Frame-Options", "DENY")
	req, problem := i.parseAuthRequest(r.PostForm)
	f := r.PostForm
	data := signInData{Req: req, Subject: strings.TrimSpace(f.Get("sub")), Email: strings.TrimSpace(f.Get("email")), Groups: f.Get("groups")}
	if problem != "" {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(http.StatusBadRequest)
		_ = signInPage.Execute(w, signInData{Error: problem})
		return
	}
	back, err := url.Parse(req.RedirectURI)
	if err != nil {
		http.Error(w, "bad redirect URI", http.StatusBadRequest)
		return
	}
	q := back.Query()
	if req.State != "" {
		q.Set("state", req.State)
	}
	if f.Get("action") == "deny" {
		q.Set("error", "access_denied")
		back.RawQuery = q.Encode()
		http.Redirect(w, r, back.String(), http.StatusFound)
		return
	}
	if data.Subject == "" {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(http.StatusBadRequest)
		data.Error = "A subject is required."
		_ = signInPage.Execute(w, data)
		return
	}
	code := randomString(32, alnum)
	i.codes.mu.Lock()
	now := time.Now()
	for k, c := range i.codes.codes {
		if now.After(c.expires) {
			delete(i.codes.codes, k)
		}
	}
	i.codes.codes[code] = &authCode{clientID: req.ClientID, redirectURI: req.RedirectURI, challenge: req.Challenge,
		claims: Claims{Subject: data.Subject, Email: data.Email, Groups: SplitGroups(data.Groups)}, expires: now.Add(codeTTL)}
	i.codes.mu.Unlock()
	q.Set("code", code)
	back.RawQuery = q.Encode()
	http.Redirect(w, r, back.String(), http.StatusFound)
}

// codeToken redeems a code: once, by the client it was issued to, with the
// same redirect URI and the verifier of its challenge.
func (i *Issuer) codeToken(w http.ResponseWriter, r *http.Request) {
	f := r.PostForm
	id, secret := clientAuth(r)
	c, ok := i.client(id)
	if !ok || (c.Secret != "" && subtle.ConstantTimeCompare([]byte(c.Secret), []byte(secret)) != 1) {
		oauthError(w, http.StatusUnauthorized, "invalid_client", "unknown client or wrong secret")
		return
	}
	i.codes.mu.Lock()
	g, found := i.codes.codes[f.Get("code")]
	delete(i.codes.codes, f.Get("code"))
	i.codes.mu.Unlock()
	sum := sha256.Sum256([]byte(f.Get("code_verifier")))
	switch {
	case !found || time.Now().After(g.expires):
		oauthError(w, http.StatusBadRequest, "invalid_grant", "unknown, used or expired code")
	case g.clientID != id || g.redirectURI != f.Get("redirect_uri"):
		oauthError(w, http.StatusBadRequest, "invalid_grant", "the code was issued to another client or redirect URI")
	case subtle.ConstantTimeCompare([]byte(base64.RawURLEncoding.EncodeToString(sum[:])), []byte(g.challenge)) != 1:
		oauthError(w, http.StatusBadRequest, "invalid_grant", "code_verifier does not match the code challenge")
	default:
		i.issue(w, g.claims)
	}
}
