package identity_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"sluice.dev/sluice/libs/authn"
	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/controlstate"
	"sluice.dev/sluice/libs/devissuer"
	"sluice.dev/sluice/libs/testkit"
	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
	identityv1 "sluice.dev/sluice/proto/sluice/identity/v1"
	"sluice.dev/sluice/services/identity"
)

// Client-credentials tokens often carry no groups claim: a static table
// and a CEL expression over the claims give them groups.
func TestGroupsMapping(t *testing.T) {
	p := newIDP(t)
	prov := p.provider()
	prov.SubjectGroups = map[string][]string{"ci-bot": {"engineers"}}
	prov.GroupsExpression = `has(claims.scope) && claims.scope.split(" ").exists(s, s == "deploy") ? ["deployers"] : []`
	v := identity.NewVerifier(prov, nil)
	ctx := context.Background()

	pr, f := v.Verify(ctx, p.mint(t, devissuer.Claims{Subject: "ci-bot", Machine: true, Extra: map[string]any{"scope": "read deploy"}}))
	require.Nil(t, f)
	assert.Equal(t, []string{"engineers", "deployers"}, pr.Groups)
	assert.True(t, pr.Machine)

	pr, f = v.Verify(ctx, p.mint(t, devissuer.Claims{Subject: "other", Groups: []string{"dba"}}))
	require.Nil(t, f)
	assert.Equal(t, []string{"dba"}, pr.Groups, "no mapping applies")

	// An expression that fails on a token refuses it (fail closed).
	prov.GroupsExpression = `claims.client_id == "x" ? ["a"] : []`
	v = identity.NewVerifier(prov, nil)
	_, f = v.Verify(ctx, p.mint(t, devissuer.Claims{Subject: "human"}))
	require.NotNil(t, f)
	assert.Equal(t, identity.CodeClaimsInvalid, f.Code)
}

// A groups claim that is one string is one group, never split.
func TestStringGroupIsOneGroup(t *testing.T) {
	p := newIDP(t)
	v := identity.NewVerifier(p.provider(), nil)
	pr, f := v.Verify(context.Background(), p.mint(t, devissuer.Claims{Subject: "kc", Extra: map[string]any{"groups": "Domain Admins,dba"}}))
	require.Nil(t, f)
	assert.Equal(t, []string{"Domain Admins,dba"}, pr.Groups)
}

// A token issued in the future (beyond a small skew) is refused.
func TestIssuedInTheFuture(t *testing.T) {
	p := newIDP(t)
	v := identity.NewVerifier(p.provider(), nil)
	for skew, ok := range map[time.Duration]bool{30 * time.Second: true, 10 * time.Minute: false, 24 * time.Hour: false} {
		tok := signWith(t, p.iss.Key, devissuer.KeyID(p.iss.Key), "at+jwt", map[string]any{"iss": p.iss.URL, "sub": "a", "aud": "sluice",
			"iat": time.Now().Add(skew).Unix(), "exp": time.Now().Add(48 * time.Hour).Unix()})
		_, f := v.Verify(context.Background(), tok)
		if ok {
			assert.Nil(t, f, skew)
		} else {
			require.NotNil(t, f, skew)
			assert.Equal(t, identity.CodeNotYetValid, f.Code, skew)
		}
	}
}

// Several issuers are trusted at once, each with its own audience and
// mapping; any other issuer is refused as such.
func TestSeveralIssuers(t *testing.T) {
	people, agents, stranger := newIDP(t), newIDP(t), newIDP(t)
	ap := agents.provider()
	ap.Audience = "sluice-agents"
	ap.SubjectGroups = map[string][]string{"ci": {"engineers"}}
	set := identity.NewSet("d1", []identity.Provider{people.provider(), ap}, nil)
	ctx := context.Background()

	pr, f := set.Verify(ctx, people.mint(t, devissuer.Claims{Subject: "alice", Groups: []string{"dba"}}))
	require.Nil(t, f)
	assert.Equal(t, []string{"dba"}, pr.Groups)
	assert.Equal(t, people.iss.URL, pr.Issuer)

	pr, f = set.Verify(ctx, agents.mint(t, devissuer.Claims{Subject: "ci", Machine: true, Audience: "sluice-agents"}))
	require.Nil(t, f)
	assert.Equal(t, []string{"engineers"}, pr.Groups)
	_, f = set.Verify(ctx, agents.mint(t, devissuer.Claims{Subject: "ci", Machine: true}))
	require.NotNil(t, f, "the agents' provider has its own audience")
	assert.Equal(t, identity.CodeWrongAudience, f.Code)

	_, f = set.Verify(ctx, stranger.mint(t, devissuer.Claims{Subject: "alice"}))
	require.NotNil(t, f)
	assert.Equal(t, identity.CodeUntrusted, f.Code)
	assert.Contains(t, f.Reason, stranger.iss.URL)
	assert.Equal(t, int32(0), stranger.jwksCalls.Load(), "an untrusted issuer's keys are never fetched")
}

