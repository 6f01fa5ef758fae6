package policy_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"sluice.dev/sluice/libs/config"
	"sluice.dev/sluice/libs/policy"
	commonv1 "sluice.dev/sluice/proto/sluice/common/v1"
	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
	policyv1 "sluice.dev/sluice/proto/sluice/policy/v1"
)

func rule(name, action, when string) *controlv1.Rule {
	r := &controlv1.Rule{Name: name, Action: action, When: when, Line: 10, Column: 11}
	if action == policy.Review {
		r.Approvers = []string{"approvers"}
	}
	return r
}

func sqlInput(kind string, flags ...string) policy.Input {
	return policy.Input{
		Principal: &commonv1.Principal{Subject: "alice", Groups: []string{"engineers"}},
		Target:    &commonv1.Target{Name: "demo"},
		Protocol:  "postgres",
		SQL:       &policyv1.SQLInput{Kind: kind, Flags: flags},
	}
}

func TestPrecedence(t *testing.T) {
	set, err := policy.Compile([]*controlv1.Rule{
		rule("allow-engineers", policy.Allow, `"engineers" in principal.groups`),
		rule("review-writes", policy.Review, `sql.kind == "write"`),
		rule("deny-files", policy.Deny, `"file_access" in sql.flags`),
	}, 7)
	require.NoError(t, err)
	ctx := context.Background()
	tests := []struct {
		in   policy.Input
		act  string
		rule string
	}{
		{sqlInput("read"), policy.Allow, "allow-engineers"},
		{sqlInput("write"), policy.Review, "review-writes"},
		{sqlInput("write", "file_access"), policy.Deny, "deny-files"},
		{policy.Input{Principal: &commonv1.Principal{Subject: "x"}, SQL: &policyv1.SQLInput{Kind: "read"}}, policy.Deny, policy.NoMatch},
		{policy.Input{}, policy.Deny, policy.NoMatch}, // nil inputs are empty, never a crash
	}
	for _, tc := range tests {
		v := set.Evaluate(ctx, tc.in)
		assert.Equal(t, tc.act, v.Action, tc.rule)
		assert.Equal(t, tc.rule, v.Rule)
	}
	assert.Equal(t, uint64(7), set.Revision)
}

func TestErrorsDeny(t *testing.T) {
	set, err := policy.Compile([]*controlv1.Rule{
		rule("allow-all", policy.Allow, `true`),
		// A missing map key is a runtime error: the verdict is deny.
		rule("broken", policy.Review, `target.labels["env"] == "prod"`),
	}, 1)
	require.NoError(t, err)
	v := set.Evaluate(context.Background(), sqlInput("read"))
	assert.Equal(t, policy.Deny, v.Action)
	assert.Equal(t, "broken", v.Rule)
	assert.Contains(t, v.Reason, "could not be evaluated")

	// A rule that runs past the cost limit denies too.
	set, err = policy.Compile([]*controlv1.Rule{
		rule("expensive", policy.Allow, `[1,2,3,4,5,6,7,8,9,10].all(a, [1,2,3,4,5,6,7,8,9,10].all(b, [1,2,3,4,5,6,7,8,9,10].all(c, [1,2,3,4,5,6,7,8,9,10].all(d, [1,2,3,4,5,6,7,8,9,10].all(e, a+b+c+d+e > 0)))))`),
	}, 1)
	require.NoError(t, err)
	v = set.Evaluate(context.Background(), sqlInput("read"))
	assert.Equal(t, policy.Deny, v.Action)
	assert.Contains(t, v.Reason, "cost limit")
}

