package identity

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-jose/go-jose/v4"
	"google.golang.org/protobuf/types/known/timestamppb"

	"sluice.dev/sluice/libs/claimmap"
	commonv1 "sluice.dev/sluice/proto/sluice/common/v1"
)

// Error codes returned to clients. They are stable.
const (
	CodeMalformed       = "token_malformed"
	CodeExpired         = "token_expired"
	CodeNotYetValid     = "token_not_yet_valid"
	CodeWrongIssuer     = "wrong_issuer"
	CodeWrongAudience   = "wrong_audience"
	CodeAlgorithm       = "algorithm_not_allowed"
	CodeUnknownKey      = "unknown_key"
	CodeBadSignature    = "bad_signature"
	CodeNotAccessToken  = "not_an_access_token"
	CodeClaimsInvalid   = "claims_invalid"
	CodeUntrusted       = "untrusted_issuer"
	CodeUnavailable     = "unavailable"
	CodeMissing         = "token_missing"
	notBeforeLeeway     = time.Minute
	keysMaxAge          = time.Hour
	discoveryRetryAfter = 5 * time.Second
)

// Failure is a refused token: a stable code and a client-safe reason.
type Failure struct {
	Code   string
	Reason string
}

func (f *Failure) Error() string { return f.Code + ": " + f.Reason }

// Proto converts the failure for the wire.
func (f *Failure) Proto() *commonv1.Error {
	return &commonv1.Error{Code: f.Code, Message: f.Reason}
}

func fail(code, format string, args ...any) *Failure {
	return &Failure{Code: code, Reason: fmt.Sprintf(format, args...)}
}

// Verifier verifies access tokens from one provider.
type Verifier struct {
	p       Provider
	client  *http.Client
	now     func() time.Time
	badExpr error

	mu       sync.Mutex
	verifier *oidc.IDTokenVerifier
	keys     *keySet
	lastErr  error
	lastTry  time.Time
}

// NewVerifier returns a verifier for p. Discovery happens on first use and
// is retried if the issuer was unreachable. A groups expression that does
// not compile (it was checked when applied) refuses every token.
func NewVerifier(p Provider, client *http.Client) *Verifier {
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	v := &Verifier{p: p.withDefaults(), client: client, now: time.Now}
	if p.GroupsExpression != "" {
		prg, err := claimmap.Compile(p.GroupsExpression)
		if err != nil {
			v.badExpr = err
		}
		v.p.groups = prg
	}
	return v
}

// Provider returns the settings in force, with defaults applied.
func (v *Verifier) Provider() Provider { return v.p }

func (v *Verifier) discover(ctx context.Context) (*oidc.IDTokenVerifier, *keySet, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.verifier != nil {
		return v.verifier, v.keys, nil
	}
	if v.lastErr != nil && time.Since(v.lastTry) < discoveryRetryAfter {
		return nil, nil, v.lastErr
	}
	v.lastTry = time.Now()
	dctx, cancel := context.WithTimeout(oidc.ClientContext(ctx, v.client), 10*time.Second)
	defer cancel()
	prov, err := oidc.NewProvider(dctx, v.p.Issuer)
	if err != nil {
		v.lastErr = fmt.Errorf("discovery at %s: %w", v.p.Issuer, err)
		return nil, nil, v.lastErr
	}
	var meta struct {
		JWKSURI string `json:"jwks_uri"`
	}
	if err := prov.Claims(&meta); err != nil || meta.JWKSURI == "" {
		v.lastErr = fmt.Errorf("discovery at %s: no jwks_uri", v.p.Issuer)
		return nil, nil, v.lastErr
	}
	algs := make([]jose.SignatureAlgorithm, len(v.p.Algorithms))
	for i, a := range v.p.Algorithms {
		algs[i] = jose.SignatureAlgorithm(a)
	}
	v.keys = &keySet{url: meta.JWKSURI, client: v.client, interval: v.p.JWKSRefreshInterval, maxAge: keysMaxAge, algs: algs}
	v.verifier = oidc.NewVerifier(v.p.Issuer, v.keys, &oidc.Config{
		ClientID:             v.p.Audience,
		SupportedSigningAlgs: v.p.Algorithms,
		Now:                  v.now,
	})
	v.lastErr = nil
	return v.verifier, v.keys, nil
}

type header struct {
	Alg string `json:"alg"`
	Kid string `json:"kid"`
	Typ string `json:"typ"`
}

