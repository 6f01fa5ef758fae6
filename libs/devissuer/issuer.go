package devissuer

import (
	"crypto/ecdsa"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/oklog/ulid/v2"
)

// Client is an OAuth2 client registered with the dev issuer.
type Client struct {
	ID string
	// Secret is empty for public clients (the CLI's device flow).
	Secret string
	// Groups are given to tokens issued by client credentials.
	Groups []string
	// RedirectURIs are where the authorization code grant may send a code
	// (exact match).
	RedirectURIs []string
}

// Issuer mints tokens.
type Issuer struct {
	// URL is the issuer identifier, e.g. http://127.0.0.1:8080/oidc.
	URL string
	// Audience is put in every token's aud.
	Audience string
	Key      *ecdsa.PrivateKey
	// TTL is the default token lifetime; default 1h.
	TTL     time.Duration
	Clients []Client

	devices *deviceStore
	codes   *codeStore
}

// Claims describes a token to mint.
type Claims struct {
	Subject string
	Email   string
	Groups  []string
	// Machine marks a machine identity the way client credentials do
	// (client_id = sub, gty client-credentials).
	Machine bool
	TTL     time.Duration
	// Audience overrides the issuer's default.
	Audience string
	// Extra claims, for tests.
	Extra map[string]any
}

// Mint signs an access token.
func (i *Issuer) Mint(c Claims) (string, error) {
	if c.Subject == "" {
		return "", errors.New("dev issuer: a subject is required")
	}
	if i.Key == nil {
		return "", errors.New("dev issuer: no signing key")
	}
	ttl := c.TTL
	if ttl == 0 {
		ttl = i.TTL
	}
	if ttl == 0 {
		ttl = time.Hour
	}
	aud := c.Audience
	if aud == "" {
		aud = i.Audience
	}
	now := time.Now()
	claims := map[string]any{
		"iss":    i.URL,
		"sub":    c.Subject,
		"aud":    aud,
		"iat":    now.Unix(),
		"nbf":    now.Unix(),
		"exp":    now.Add(ttl).Unix(),
		"jti":    ulid.Make().String(),
		"groups": nonNil(c.Groups),
	}
	if c.Email != "" {
		claims["email"] = c.Email
	}
	if c.Machine {
		claims["client_id"] = c.Subject
		claims["gty"] = "client-credentials"
	}
	for k, v := range c.Extra {
		claims[k] = v
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: i.Key},
		(&jose.SignerOptions{}).WithType("at+jwt").WithHeader("kid", KeyID(i.Key)))
	if err != nil {
		return "", fmt.Errorf("dev issuer: %w", err)
	}
	tok, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		return "", fmt.Errorf("dev issuer: %w", err)
	}
	return tok, nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// SplitGroups parses "a,b, c".
func SplitGroups(s string) []string {
	var out []string
	for _, g := range strings.Split(s, ",") {
		if g = strings.TrimSpace(g); g != "" {
			out = append(out, g)
		}
	}
	return out
}

func (i *Issuer) client(id string) (Client, bool) {
	for _, c := range i.Clients {
		if c.ID == id {
			return c, true
		}
	}
	return Client{}, false
}