// Applying another identity configuration takes effect at once: a client
// that follows it forgets what it verified and trusts only answers made
// under the new configuration.
func TestChangeTakesEffectAtOnce(t *testing.T) {
	oldIdP, newIdP := newIDP(t), newIDP(t)
	_, conn := testkit.NATS(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	require.NoError(t, provision(ctx, conn))
	apply := func(digest string, p identity.Provider) { applyProviders(t, ctx, conn, digest, p) }
	apply("d-old", oldIdP.provider())
	go func() { _ = identity.New(identity.Config{Conn: conn}).Run(ctx) }()

	view := controlstate.NewView()
	c := authn.New(conn.NC)
	view.OnChange(func(key string) {
		if key == controlstate.KeyIdentityProvider {
			c.SetIdentityDigest(view.IdentityDigest())
		}
	})
	go func() { _ = view.Follow(ctx, conn.JS) }()
	<-view.Ready()

	tok := oldIdP.mint(t, devissuer.Claims{Subject: "alice", Groups: []string{"engineers"}})
	testkit.Eventually(t, 10*time.Second, func() error {
		if _, e := c.Verify(ctx, tok); e != nil {
			return fmt.Errorf("%s", e.GetMessage())
		}
		return nil
	})
	apply("d-new", newIdP.provider())
	testkit.Eventually(t, 10*time.Second, func() error {
		_, e := c.Verify(ctx, tok)
		if e == nil {
			return fmt.Errorf("the old issuer's token still verifies")
		}
		if e.GetCode() != identity.CodeUntrusted {
			return fmt.Errorf("refused as %s, not as an untrusted issuer", e.GetCode())
		}
		return nil
	})
	_, e := c.Verify(ctx, newIdP.mint(t, devissuer.Claims{Subject: "alice"}))
	assert.Nil(t, e)
}

// A provider can be limited to some groups, and an unverified email
// identifies nobody.
func TestAllowedGroupsAndUnverifiedEmail(t *testing.T) {
	p := newIDP(t)
	prov := p.provider()
	prov.AllowedGroups = []string{"engineers"}
	v := identity.NewVerifier(prov, nil)
	pr, f := v.Verify(context.Background(), p.mint(t, devissuer.Claims{Subject: "ci", Email: "boss@example.com",
		Groups: []string{"engineers", "sluice-admins"}, Extra: map[string]any{"email_verified": false}}))
	require.Nil(t, f)
	assert.Equal(t, []string{"engineers"}, pr.Groups, "a group outside allowed_groups is dropped")
	assert.Empty(t, pr.Email)
}

// A token of an issuer trusted by a configuration stored a moment ago is
// verified at once, asked straight over NATS: the service catches its
// watch up before it answers that the issuer is not trusted.
func TestNewIssuerTrustedAtOnce(t *testing.T) {
	_, conn := testkit.NATS(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	require.NoError(t, provision(ctx, conn))
	first := newIDP(t)
	apply := func(digest string, ps ...identity.Provider) { applyProviders(t, ctx, conn, digest, ps...) }
	apply("d0", first.provider())
	go func() { _ = identity.New(identity.Config{Conn: conn}).Run(ctx) }()
	verify := func(tok string) *identityv1.VerifyTokenResponse {
		var r identityv1.VerifyTokenResponse
		require.NoError(t, bus.Request(ctx, conn.NC, bus.APIIdentityVerify, &identityv1.VerifyTokenRequest{Token: tok}, &r))
		return &r
	}
	testkit.Eventually(t, 10*time.Second, func() error {
		var r identityv1.VerifyTokenResponse
		if err := bus.Request(ctx, conn.NC, bus.APIIdentityVerify, &identityv1.VerifyTokenRequest{Token: first.mint(t, devissuer.Claims{Subject: "a"})}, &r); err != nil {
			return err
		}
		if r.GetError() != nil {
			return fmt.Errorf("%s", r.GetError().GetMessage())
		}
		return nil
	})
	ps := []identity.Provider{first.provider()}
	for i := range 5 {
		idp := newIDP(t)
		ps = append(ps, idp.provider())
		apply(fmt.Sprintf("d%d", i+1), ps...)
		r := verify(idp.mint(t, devissuer.Claims{Subject: "alice"}))
		require.Nil(t, r.GetError(), "configuration %d", i+1)
		assert.Equal(t, "alice", r.GetPrincipal().GetSubject())
	}
	stranger := newIDP(t)
	r := verify(stranger.mint(t, devissuer.Claims{Subject: "eve"}))
	assert.Equal(t, identity.CodeUntrusted, r.GetError().GetCode())
}

// applyProviders stores an identity configuration trusting ps, as an
// apply does.
func applyProviders(t *testing.T, ctx context.Context, conn *bus.Conn, digest string, ps ...identity.Provider) {
	t.Helper()
	kv, err := controlstate.Bucket(ctx, conn.JS)
	require.NoError(t, err)
	ev := &controlv1.IdentityProviderConfigured{Digest: digest}
	for _, p := range ps {
		ev.Providers = append(ev.Providers, &controlv1.IdentityProvider{Issuer: p.Issuer, Audience: p.Audience})
	}
	b, _ := proto.Marshal(ev)
	_, err = kv.Put(ctx, controlstate.KeyIdentityProvider, b)
	require.NoError(t, err)
}