// Verify checks raw and returns the principal it proves.
func (v *Verifier) Verify(ctx context.Context, raw string) (*commonv1.Principal, *Failure) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return nil, fail(CodeMissing, "no token was presented")
	}
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return nil, fail(CodeMalformed, "a token must be a signed JWT (three dot-separated parts)")
	}
	var h header
	if err := decodeSegment(parts[0], &h); err != nil {
		return nil, fail(CodeMalformed, "the JWT header is not valid base64url JSON")
	}
	if h.Alg == "" || strings.EqualFold(h.Alg, "none") {
		return nil, fail(CodeAlgorithm, "unsigned tokens (alg none) are refused")
	}
	if !slices.Contains(v.p.Algorithms, h.Alg) {
		if strings.HasPrefix(strings.ToUpper(h.Alg), "HS") {
			return nil, fail(CodeAlgorithm, "HMAC-signed tokens (%s) are refused; only asymmetric signatures are accepted", h.Alg)
		}
		return nil, fail(CodeAlgorithm, "signature algorithm %s is not allowed (allowed: %s)", h.Alg, strings.Join(v.p.Algorithms, ", "))
	}
	var claims map[string]any
	if err := decodeSegment(parts[1], &claims); err != nil {
		return nil, fail(CodeMalformed, "the JWT payload is not valid base64url JSON")
	}

	verifier, _, err := v.discover(ctx)
	if err != nil {
		return nil, fail(CodeUnavailable, "the identity provider cannot be reached")
	}
	var vd verdict
	tok, err := verifier.Verify(withVerdict(ctx, &vd), raw)
	if err != nil {
		return nil, v.explain(err, vd.err, claims)
	}
	// The signature is good from here on: claims are trustworthy.
	if f := v.checkAccessToken(h, claims); f != nil {
		return nil, f
	}
	if iat, ok := numericDate(claims["iat"]); ok && iat.After(v.now().Add(notBeforeLeeway)) {
		return nil, fail(CodeNotYetValid, "the token claims to be issued at %s, in the future (clock skew above %s)", iat.UTC().Format(time.RFC3339), notBeforeLeeway)
	}
	return v.principal(tok, claims)
}

// explain turns a go-oidc failure into a precise code and reason.
func (v *Verifier) explain(err, keyErr error, claims map[string]any) *Failure {
	switch {
	case errors.Is(keyErr, errRateLimited):
		return fail(CodeUnknownKey, "the token's key id is not among the issuer's keys (refresh rate-limited)")
	case errors.Is(keyErr, errUnknownKey):
		return fail(CodeUnknownKey, "the token's key id is not among the issuer's keys")
	case errors.Is(keyErr, errBadSignature):
		return fail(CodeBadSignature, "the token's signature does not verify")
	case errors.Is(keyErr, errJWKS):
		return fail(CodeUnavailable, "the identity provider's keys cannot be fetched")
	case keyErr != nil:
		return fail(CodeMalformed, "the token cannot be parsed as a JWS")
	}
	var expired *oidc.TokenExpiredError
	if errors.As(err, &expired) {
		return fail(CodeExpired, "the token expired at %s", expired.Expiry.UTC().Format(time.RFC3339))
	}
	// The signature verified; go-oidc refused a claim. Say which.
	if iss, _ := claims["iss"].(string); iss != v.p.Issuer {
		return fail(CodeWrongIssuer, "the token was issued by %q, not by %q", iss, v.p.Issuer)
	}
	if !audienceContains(claims["aud"], v.p.Audience) {
		return fail(CodeWrongAudience, "the token's audience does not include %q", v.p.Audience)
	}
	if nbf, ok := numericDate(claims["nbf"]); ok && v.now().Add(notBeforeLeeway).Before(nbf) {
		return fail(CodeNotYetValid, "the token is not valid before %s", nbf.UTC().Format(time.RFC3339))
	}
	return fail(CodeClaimsInvalid, "the token's claims are invalid")
}

// checkAccessToken refuses ID tokens (and other non-access tokens).
func (v *Verifier) checkAccessToken(h header, claims map[string]any) *Failure {
	typ := strings.ToLower(h.Typ)
	isAT := typ == "at+jwt" || typ == "application/at+jwt"
	if v.p.RequireAccessTokenType && !isAT {
		return fail(CodeNotAccessToken, "an access token (JWT typ at+jwt) is required; got typ %q", h.Typ)
	}
	if isAT {
		return nil
	}
	for _, c := range []string{"nonce", "at_hash", "c_hash"} {
		if _, ok := claims[c]; ok {
			return fail(CodeNotAccessToken, "this is an ID token (it carries %s); present an access token", c)
		}
	}
	if t, _ := claims["typ"].(string); strings.EqualFold(t, "ID") {
		return fail(CodeNotAccessToken, "this is an ID token (typ claim ID); present an access token")
	}
	if t, _ := claims["token_use"].(string); strings.EqualFold(t, "id") {
		return fail(CodeNotAccessToken, "this is an ID token (token_use id); present an access token")
	}
	return nil
}