func TestCompileErrorsNameRuleLineColumn(t *testing.T) {
	_, err := policy.Compile([]*controlv1.Rule{
		rule("ok", policy.Allow, `true`),
		{Name: "typo", Action: policy.Allow, When: `principal.grups.exists(g, g == "x")`, Line: 12, Column: 11},
		{Name: "not-bool", Action: policy.Deny, When: `sql.kind`, Line: 20, Column: 11},
		{Name: "bad-action", Action: "permit", When: `true`, Line: 30, Column: 5},
		{Name: "no-approvers", Action: policy.Review, When: `true`, Line: 40, Column: 5},
	}, 1)
	var errs policy.CompileErrors
	require.ErrorAs(t, err, &errs)
	require.Len(t, errs, 4)
	assert.Equal(t, "typo", errs[0].Rule)
	assert.Equal(t, 12, errs[0].Line)
	assert.Equal(t, 20, errs[0].Column, "column of the `.` before grups")
	assert.Contains(t, errs[0].Message, "grups")
	assert.Equal(t, "not-bool", errs[1].Rule)
	assert.Contains(t, errs[1].Message, "must be a bool")
	assert.Equal(t, "bad-action", errs[2].Rule)
	assert.Equal(t, "no-approvers", errs[3].Rule)
	assert.Contains(t, err.Error(), `rule "typo", line 12, column 20`)
}

func TestMasksAndCacheability(t *testing.T) {
	mask := &controlv1.Rule{Name: "mask", Action: policy.Mask, When: `!("dba" in principal.groups)`, Mask: &controlv1.MaskRule{Columns: []string{"customers.ssn"}}}
	set, err := policy.Compile([]*controlv1.Rule{rule("allow", policy.Allow, `true`), mask}, 1)
	require.NoError(t, err)
	ctx := context.Background()
	assert.Len(t, set.Masks(ctx, sqlInput("read")), 1)
	dba := sqlInput("read")
	dba.Principal.Groups = []string{"dba"}
	assert.Empty(t, set.Masks(ctx, dba))
	assert.False(t, set.UsesText || set.UsesNow || set.UsesGrants)

	set, err = policy.Compile([]*controlv1.Rule{
		rule("text", policy.Deny, `sql.text.contains("x")`),
		rule("time", policy.Allow, `now.getHours() < 18`),
		rule("grant", policy.Allow, `grants.exists(g, g.role == "writer")`),
	}, 1)
	require.NoError(t, err)
	assert.True(t, set.UsesText)
	assert.True(t, set.UsesNow)
	assert.True(t, set.UsesGrants)
}

func BenchmarkEvaluate(b *testing.B) {
	rules := []*controlv1.Rule{}
	for _, f := range []string{"file_access", "role_change", "config_change", "extension", "drop_database", "backend_signal", "lexer_setting", "replication"} {
		rules = append(rules, rule("deny-"+f, policy.Deny, `protocol == "postgres" && "`+f+`" in sql.flags`))
	}
	rules = append(rules,
		rule("review-ddl", policy.Review, `protocol == "postgres" && sql.kind == "ddl"`),
		rule("review-unbounded", policy.Review, `protocol == "postgres" && "unbounded" in sql.flags`),
		rule("allow-reads", policy.Allow, `protocol == "postgres" && "engineers" in principal.groups && sql.kind in ["read", "transaction"]`),
	)
	set, err := policy.Compile(rules, 1)
	require.NoError(b, err)
	in := sqlInput("read")
	in.SQL.Reads = []string{"customers"}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if v := set.Evaluate(ctx, in); v.Action != policy.Allow {
			b.Fatal(v)
		}
	}
}

// BenchmarkEvaluateDemoPolicy rules on a read by an engineer with the policy
// `sluice dev` applies (45 rules over four protocols), verdict and masks, as
// the policy service does for every statement shape it has not seen.
func BenchmarkEvaluateDemoPolicy(b *testing.B) {
	f, err := config.ReadFile("../../services/sluice/internal/dev/sluice.yaml")
	require.NoError(b, err)
	set, err := policy.Compile(f.RuleProtos(), 1)
	require.NoError(b, err)
	in := sqlInput("read")
	in.SQL.Command = "SELECT"
	in.SQL.Reads = []string{"public.pgbench_accounts"}
	in.SQL.Tables = in.SQL.Reads
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if v := set.Evaluate(ctx, in); v.Action != policy.Allow {
			b.Fatal(v)
		}
		if len(set.Masks(ctx, in)) != 1 {
			b.Fatal("the engineer's read is not masked")
		}
	}
}
