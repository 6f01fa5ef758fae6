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
