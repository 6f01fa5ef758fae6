package identity

import (
	"slices"
	"time"

	"sluice.dev/sluice/libs/claimmap"
	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
)

// DefaultAlgorithms are accepted when a provider names none: asymmetric only.
var DefaultAlgorithms = []string{"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "EdDSA"}

// Provider is how tokens from one issuer are verified.
type Provider struct {
	// Name identifies the provider in messages.
	Name string
	// Issuer must equal the token's iss exactly; discovery is fetched from
	// Issuer + "/.well-known/openid-configuration".
	Issuer string
	// Audience must be in the token's aud.
	Audience string
	// GroupsClaim names the claim holding groups; a dotted path reaches into
	// objects ("realm_access.roles"). Default "groups".
	GroupsClaim string
	// EmailClaim defaults to "email".
	EmailClaim string
	// MachineClaim, when set, names a boolean claim marking machine
	// identities. Whether set or not, a token whose sub equals its azp,
	// client_id or cid, or whose gty is "client-credentials", is a machine.
	MachineClaim string
	// Algorithms is the allow-list; "none" and HS* are refused even if listed.
	Algorithms []string
	// RequireAccessTokenType requires the header typ "at+jwt" (RFC 9068).
	RequireAccessTokenType bool
	// JWKSRefreshInterval is the minimum time between JWKS fetches triggered
	// by unknown key ids. Default 30s.
	JWKSRefreshInterval time.Duration
	// SubjectGroups adds groups to listed subjects.
	SubjectGroups map[string][]string
	// GroupsExpression is CEL over the token's claims returning more
	// groups (see libs/claimmap); checked when applied.
	GroupsExpression string
	// AllowedGroups, when set, filters the groups a token may carry.
	AllowedGroups []string
	groups        *claimmap.Program
}

func (p Provider) withDefaults() Provider {
	if p.GroupsClaim == "" {
		p.GroupsClaim = "groups"
	}
	if p.EmailClaim == "" {
		p.EmailClaim = "email"
	}
	algs := p.Algorithms
	if len(algs) == 0 {
		algs = DefaultAlgorithms
	}
	p.Algorithms = nil
	for _, a := range algs {
		if allowedAlgorithm(a) && !slices.Contains(p.Algorithms, a) {
			p.Algorithms = append(p.Algorithms, a)
		}
	}
	if p.JWKSRefreshInterval <= 0 {
		p.JWKSRefreshInterval = 30 * time.Second
	}
	return p
}

// allowedAlgorithm reports whether alg may ever be accepted: asymmetric
// signatures only.
func allowedAlgorithm(alg string) bool {
	return slices.Contains(DefaultAlgorithms, alg)
}

// ProviderFromProto converts applied settings.
func ProviderFromProto(p *controlv1.IdentityProvider) Provider {
	var sg map[string][]string
	for sub, gl := range p.GetSubjectGroups() {
		if sg == nil {
			sg = map[string][]string{}
		}
		sg[sub] = gl.GetGroups()
	}
	return Provider{
		Name:                   p.GetName(),
		SubjectGroups:          sg,
		GroupsExpression:       p.GetGroupsExpression(),
		AllowedGroups:          p.GetAllowedGroups(),
		Issuer:                 p.GetIssuer(),
		Audience:               p.GetAudience(),
		GroupsClaim:            p.GetGroupsClaim(),
		EmailClaim:             p.GetEmailClaim(),
		MachineClaim:           p.GetMachineClaim(),
		Algorithms:             p.GetAlgorithms(),
		RequireAccessTokenType: p.GetRequireAccessTokenType(),
		JWKSRefreshInterval:    time.Duration(p.GetJwksRefreshIntervalSeconds()) * time.Second,
	}
}
