package devissuer

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// Handler serves the issuer under its URL's path (mount it with that prefix
// stripped, e.g. http.StripPrefix("/oidc", iss.Handler())).
func (i *Issuer) Handler() http.Handler {
	if i.devices == nil {
		i.devices = &deviceStore{codes: map[string]*deviceGrant{}}
	}
	if i.codes == nil {
		i.codes = &codeStore{codes: map[string]*authCode{}}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", i.discovery)
	mux.HandleFunc("GET /jwks", i.jwks)
	mux.HandleFunc("POST /token", i.token)
	mux.HandleFunc("POST /device/authorize", i.deviceAuthorize)
	mux.HandleFunc("GET /device", i.devicePage)
	mux.HandleFunc("POST /device", i.deviceApprove)
	mux.HandleFunc("GET /authorize", i.authorizePage)
	mux.HandleFunc("POST /authorize", i.authorizeSubmit)
	return mux
}

func (i *Issuer) discovery(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"issuer":                                i.URL,
		"jwks_uri":                              i.URL + "/jwks",
		"token_endpoint":                        i.URL + "/token",
		"device_authorization_endpoint":         i.URL + "/device/authorize",
		"authorization_endpoint":                i.URL + "/authorize",
		"grant_types_supported":                 []string{"authorization_code", "client_credentials", "urn:ietf:params:oauth:grant-type:device_code"},
		"response_types_supported":              []string{"code"},
		"code_challenge_methods_supported":      []string{"S256"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{"ES256"},
		"token_endpoint_auth_methods_supported": []string{"client_secret_basic", "client_secret_post", "none"},
	})
}

func (i *Issuer) jwks(w http.ResponseWriter, _ *http.Request) {
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{
		Key: &i.Key.PublicKey, KeyID: KeyID(i.Key), Algorithm: string(jose.ES256), Use: "sig",
	}}}
	writeJSON(w, http.StatusOK, set)
}

func (i *Issuer) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "malformed form")
		return
	}
	switch r.PostForm.Get("grant_type") {
	case "client_credentials":
		i.clientCredentials(w, r)
	case "urn:ietf:params:oauth:grant-type:device_code":
		i.deviceToken(w, r)
	case "authorization_code":
		i.codeToken(w, r)
	default:
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type", "supported: authorization_code, client_credentials, device_code")
	}
}

func clientAuth(r *http.Request) (id, secret string) {
	if id, secret, ok := r.BasicAuth(); ok {
		return id, secret
	}
	return r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
}

func (i *Issuer) clientCredentials(w http.ResponseWriter, r *http.Request) {
	id, secret := clientAuth(r)
	c, ok := i.client(id)
	if !ok || c.Secret == "" || subtle.ConstantTimeCompare([]byte(c.Secret), []byte(secret)) != 1 {
		oauthError(w, http.StatusUnauthorized, "invalid_client", "unknown client or wrong secret")
		return
	}
	i.issue(w, Claims{Subject: c.ID, Groups: c.Groups, Machine: true})
}

func (i *Issuer) issue(w http.ResponseWriter, c Claims) {
	ttl := i.TTL
	if ttl == 0 {
		ttl = time.Hour
	}
	c.TTL = ttl
	tok, err := i.Mint(c)
	if err != nil {
		oauthError(w, http.StatusInternalServerError, "server_error", "cannot sign")
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token": tok,
		"token_type":   "Bearer",
		"expires_in":   int(ttl.Seconds()),
	})
}

// Device authorization grant (RFC 8628).

type deviceGrant struct {
	deviceCode string
	userCode   string
	clientID   string
	expires    time.Time
	approved   *Claims
	denied     bool
	lastPoll   time.Time
}

type deviceStore struct {
	mu    sync.Mutex
	codes map[string]*deviceGrant // by device code
}

const deviceInterval = time.Second

func (i *Issuer) deviceAuthorize(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "malformed form")
		return
	}
	id, _ := clientAuth(r)
	if _, ok := i.client(id); !ok {
		oauthError(w, http.StatusUnauthorized, "invalid_client", "unknown client")
		return
	}
	g := &deviceGrant{deviceCode: randomString(32, alnum), userCode: userCode(), clientID: id, expires: time.Now().Add(10 * time.Minute)}
	i.devices.mu.Lock()
	for k, old := range i.devices.codes {
		if time.Now().After(old.expires) {
			delete(i.devices.codes, k)
		}
	}
	i.devices.codes[g.deviceCode] = g
	i.devices.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{
		"device_code":               g.deviceCode,
		"user_code":                 g.userCode,
		"verification_uri":          i.URL + "/device",
		"verification_uri_complete": i.URL + "/device?user_code=" + g.userCode,
		"expires_in":                600,
		"interval":                  int(deviceInterval.Seconds()),
	})
}

