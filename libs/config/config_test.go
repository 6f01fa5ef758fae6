package config_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"sluice.dev/sluice/libs/config"
)

func TestOIDCOneOrSeveral(t *testing.T) {
	one, err := config.Parse([]byte("oidc:\n  issuer: https://idp\n  audience: sluice\n"))
	require.NoError(t, err)
	ps := one.ProviderProtos()
	require.Len(t, ps, 1)
	assert.Equal(t, "oidc", ps[0].GetName())

	several, err := config.Parse([]byte(`oidc:
  - name: people
    issuer: https://idp
    audience: sluice
    groups_claim: realm_access.roles
  - issuer: https://ci.example/oidc
    audience: sluice-ci
    subject_groups:
      deploy-bot: [engineers, deployers]
    groups_expression: 'claims.repository == "org/app" ? ["engineers"] : []'
`))
	require.NoError(t, err)
	ps = several.ProviderProtos()
	require.Len(t, ps, 2)
	assert.Equal(t, "people", ps[0].GetName())
	assert.Equal(t, "https://ci.example/oidc", ps[1].GetName(), "unnamed providers are named by their issuer")
	assert.Equal(t, []string{"engineers", "deployers"}, ps[1].GetSubjectGroups()["deploy-bot"].GetGroups())
	assert.Contains(t, ps[1].GetGroupsExpression(), "org/app")
	assert.Nil(t, (&config.File{}).ProviderProtos(), "no oidc section, no change")
}

func TestOIDCRefusals(t *testing.T) {
	for name, tc := range map[string]struct{ yaml, want string }{
		"unknown field":          {"oidc:\n  issuer: https://idp\n  audience: a\n  grups_claim: x\n", "grups_claim"},
		"unknown field in list":  {"oidc:\n  - issuer: https://idp\n    audience: a\n    bogus: 1\n", "bogus"},
		"no audience":            {"oidc:\n  issuer: https://idp\n", "issuer and audience are required"},
		"issuer twice":           {"oidc:\n  - {issuer: https://idp, audience: a}\n  - {issuer: https://idp, audience: b}\n", "listed twice"},
		"expression wrong type":  {"oidc:\n  issuer: https://idp\n  audience: a\n  groups_expression: '1 + 1'\n", "list of strings"},
		"expression syntax":      {"oidc:\n  issuer: https://idp\n  audience: a\n  groups_expression: 'claims.'\n", "groups_expression"},
		"not a mapping":          {"oidc: https://idp\n", "a provider"},
		"empty admins":           {"access:\n  admins: []\n", "lock every admin out"},
		"empty allowed groups":   {"oidc:\n  issuer: https://idp\n  audience: a\n  allowed_groups: []\n", "allowed_groups is empty"},
		"unknown grant approver": {"access:\n  admins: [a]\n  grant_approvers: nobody\napprovers:\n  - {name: approvers, groups: [approvers]}\n", `"nobody" is not defined`},
		"subjects of which provider": {"oidc:\n  - {name: people, issuer: https://idp, audience: a}\n  - {issuer: https://ci, audience: b}\n" +
			"approvers:\n  - {name: approvers, subjects: [bob@example.com]}\n", "say which one its subjects come from"},
		"unknown approver provider": {"oidc:\n  issuer: https://idp\n  audience: a\napprovers:\n  - {name: approvers, groups: [g], provider: other}\n", `provider "other" is not one of`},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := config.Parse([]byte(tc.yaml))
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestAccess(t *testing.T) {
	f, err := config.Parse([]byte("access:\n  admins: [platform]\n  auditors: [security, audit]\n  grant_approvers: approvers\napprovers:\n  - {name: approvers, groups: [oncall]}\n"))
	require.NoError(t, err)
	a := f.AccessProto()
	assert.Equal(t, []string{"platform"}, a.GetAdmins())
	assert.Equal(t, []string{"security", "audit"}, a.GetAuditors())
	assert.Equal(t, "approvers", a.GetGrantApprovers())
	f, err = config.Parse([]byte("targets: []\n"))
	require.NoError(t, err)
	assert.Nil(t, f.AccessProto(), "no access section, no change")
}

func TestApproverGroupsNameTheirIssuer(t *testing.T) {
	f, err := config.Parse([]byte(`oidc:
  - {name: people, issuer: https://idp, audience: a}
  - {issuer: https://ci, audience: b}
approvers:
  - {name: approvers, subjects: [bob@example.com], provider: people}
  - {name: release, subjects: [deploy-bot], provider: https://ci}
  - {name: sre, groups: [sre]}
`))
	require.NoError(t, err)
	gs, err := f.ApproverProtos(nil)
	require.NoError(t, err)
	require.Len(t, gs, 3)
	assert.Equal(t, "https://idp", gs[0].GetIssuer(), "by the provider's name")
	assert.Equal(t, "https://ci", gs[1].GetIssuer(), "by its issuer")
	assert.Empty(t, gs[2].GetIssuer(), "groups alone need no provider")

	one, err := config.Parse([]byte("oidc:\n  issuer: https://idp\n  audience: a\napprovers:\n  - {name: approvers, subjects: [bob]}\n"))
	require.NoError(t, err, "one provider: its subjects are its own")
	gs, err = one.ApproverProtos(nil)
	require.NoError(t, err)
	assert.Empty(t, gs[0].GetIssuer())

	// A file without an oidc section is read against the providers in
	// force.
	applied := f.ProviderProtos()
	alone, err := config.Parse([]byte("approvers:\n  - {name: approvers, subjects: [bob]}\n"))
	require.NoError(t, err)
	_, err = alone.ApproverProtos(applied)
	assert.ErrorContains(t, err, "say which one its subjects come from")
	scoped, err := config.Parse([]byte("approvers:\n  - {name: approvers, subjects: [bob], provider: people}\n"))
	require.NoError(t, err)
	gs, err = scoped.ApproverProtos(applied)
	require.NoError(t, err)
	assert.Equal(t, "https://idp", gs[0].GetIssuer())
	_, err = scoped.ApproverProtos(applied[1:])
	assert.ErrorContains(t, err, `provider "people" is not one of`)
	// Providers applied later must still hold every group's issuer.
	assert.ErrorContains(t, config.CheckApprovers(gs, applied[1:]), "would no longer be an identity provider")
	assert.NoError(t, config.CheckApprovers(gs, applied))
}
