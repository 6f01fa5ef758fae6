package mcpworker

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/oauthex"

	"sluice.dev/sluice/libs/authn"
	"sluice.dev/sluice/libs/controlstate"
	"sluice.dev/sluice/libs/gateway"
	commonv1 "sluice.dev/sluice/proto/sluice/common/v1"
)

// MetadataPath is where the endpoint's OAuth 2.0 Protected Resource
// Metadata is served (RFC 9728: the well-known prefix, then the resource's
// path).
const MetadataPath = "/.well-known/oauth-protected-resource/mcp"

// caller is what a verified request carries to the tools (TokenInfo.Extra).
type caller struct {
	principal *commonv1.Principal
	pkey      [16]byte
	token     string
	addr      string // the client's address, as the listener saw it
}

const extraCaller = "sluice.caller"

func callerOf(ti *auth.TokenInfo) (*caller, bool) {
	if ti == nil {
		return nil, false
	}
	c, ok := ti.Extra[extraCaller].(*caller)
	return c, ok
}

// Handler serves /mcp: origin and token checked on every request, then the
// streamable HTTP transport. Mounted under a prefix or not, it serves
// whatever path reaches it.
func (w *Worker) Handler() http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		select {
		case <-w.ready:
		default:
			rw.Header().Set("Retry-After", "1")
			httpError(rw, http.StatusServiceUnavailable, "starting", "the MCP endpoint is starting")
			return
		}
		if !w.originAllowed(r) {
			httpError(rw, http.StatusForbidden, "origin_refused",
				fmt.Sprintf("requests from origin %q are refused (only the endpoint's own origin and the configured ones are allowed)", r.Header.Get("Origin")))
			return
		}
		if w.publicHost != "" && !strings.EqualFold(w.publicHost, r.Host) {
			httpError(rw, http.StatusForbidden, "host_refused", fmt.Sprintf("this endpoint is %s, not %s", w.publicHost, r.Host))
			return
		}
		metadata := w.resourceURL(r, MetadataPath)
		challenge := func(code, msg string) {
			params := fmt.Sprintf(`Bearer resource_metadata=%q`, metadata)
			if code != "" {
				params += fmt.Sprintf(`, error="invalid_token", error_description=%q`, msg)
			}
			rw.Header().Set("WWW-Authenticate", params)
		}
		token, ok := authn.Bearer(r)
		if !ok {
			challenge("", "")
			httpError(rw, http.StatusUnauthorized, "token_missing", "send Authorization: Bearer <access token>; the OAuth metadata is at "+metadata)
			return
		}
		p, e := w.k.Authn.Verify(r.Context(), token)
		if e != nil {
			if e.GetCode() == authn.CodeUnavailable {
				rw.Header().Set("Retry-After", "2")
				httpError(rw, http.StatusServiceUnavailable, e.GetCode(), e.GetMessage())
				return
			}
			challenge(e.GetCode(), e.GetMessage())
			httpError(rw, http.StatusUnauthorized, e.GetCode(), e.GetMessage())
			return
		}
		c := &caller{principal: p, pkey: gateway.PrincipalKey(p), token: token, addr: r.RemoteAddr}
		verify := func(context.Context, string, *http.Request) (*auth.TokenInfo, error) {
			return &auth.TokenInfo{
				// The transport refuses a session id presented by another
				// principal than the one that opened it (same groups too).
				UserID:     hex.EncodeToString(c.pkey[:]),
				Expiration: p.GetExpiresAt().AsTime(),
				Extra:      map[string]any{extraCaller: c},
			}, nil
		}
		if p.GetExpiresAt() == nil {
			challenge("expired", "the token has no expiry")
			httpError(rw, http.StatusUnauthorized, "expired", "the token has no expiry")
			return
		}
		auth.RequireBearerToken(verify, &auth.RequireBearerTokenOptions{ResourceMetadataURL: metadata})(w.mcp).ServeHTTP(rw, r)
	})
}

// originAllowed refuses browser requests from other origins (DNS
// rebinding, a web page driving a local agent's endpoint). Clients that
// are not browsers send no Origin.
func (w *Worker) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	if slices.Contains(w.cfg.AllowedOrigins, origin) {
		return true
	}
	return strings.EqualFold(origin, w.origin(r))
}

// origin is the endpoint's own origin: the public URL's, or the request's.
func (w *Worker) origin(r *http.Request) string {
	if w.cfg.PublicURL != "" {
		if u, err := url.Parse(w.cfg.PublicURL); err == nil {
			return u.Scheme + "://" + u.Host
		}
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// resourceURL is a URL on the endpoint's origin.
func (w *Worker) resourceURL(r *http.Request, path string) string {
	return w.origin(r) + path
}

// resource is the endpoint's URL, the resource its metadata describes.
func (w *Worker) resource(r *http.Request) string {
	if w.cfg.PublicURL != "" {
		return w.cfg.PublicURL
	}
	return w.resourceURL(r, "/mcp")
}

// MetadataHandler serves the OAuth 2.0 Protected Resource Metadata
// (RFC 9728): the resource and the issuers whose access tokens it accepts,
// as applied in sluice.yaml.
func (w *Worker) MetadataHandler() http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodOptions {
			rw.Header().Set("Allow", "GET, OPTIONS")
			httpError(rw, http.StatusMethodNotAllowed, "method_not_allowed", "GET the metadata")
			return
		}
		var issuers []string
		for _, p := range controlstate.Providers(w.k.View.IdentityProvider()) {
			issuers = append(issuers, p.GetIssuer())
		}
		if len(issuers) == 0 {
			issuers = w.cfg.Issuers
		}
		if len(issuers) == 0 {
			rw.Header().Set("Retry-After", "2")
			httpError(rw, http.StatusServiceUnavailable, "no_issuer", "no identity provider is applied yet")
			return
		}
		auth.ProtectedResourceMetadataHandler(&oauthex.ProtectedResourceMetadata{
			Resource:               w.resource(r),
			AuthorizationServers:   issuers,
			BearerMethodsSupported: []string{"header"},
			ResourceName:           "Sluice",
		}).ServeHTTP(rw, r)
	})
}

// httpError answers with the API's error shape.
func httpError(rw http.ResponseWriter, status int, code, msg string) {
	rw.Header().Set("Content-Type", "application/json")
	rw.WriteHeader(status)
	_ = json.NewEncoder(rw).Encode(map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

var errNoCaller = errors.New("the request carries no verified caller")
