package policy

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/structpb"

	commonv1 "sluice.dev/sluice/proto/sluice/common/v1"
	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
	policyv1 "sluice.dev/sluice/proto/sluice/policy/v1"
)

func TestOnlyProtocols(t *testing.T) {
	tests := []struct {
		when string
		want []string
	}{
		{`protocol == "ssh" && ssh.parse_error`, []string{"ssh"}},
		{`"ssh" == protocol && ssh.parse_error`, []string{"ssh"}},
		{`(protocol == "postgres" && "engineers" in principal.groups) && sql.kind == "read"`, []string{"postgres"}},
		{`.protocol == "ssh" && ssh.parse_error`, []string{"ssh"}},
		{`protocol in ["ssh", "kubernetes"] && principal.machine`, []string{"ssh", "kubernetes"}},
		{`protocol in ["ssh", "kubernetes"] && protocol == "ssh"`, []string{"ssh"}},
		{`protocol == "ssh" && protocol == "postgres"`, []string{}},
		// Anything else can match any protocol, a protocol term after
		// another term included: the term before it could end the
		// evaluation (the cost limit), which denies.
		{`sql.kind == "read" && (protocol == "postgres" && "engineers" in principal.groups)`, nil},
		{`principal.machine && protocol == "ssh"`, nil},
		{`protocol == "ssh" || principal.machine`, nil},
		{`!(protocol == "ssh") && principal.machine`, nil},
		{`protocol != "ssh" && principal.machine`, nil},
		{`protocol.startsWith("ss") && principal.machine`, nil},
		{`protocol in ["ssh", principal.subject]`, nil},
		{`principal.groups.exists(protocol, protocol == "ssh")`, nil},
		{`true`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.when, func(t *testing.T) {
			set, err := Compile([]*controlv1.Rule{{Name: "r", Action: Allow, When: tt.when}}, 1)
			require.NoError(t, err)
			assert.Equal(t, tt.want, set.allow[0].protocols)
		})
	}
}

// A rule is skipped only for protocols where evaluating it gives false
// without an error: skipping never changes a verdict, a denial for an
// error included.
func TestSkippedRulesWouldNotMatch(t *testing.T) {
	whens := []string{
		`protocol == "ssh" && ssh.parse_error`,
		`protocol == "mcp" && mcp.arguments.max_rows > 10`,
		`protocol == "kubernetes" && k8s.verb == "delete" && 1 / 0 == 1`,
		`protocol in ["ssh", "postgres"] && sql.statements / 0 > 1`,
		`protocol == "postgres" && "file_access" in sql.flags`,
		`grants.exists(g, g.role == "x") && protocol == "mcp"`,
	}
	var rules []*controlv1.Rule
	for i, w := range whens {
		rules = append(rules, &controlv1.Rule{Name: string(rune('a' + i)), Action: Allow, When: w})
	}
	set, err := Compile(rules, 1)
	require.NoError(t, err)
	principal := &commonv1.Principal{Subject: "alice", Groups: []string{"engineers"}}
	inputs := []Input{
		{Principal: principal, Protocol: "postgres", SQL: &policyv1.SQLInput{Kind: "read", Flags: []string{"file_access"}, Statements: 1}},
		{Principal: principal, Protocol: "ssh", SSH: &policyv1.SSHInput{ParseError: true}},
		{Principal: principal, Protocol: "kubernetes", K8s: &policyv1.K8SCommand{Verb: "delete"}},
		{Principal: principal, Protocol: "mcp", MCP: &policyv1.MCPInput{Arguments: &structpb.Struct{}}},
		{Principal: principal, Protocol: ""},
	}
	skipped := 0
	for _, in := range inputs {
		for _, r := range set.allow {
			if !r.skips(in.Protocol) {
				continue
			}
			skipped++
			match, err := r.eval(context.Background(), in.activation())
			assert.NoError(t, err, "%s on %q", r.src.GetWhen(), in.Protocol)
			assert.False(t, match, "%s on %q", r.src.GetWhen(), in.Protocol)
		}
	}
	assert.Equal(t, 3+3+4+4+5, skipped, "each rule is skipped for every protocol its leading terms rule out")
}

// A rule that goes over the cost limit denies, whatever protocol a later
// term names: it is evaluated, not skipped.
func TestCostLimitDeniesBeforeAProtocolTerm(t *testing.T) {
	set, err := Compile([]*controlv1.Rule{
		{Name: "expensive", Action: Deny, When: `principal.groups.all(g, g.size() >= 0) && protocol == "ssh"`},
		{Name: "allow-all", Action: Allow, When: `true`},
	}, 1)
	require.NoError(t, err)
	groups := make([]string, 200_000)
	for i := range groups {
		groups[i] = "g"
	}
	v := set.Evaluate(context.Background(), Input{Principal: &commonv1.Principal{Groups: groups}, Protocol: "postgres", SQL: &policyv1.SQLInput{}})
	assert.Equal(t, Deny, v.Action)
	assert.Equal(t, "expensive", v.Rule)
	assert.Contains(t, v.Reason, "cost limit")
}

// A rule that may read sql.fingerprint or sql.text, by name or through the
// whole message, is known to, so the policy service computes the
// fingerprint and limits caching.
func TestUsesFingerprintAndText(t *testing.T) {
	set, err := Compile([]*controlv1.Rule{{Name: "r", Action: Allow, When: `.now.getHours() < 18 && .grants.size() > 0`}}, 1)
	require.NoError(t, err)
	assert.True(t, set.UsesNow, "UsesNow through .now")
	assert.True(t, set.UsesGrants, "UsesGrants through .grants")

	tests := []struct {
		when              string
		fingerprint, text bool
	}{
		{`sql.fingerprint == "abc"`, true, false},
		{`has(sql.fingerprint)`, true, false},
		{`sql.text.contains("x")`, false, true},
		{`sql.kind == "read" && "x" in sql.flags`, false, false},
		{`sql == sluice.policy.v1.SQLInput{fingerprint: "abc"}`, true, true},
		{`[sql].size() == 1`, true, true},
		{`principal.groups.exists(sql, sql == "x")`, true, true},
		{`principal.subject == "sql"`, false, false},
		{`[1].exists(sql, .sql.fingerprint == "abc")`, true, false},
		{`grants.exists(sql, sql.role == "x" || .sql.text == "y")`, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.when, func(t *testing.T) {
			set, err := Compile([]*controlv1.Rule{{Name: "r", Action: Allow, When: tt.when}}, 1)
			require.NoError(t, err)
			assert.Equal(t, tt.fingerprint, set.UsesFingerprint, "UsesFingerprint")
			assert.Equal(t, tt.text, set.UsesText, "UsesText")
		})
	}
}