func (v *Verifier) principal(tok *oidc.IDToken, claims map[string]any) (*commonv1.Principal, *Failure) {
	if tok.Subject == "" {
		return nil, fail(CodeClaimsInvalid, "the token has no subject (sub)")
	}
	p := &commonv1.Principal{
		Subject:   tok.Subject,
		Issuer:    tok.Issuer,
		ExpiresAt: timestamppb.New(tok.Expiry),
	}
	if raw, ok := lookup(claims, v.p.EmailClaim); ok {
		email, isString := raw.(string)
		if !isString {
			return nil, fail(CodeClaimsInvalid, "claim %q must be a string", v.p.EmailClaim)
		}
		// An email the provider says it has not verified identifies nobody.
		if verified, ok := claims["email_verified"].(bool); !ok || verified {
			p.Email = email
		}
	}
	groups, err := stringList(claims, v.p.GroupsClaim)
	if err != nil {
		return nil, fail(CodeClaimsInvalid, "claim %q must be a list of strings or a string: %v", v.p.GroupsClaim, err)
	}
	groups = append(groups, v.p.SubjectGroups[tok.Subject]...)
	if v.badExpr != nil {
		return nil, fail(CodeUnavailable, "the provider's groups_expression does not compile")
	}
	if v.p.groups != nil {
		more, err := v.p.groups.Groups(claims)
		if err != nil {
			return nil, fail(CodeClaimsInvalid, "the provider's groups mapping failed on this token: %v", err)
		}
		groups = append(groups, more...)
	}
	if v.p.AllowedGroups != nil {
		groups = slices.DeleteFunc(groups, func(g string) bool { return !slices.Contains(v.p.AllowedGroups, g) })
	}
	p.Groups = dedupe(groups)
	for _, c := range []string{"client_id", "azp", "cid"} {
		if id, _ := claims[c].(string); id != "" {
			if p.ClientId == "" {
				p.ClientId = id
			}
			if id == tok.Subject {
				p.Machine = true
			}
		}
	}
	if gty, _ := claims["gty"].(string); gty == "client-credentials" || gty == "client_credentials" {
		p.Machine = true
	}
	if v.p.MachineClaim != "" {
		if raw, ok := lookup(claims, v.p.MachineClaim); ok {
			switch m := raw.(type) {
			case bool:
				p.Machine = p.Machine || m
			case string:
				p.Machine = p.Machine || m == "true"
			default:
				return nil, fail(CodeClaimsInvalid, "claim %q must be a boolean", v.p.MachineClaim)
			}
		}
	}
	return p, nil
}

func decodeSegment(seg string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(seg, "="))
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// lookup follows a dotted path into nested objects; a claim whose own name
// contains dots (a URL-style claim) is found first.
func lookup(claims map[string]any, path string) (any, bool) {
	if v, ok := claims[path]; ok {
		return v, true
	}
	cur := any(claims)
	for _, part := range strings.Split(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[part]; !ok {
			return nil, false
		}
	}
	return cur, true
}

func stringList(claims map[string]any, path string) ([]string, error) {
	raw, ok := lookup(claims, path)
	if !ok || raw == nil {
		return nil, nil
	}
	switch g := raw.(type) {
	case string:
		// One string is one group, never split: a group name may hold
		// spaces or commas ("Domain Admins", "cn=ops,ou=groups").
		if g == "" {
			return nil, nil
		}
		return []string{g}, nil
	case []any:
		out := make([]string, 0, len(g))
		for _, e := range g {
			s, ok := e.(string)
			if !ok {
				return nil, fmt.Errorf("element %v is not a string", e)
			}
			out = append(out, s)
		}
		return out, nil
	}
	return nil, fmt.Errorf("got %T", raw)
}

func audienceContains(aud any, want string) bool {
	switch a := aud.(type) {
	case string:
		return a == want
	case []any:
		for _, e := range a {
			if s, _ := e.(string); s == want {
				return true
			}
		}
	}
	return false
}

func numericDate(v any) (time.Time, bool) {
	f, ok := v.(float64)
	if !ok {
		return time.Time{}, false
	}
	return time.Unix(int64(f), 0), true
}

// dedupe drops repeated groups, keeping the first occurrence's order.
func dedupe(groups []string) []string {
	out := groups[:0]
	for i, g := range groups {
		if !slices.Contains(groups[:i], g) {
			out = append(out, g)
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}
