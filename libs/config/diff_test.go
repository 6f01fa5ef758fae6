package config_test

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"sluice.dev/sluice/libs/config"
	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
)

// state is what applying text leaves in force.
func state(t *testing.T, text string, by string) config.State {
	t.Helper()
	f, err := config.Parse([]byte(text))
	require.NoError(t, err)
	specs, err := f.TargetSpecs()
	require.NoError(t, err)
	groups, err := f.ApproverProtos(nil)
	require.NoError(t, err)
	st := config.State{Rules: f.RuleProtos(), Approvers: groups, Providers: f.ProviderProtos(), Access: f.AccessProto()}
	for _, s := range specs {
		st.Targets = append(st.Targets, &controlv1.TargetConfigured{Spec: s, AppliedBy: by})
	}
	return st
}

func diff(t *testing.T, cur config.State, text string, prune bool) map[string]config.Change {
	t.Helper()
	f, err := config.Parse([]byte(text))
	require.NoError(t, err)
	changes, err := f.Diff(cur, prune)
	require.NoError(t, err)
	out := map[string]config.Change{}
	for _, c := range changes {
		out[c.Section+"/"+c.Name] = c
	}
	return out
}

func TestDiff(t *testing.T) {
	seal := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	cur := state(t, `oidc:
  - {name: people, issuer: https://idp, audience: sluice}
  - {name: ci, issuer: https://ci, audience: sluice}
access: {admins: [a], auditors: [b]}
targets:
  - {name: db, kind: postgres, postgres: {host: h, database: d, user: u, password: {sealed: `+seal("one")+`}}}
  - {name: demo, kind: postgres, postgres: {host: h, database: demo, user: u, password: {env: PW}}}
policies:
  - {name: first, action: deny, when: 'sql.kind == "ddl"'}
  - {name: second, action: allow, when: 'sql.kind == "read"'}
`, "break-glass")

	same := `oidc:
  - {name: people, issuer: https://idp, audience: sluice}
  - {name: ci, issuer: https://ci, audience: sluice}
access: {admins: [a], auditors: [b]}
targets:
  - {name: db, kind: postgres, postgres: {host: h, database: d, user: u, password: {sealed: ` + seal("one") + `}}}
policies:
  - {name: first, action: deny, when: 'sql.kind == "ddl"'}
  - {name: second, action: allow, when: 'sql.kind == "read"'}
`
	assert.Empty(t, diff(t, cur, same, false), "the same file changes nothing")

	pruned := diff(t, cur, same, true)
	require.Len(t, pruned, 1)
	assert.Equal(t, config.OpRemoved, pruned["targets/demo"].Op)
	assert.Contains(t, pruned["targets/demo"].Summary, "registered by break-glass")

	changed := diff(t, cur, `oidc:
  - {name: ci, issuer: https://ci, audience: sluice-ci}
  - {name: people, issuer: https://idp, audience: sluice}
access: {admins: [a, c], auditors: [b]}
targets:
  - {name: db, kind: postgres, postgres: {host: h, database: d, user: u, password: {sealed: `+seal("two")+`}}}
policies:
  - {name: second, action: allow, when: 'sql.kind == "read"'}
  - name: first
    action: deny
    when: |
      sql.kind == "ddl" &&
      !principal.machine
`, false)
	assert.Equal(t, "password (sealed, changed)", changed["targets/db"].Summary)
	for _, c := range changed {
		assert.NotContains(t, c.Summary, seal("two"))
		assert.NotContains(t, c.Summary, seal("one"))
	}
	assert.Equal(t, []string{"when"}, changed["policies/first"].Fields)
	assert.Equal(t, []string{`-sql.kind == "ddl"`, `+sql.kind == "ddl" &&`, `+!principal.machine`}, changed["policies/first"].WhenDiff)
	assert.Equal(t, "rules reordered", changed["policies/(order)"].Summary)
	assert.Equal(t, "audience sluice -> sluice-ci", changed["identity/ci"].Summary)
	assert.Equal(t, "providers reordered", changed["identity/(order)"].Summary)
	assert.Equal(t, "admins +c", changed["access/access"].Summary)
	assert.NotContains(t, changed, "targets/demo", "without prune, unnamed targets stay")
}

// Applied trusts the control service's answer about which pieces changed.
func TestApplied(t *testing.T) {
	detail := []config.Change{
		{Section: config.SectionTargets, Name: "db", Op: config.OpChanged, Summary: "port 1 -> 2"},
		{Section: config.SectionPolicies, Name: "r", Op: config.OpAdded},
		{Section: config.SectionMasking, Name: "r", Op: config.OpAdded},
	}
	got := config.Applied(detail, []*controlv1.Change{
		{Kind: "target", Name: "db", Op: "updated"},
		{Kind: "policy", Name: "default", Op: "unchanged"},
		{Kind: "target", Name: "other", Op: "removed"},
		{Kind: "access", Name: "default", Op: "updated"},
	})
	var names []string
	for _, c := range got {
		names = append(names, c.Section+"/"+c.Name+"/"+c.Op)
	}
	assert.Equal(t, "targets/db/changed targets/other/removed access/access/changed", strings.Join(names, " "))
}