func (i *Issuer) deviceToken(w http.ResponseWriter, r *http.Request) {
	code := r.PostForm.Get("device_code")
	i.devices.mu.Lock()
	g, ok := i.devices.codes[code]
	if !ok {
		i.devices.mu.Unlock()
		oauthError(w, http.StatusBadRequest, "invalid_grant", "unknown device code")
		return
	}
	now := time.Now()
	switch {
	case now.After(g.expires):
		delete(i.devices.codes, code)
		i.devices.mu.Unlock()
		oauthError(w, http.StatusBadRequest, "expired_token", "the device code expired")
		return
	case g.denied:
		delete(i.devices.codes, code)
		i.devices.mu.Unlock()
		oauthError(w, http.StatusBadRequest, "access_denied", "the request was denied")
		return
	case g.approved == nil:
		slow := now.Sub(g.lastPoll) < deviceInterval/2
		g.lastPoll = now
		i.devices.mu.Unlock()
		if slow {
			oauthError(w, http.StatusBadRequest, "slow_down", "poll less often")
			return
		}
		oauthError(w, http.StatusBadRequest, "authorization_pending", "waiting for the user")
		return
	}
	claims := *g.approved
	delete(i.devices.codes, code)
	i.devices.mu.Unlock()
	i.issue(w, claims)
}

var devicePage = template.Must(template.New("device").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>Sluice dev sign-in</title>
<style>body{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem}label{display:block;margin:.8rem 0}input{width:100%;padding:.4rem}</style></head>
<body><h1>Sluice development sign-in</h1>
<p>This is the development identity provider of <code>sluice dev</code>: choose who you are. Never use it in production.</p>
{{if .Done}}<p><strong>Signed in as {{.Subject}}.</strong> You can close this page and return to your terminal.</p>{{else}}
{{if .Error}}<p style="color:#b00">{{.Error}}</p>{{end}}
<form method="post" action="device">
<label>Code shown in your terminal <input name="user_code" value="{{.UserCode}}" required></label>
<label>Subject <input name="sub" value="{{.Subject}}" required></label>
<label>Email <input name="email" value="{{.Email}}"></label>
<label>Groups (comma-separated) <input name="groups" value="{{.Groups}}"></label>
<button type="submit" name="action" value="approve">Sign in</button>
<button type="submit" name="action" value="deny">Deny</button>
</form>{{end}}</body></html>`))

type pageData struct {
	UserCode, Subject, Email, Groups, Error string
	Done                                    bool
}

func (i *Issuer) devicePage(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_ = devicePage.Execute(w, pageData{UserCode: r.URL.Query().Get("user_code"), Groups: "engineers"})
}

func (i *Issuer) deviceApprove(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, "malformed form", http.StatusBadRequest)
		return
	}
	f := r.PostForm
	data := pageData{UserCode: f.Get("user_code"), Subject: strings.TrimSpace(f.Get("sub")), Email: f.Get("email"), Groups: f.Get("groups")}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	i.devices.mu.Lock()
	var g *deviceGrant
	for _, c := range i.devices.codes {
		if strings.EqualFold(c.userCode, strings.TrimSpace(data.UserCode)) && time.Now().Before(c.expires) {
			g = c
		}
	}
	if g == nil {
		i.devices.mu.Unlock()
		w.WriteHeader(http.StatusBadRequest)
		data.Error = "Unknown or expired code."
		_ = devicePage.Execute(w, data)
		return
	}
	if f.Get("action") == "deny" {
		g.denied = true
		i.devices.mu.Unlock()
		data.Error = "Denied."
		_ = devicePage.Execute(w, data)
		return
	}
	if data.Subject == "" {
		i.devices.mu.Unlock()
		w.WriteHeader(http.StatusBadRequest)
		data.Error = "A subject is required."
		_ = devicePage.Execute(w, data)
		return
	}
	g.approved = &Claims{Subject: data.Subject, Email: data.Email, Groups: SplitGroups(data.Groups)}
	i.devices.mu.Unlock()
	data.Done = true
	_ = devicePage.Execute(w, data)
}

const alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

func randomString(n int, alphabet string) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	for k := range b {
		b[k] = alphabet[int(b[k])%len(alphabet)]
	}
	return string(b)
}

// userCode is eight unambiguous letters, shown as XXXX-XXXX.
func userCode() string {
	s := randomString(8, "BCDFGHJKLMNPQRSTVWXZ")
	return fmt.Sprintf("%s-%s", s[:4], s[4:])
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func oauthError(w http.ResponseWriter, status int, code, desc string) {
	writeJSON(w, status, map[string]string{"error": code, "error_description": desc})
}
