package policy

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"sluice.dev/sluice/libs/config"
	approvalsv1 "sluice.dev/sluice/proto/sluice/approvals/v1"
	commonv1 "sluice.dev/sluice/proto/sluice/common/v1"
	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
	policyv1 "sluice.dev/sluice/proto/sluice/policy/v1"
)

func (m *memo) hitCount() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.hits
}

// ruleTwice rules on in through the memo twice and checks both answers
// against evaluating the rules afresh.
func ruleTwice(t *testing.T, set *Set, in Input) Verdict {
	t.Helper()
	want, wantMasks := set.Evaluate(context.Background(), in), set.Masks(context.Background(), in)
	for range 2 {
		v, masks, _ := set.Rule(context.Background(), in)
		assert.Equal(t, want, v)
		require.Len(t, masks, len(wantMasks))
		for i := range masks {
			assert.True(t, proto.Equal(wantMasks[i], masks[i]))
		}
	}
	return want
}

func memoRules() []*controlv1.Rule {
	return []*controlv1.Rule{
		{Name: "no-drop", Action: Deny, When: `protocol == "postgres" && sql.kind == "ddl"`},
		{Name: "review-writes", Action: Review, Approvers: []string{"dba"}, When: `protocol == "postgres" && sql.kind == "write" && !grants.exists(g, g.role == "writer")`},
		{Name: "reads", Action: Allow, When: `"engineers" in principal.groups && sql.kind in ["read", "write"] && !("payroll" in sql.tables)`},
		{Name: "ssh-ls", Action: Allow, When: `protocol == "ssh" && ssh.program == "ls"`},
		{Name: "mask-email", Action: Mask, When: `"customers" in sql.tables && !("dba" in principal.groups)`,
			Mask: &controlv1.MaskRule{Columns: []string{"customers.email"}, Action: "redact"}},
	}
}

// The memo answers what the rules answer, for inputs that differ in each
// thing a rule reads: the principal, the target, the classification, the
// grants and the protocol's own input.
func TestMemoAnswersWhatTheRulesAnswer(t *testing.T) {
	set, err := Compile(memoRules(), 1)
	require.NoError(t, err)
	eng := &commonv1.Principal{Subject: "alice", Groups: []string{"engineers"}}
	dba := &commonv1.Principal{Subject: "bob", Groups: []string{"engineers", "dba"}}
	read := func(tables ...string) *policyv1.SQLInput {
		return &policyv1.SQLInput{Text: "SELECT 1", Kind: "read", Command: "SELECT", Tables: tables, Statements: 1}
	}
	write := &policyv1.SQLInput{Text: "UPDATE x SET a = 1", Kind: "write", Command: "UPDATE", Tables: []string{"x"}, Statements: 1}
	grant := []*approvalsv1.Grant{{Id: "g1", Role: "writer"}}
	inputs := []struct {
		in   Input
		want string
	}{
		{Input{Principal: eng, Protocol: "postgres", SQL: read("orders")}, "reads"},
		{Input{Principal: eng, Protocol: "postgres", SQL: read("payroll")}, NoMatch},
		{Input{Principal: eng, Protocol: "postgres", SQL: read("customers")}, "reads"},
		{Input{Principal: dba, Protocol: "postgres", SQL: read("customers")}, "reads"},
		{Input{Principal: &commonv1.Principal{Subject: "carol"}, Protocol: "postgres", SQL: read("orders")}, NoMatch},
		{Input{Principal: eng, Protocol: "postgres", SQL: &policyv1.SQLInput{Text: "DROP TABLE x", Kind: "ddl"}}, "no-drop"},
		{Input{Principal: eng, Protocol: "postgres", SQL: write}, "review-writes"},
		{Input{Principal: eng, Protocol: "postgres", SQL: write, Grants: grant}, "reads"},
		{Input{Principal: eng, Protocol: "ssh", SSH: &policyv1.SSHInput{RequestType: "exec", Command: "ls", Program: "ls"}}, "ssh-ls"},
		{Input{Principal: eng, Protocol: "ssh", SSH: &policyv1.SSHInput{RequestType: "exec", Command: "rm", Program: "rm"}}, NoMatch},
		{Input{Principal: eng, Protocol: "postgres", Target: &commonv1.Target{Name: "a"}, SQL: read("orders")}, "reads"},
	}
	for _, c := range inputs {
		assert.Equal(t, c.want, ruleTwice(t, set, c.in).Rule)
	}
	// Each input's second answer came from the memo, and so did the first
	// answer to the last input: no rule reads the target, in which alone it
	// differs from the first.
	assert.Equal(t, uint64(len(inputs)+1), set.memo.hitCount())
	_, masks, _ := set.Rule(context.Background(), inputs[2].in)
	assert.Len(t, masks, 1, "the engineer's read of customers is masked")
	_, masks, remembered := set.Rule(context.Background(), inputs[3].in)
	assert.True(t, remembered)
	assert.Empty(t, masks, "the dba's is not")
}

// A statement with another text and the same classification is ruled on
// from the memo, unless a rule reads the text.
func TestMemoKeysOnTheTextOnlyWhenARuleReadsIt(t *testing.T) {
	in := func(text string) Input {
		return Input{Principal: &commonv1.Principal{Subject: "alice", Groups: []string{"engineers"}}, Protocol: "postgres",
			SQL: &policyv1.SQLInput{Text: text, Kind: "read", Command: "SELECT", Tables: []string{"orders"}, Statements: 1}}
	}
	set, err := Compile(memoRules(), 1)
	require.NoError(t, err)
	for i := range 10 {
		set.Rule(context.Background(), in(fmt.Sprintf("SELECT id AS c%d FROM orders", i)))
	}
	assert.Equal(t, uint64(9), set.memo.hitCount())

	set, err = Compile([]*controlv1.Rule{
		{Name: "no-secret", Action: Deny, When: `sql.text.contains("secret")`},
		{Name: "reads", Action: Allow, When: `sql.kind == "read"`},
	}, 1)
	require.NoError(t, err)
	require.True(t, set.UsesText)
	assert.Equal(t, "reads", ruleTwice(t, set, in("SELECT id FROM orders")).Rule)
	assert.Equal(t, "no-secret", ruleTwice(t, set, in("SELECT id AS secret FROM orders")).Rule)
	assert.Equal(t, uint64(2), set.memo.hitCount(), "only the same text was answered from the memo")
}

// A set whose rules read the time is never answered from the memo: the
// same input gets another verdict at another time.
func TestMemoIsNotUsedWhenARuleReadsTheTime(t *testing.T) {
	set, err := Compile([]*controlv1.Rule{{Name: "office-hours", Action: Allow, When: `now.getHours() < 12`}}, 1)
	require.NoError(t, err)
	morning := time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)
	in := Input{Protocol: "postgres", SQL: &policyv1.SQLInput{Kind: "read"}, Now: morning}
	v, _, _ := set.Rule(context.Background(), in)
	assert.Equal(t, Allow, v.Action)
	in.Now = morning.Add(6 * time.Hour)
	v, _, _ = set.Rule(context.Background(), in)
	assert.Equal(t, Deny, v.Action)
	assert.Zero(t, set.memo.hitCount())
}

// An evaluation cut short by its context denies, and that denial is not
// remembered: the next caller gets the rules' answer.
func TestMemoForgetsEvaluationsCutShort(t *testing.T) {
	// 400 iterations: the evaluation checks for an interruption every 100.
	list := "[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]"
	when := fmt.Sprintf("%s.all(x, %s.all(y, x > 0)) && sql.kind == \"read\"", list, list)
	set, err := Compile([]*controlv1.Rule{{Name: "reads", Action: Allow, When: when}}, 1)
	require.NoError(t, err)
	in := Input{Protocol: "postgres", SQL: &policyv1.SQLInput{Kind: "read"}}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	v, _, _ := set.Rule(ctx, in)
	require.Equal(t, Deny, v.Action, "a cancelled evaluation denies")
	v, _, _ = set.Rule(context.Background(), in)
	assert.Equal(t, Allow, v.Action)
	assert.Zero(t, set.memo.hitCount())
}

// The memo keeps two generations of memoEntries, and an input in use
// stays in it.
func TestMemoIsBounded(t *testing.T) {
	set, err := Compile([]*controlv1.Rule{{Name: "alice", Action: Allow, When: `principal.subject == "alice"`}}, 1)
	require.NoError(t, err)
	hot := Input{Principal: &commonv1.Principal{Subject: "alice"}}
	for i := range 5 * memoEntries {
		set.Rule(context.Background(), Input{Principal: &commonv1.Principal{Subject: fmt.Sprint("p", i)}})
		if i%100 == 0 {
			v, _, _ := set.Rule(context.Background(), hot)
			assert.Equal(t, Allow, v.Action)
		}
	}
	set.memo.mu.Lock()
	size := len(set.memo.cur) + len(set.memo.old)
	set.memo.mu.Unlock()
	assert.LessOrEqual(t, size, 2*memoEntries)
	before := set.memo.hitCount()
	set.Rule(context.Background(), hot)
	assert.Equal(t, before+1, set.memo.hitCount(), "the input in use is still remembered")

	// Large keys turn generations over by their bytes.
	for i := range 3000 {
		set.Rule(context.Background(), Input{Principal: &commonv1.Principal{Subject: fmt.Sprintf("%04d%s", i, strings.Repeat("a", memoMaxKey-100))}})
	}
	set.memo.mu.Lock()
	var keyBytes int
	for _, gen := range []map[string]memoEntry{set.memo.cur, set.memo.old} {
		for k := range gen {
			keyBytes += len(k)
		}
	}
	set.memo.mu.Unlock()
	assert.LessOrEqual(t, keyBytes, 8<<20, "8 MiB of keys at most")

	// An input too large to be worth a key is ruled on every time.
	big := Input{Principal: &commonv1.Principal{Subject: strings.Repeat("a", memoMaxKey)}}
	_, ok := set.key(big)
	assert.False(t, ok)
}

// Two inputs are one key only when everything the rules may read is equal:
// parts are length prefixed, so moving bytes between parts makes another key.
func TestMemoKeysAreUnambiguous(t *testing.T) {
	set, err := Compile([]*controlv1.Rule{{Name: "all", Action: Allow, When: `protocol == "" || principal == principal || ` +
		`target == target || sql == sql || ssh == ssh || k8s == k8s || mcp == mcp || grants == grants`}}, 1)
	require.NoError(t, err)
	add := distinctKeys(t, set)
	add("empty", Input{})
	add("protocol", Input{Protocol: "postgres"})
	add("subject", Input{Principal: &commonv1.Principal{Subject: "postgres"}})
	add("target", Input{Target: &commonv1.Target{Name: "postgres"}})
	add("target label", Input{Target: &commonv1.Target{Name: "a", Labels: map[string]string{"env": "prod"}}})
	add("target label 2", Input{Target: &commonv1.Target{Name: "a", Labels: map[string]string{"env": "dev"}}})
	add("grant", Input{Grants: []*approvalsv1.Grant{{Id: "g"}}})
	add("empty grant", Input{Grants: []*approvalsv1.Grant{{}}})
	add("sql", Input{SQL: &policyv1.SQLInput{Kind: "read"}})
	add("ssh", Input{SSH: &policyv1.SSHInput{RequestType: "read"}})
	add("sql text", Input{SQL: &policyv1.SQLInput{Kind: "read", Text: "SELECT 1"}})
	add("sql fingerprint", Input{SQL: &policyv1.SQLInput{Kind: "read", Fingerprint: "ab"}})
	add("sql columns", Input{SQL: &policyv1.SQLInput{Kind: "read", Columns: []string{"email"}}})
}

// With only some fields selected, every field's value says where it ends,
// so no two inputs that differ in a selected field share a key, whatever
// the field's kind: strings, lists, maps, numbers, booleans, bytes and
// messages.
func TestMemoSelectedKeysAreUnambiguous(t *testing.T) {
	set, err := Compile([]*controlv1.Rule{{Name: "some", Action: Allow, When: `principal.subject == "" || ` +
		`"a" in principal.groups || "a" in target.labels || target.name == "" || sql.kind == "" || "a" in sql.tables || "a" in sql.functions || ` +
		`sql.statements > 1 || k8s.is_resource || k8s.body == b"" || k8s.pod.privileged || ` +
		`has(mcp.arguments) || ssh.commands.size() > 0`}}, 1)
	require.NoError(t, err)
	for _, v := range []string{VarPrincipal, VarTarget, VarSQL, VarK8s, VarMCP, VarSSH} {
		require.False(t, set.reads[v].whole, "%s must be keyed by its selected fields here", v)
	}
	args := func(k string, v any) *structpb.Struct {
		s, err := structpb.NewStruct(map[string]any{k: v})
		require.NoError(t, err)
		return s
	}
	add := distinctKeys(t, set)
	add("empty", Input{})
	add("subject ab, group c", Input{Principal: &commonv1.Principal{Subject: "ab", Groups: []string{"c"}}})
	add("subject a, group bc", Input{Principal: &commonv1.Principal{Subject: "a", Groups: []string{"bc"}}})
	add("groups a, b", Input{Principal: &commonv1.Principal{Groups: []string{"a", "b"}}})
	add("group ab", Input{Principal: &commonv1.Principal{Groups: []string{"ab"}}})
	add("groups b, a", Input{Principal: &commonv1.Principal{Groups: []string{"b", "a"}}})
	add("label a=b", Input{Target: &commonv1.Target{Labels: map[string]string{"a": "b"}}})
	add("label ab=", Input{Target: &commonv1.Target{Labels: map[string]string{"ab": ""}}})
	add("labels a=, b=", Input{Target: &commonv1.Target{Labels: map[string]string{"a": "", "b": ""}}})
	add("label a=, name b", Input{Target: &commonv1.Target{Name: "b", Labels: map[string]string{"a": ""}}})
	add("kind read", Input{SQL: &policyv1.SQLInput{Kind: "read"}})
	add("table read", Input{SQL: &policyv1.SQLInput{Tables: []string{"read"}}})
	// Were a list not counted, the second table's bytes would read as the
	// functions' field number (7) and the first 6 bytes of one function of
	// 8, whose last two bytes would read as the field number and an empty
	// function.
	add("tables a and \\x08bcdefg, function ''", Input{SQL: &policyv1.SQLInput{Tables: []string{"a", "\x08bcdefg"}, Functions: []string{""}}})
	add("table a, function bcdefg\\x07\\x00", Input{SQL: &policyv1.SQLInput{Tables: []string{"a"}, Functions: []string{"bcdefg\x07\x00"}}})
	add("1 statement", Input{SQL: &policyv1.SQLInput{Statements: 1}})
	add("2 statements", Input{SQL: &policyv1.SQLInput{Statements: 2}})
	add("a resource", Input{K8s: &policyv1.K8SCommand{IsResource: true}})
	add("a body", Input{K8s: &policyv1.K8SCommand{Body: []byte{1}}})
	add("a pod", Input{K8s: &policyv1.K8SCommand{Pod: &policyv1.K8SPod{Present: true}}})
	add("a privileged pod", Input{K8s: &policyv1.K8SCommand{Pod: &policyv1.K8SPod{Present: true, Privileged: true}}})
	add("arguments a=1", Input{MCP: &policyv1.MCPInput{Arguments: args("a", 1)}})
	add("arguments a=2", Input{MCP: &policyv1.MCPInput{Arguments: args("a", 2)}})
	add("arguments a='1'", Input{MCP: &policyv1.MCPInput{Arguments: args("a", "1")}})
	add("a command", Input{SSH: &policyv1.SSHInput{Commands: []*policyv1.ShellCommand{{Name: "rm"}}}})
	add("two commands", Input{SSH: &policyv1.SSHInput{Commands: []*policyv1.ShellCommand{{Name: "rm"}, {}}}})

	// What no rule selects is not in the key.
	a, _ := set.key(Input{SQL: &policyv1.SQLInput{Kind: "read", Text: "SELECT 1", Columns: []string{"a"}}})
	b, _ := set.key(Input{SQL: &policyv1.SQLInput{Kind: "read", Text: "SELECT 2"}})
	assert.Equal(t, a, b)
	// Equal maps are equal keys, whatever order they were built in.
	for range 20 {
		a, _ := set.key(Input{Target: &commonv1.Target{Labels: map[string]string{"a": "1", "b": "2", "c": "3", "d": "4"}}})
		b, _ := set.key(Input{Target: &commonv1.Target{Labels: map[string]string{"d": "4", "c": "3", "b": "2", "a": "1"}}})
		require.Equal(t, a, b)
	}
}

// The key holds only the fields the rules select; a variable compared or
// passed whole is in it whole.
func TestMemoKeysHoldWhatTheRulesRead(t *testing.T) {
	same := func(set *Set, a, b Input) bool {
		ka, ok := set.key(a)
		require.True(t, ok)
		kb, ok := set.key(b)
		require.True(t, ok)
		return bytes.Equal(ka, kb)
	}
	read := func(text string, columns ...string) Input {
		return Input{Principal: &commonv1.Principal{Subject: "alice", Groups: []string{"engineers"}}, Protocol: "postgres",
			SQL: &policyv1.SQLInput{Text: text, Kind: "read", Command: "SELECT", Tables: []string{"orders"}, Columns: columns}}
	}
	set, err := Compile(memoRules(), 1)
	require.NoError(t, err)
	assert.True(t, same(set, read("SELECT a AS x FROM orders", "a"), read("SELECT o.b FROM orders o", "o.b")),
		"no rule reads the text or the columns")
	other := read("SELECT 1")
	other.Principal = &commonv1.Principal{Subject: "bob", Groups: []string{"engineers"}}
	assert.True(t, same(set, read("SELECT 1"), other), "no rule reads the subject")
	other.Principal.Groups = []string{"dba"}
	assert.False(t, same(set, read("SELECT 1"), other), "rules read the groups")
	other = read("SELECT 1")
	other.SQL.Kind = "write"
	assert.False(t, same(set, read("SELECT 1"), other), "rules read the kind")
	other = read("SELECT 1")
	other.Grants = []*approvalsv1.Grant{{Role: "writer"}}
	assert.False(t, same(set, read("SELECT 1"), other), "rules read the grants")

	for _, when := range []string{
		`"email" in sql.columns`,
		`sql == sql`,
		`.sql.columns.size() > 0`,
		`has(sql.columns)`,
	} {
		set, err := Compile([]*controlv1.Rule{{Name: "r", Action: Allow, When: when}}, 1)
		require.NoError(t, err, when)
		assert.False(t, same(set, read("SELECT 1", "a"), read("SELECT 1", "b")), "%s reads the columns", when)
	}
	// A comprehension's variable named like one of the rules' variables
	// keeps more in the key, never less.
	set, err = Compile([]*controlv1.Rule{{Name: "r", Action: Allow, When: `sql.tables.exists(sql, sql == "orders")`}}, 1)
	require.NoError(t, err)
	assert.False(t, same(set, read("SELECT 1", "a"), read("SELECT 1", "b")))
}

// Whatever inputs come in whatever order, the memo answers what the rules
// answer: inputs from small domains share keys often, so a key that left
// out something a rule reads would give one input another's verdict.
func TestMemoNeverAnswersForAnotherInput(t *testing.T) {
	sets := [][]*controlv1.Rule{memoRules(), {
		{Name: "cols", Action: Deny, When: `protocol == "postgres" && "c.ssn" in sql.columns`},
		{Name: "text", Action: Review, Approvers: []string{"a"}, When: `sql.text.startsWith("DELETE")`},
		{Name: "label", Action: Allow, When: `"env" in target.labels && target.labels["env"] == "dev"`},
		{Name: "subject", Action: Allow, When: `principal.subject == "alice" && !principal.machine`},
		{Name: "k8s", Action: Allow, When: `k8s.verb == "get" && k8s.namespace != "kube-system"`},
		{Name: "mask", Action: Mask, When: `sql.tables.exists(t, t == "customers") || principal.groups.size() == 0`,
			Mask: &controlv1.MaskRule{Columns: []string{"customers.email"}, Action: "redact"}},
	}}
	pick := func(r *rand.Rand, xs ...string) string { return xs[r.IntN(len(xs))] }
	for i, rules := range sets {
		set, err := Compile(rules, 1)
		require.NoError(t, err)
		r := rand.New(rand.NewPCG(uint64(i), 7))
		for range 3000 {
			in := Input{
				Protocol:  pick(r, "postgres", "ssh", "kubernetes"),
				Principal: &commonv1.Principal{Subject: pick(r, "alice", "bob"), Groups: []string{pick(r, "engineers", "dba", "x")}, Machine: r.IntN(2) == 0},
				Target:    &commonv1.Target{Name: pick(r, "a", "b"), Labels: map[string]string{pick(r, "env", "team"): pick(r, "dev", "prod")}},
				SQL: &policyv1.SQLInput{Text: pick(r, "SELECT 1", "DELETE FROM t"), Kind: pick(r, "read", "write", "ddl"),
					Tables: []string{pick(r, "orders", "customers", "payroll")}, Columns: []string{pick(r, "c.ssn", "c.email")}},
				SSH: &policyv1.SSHInput{Program: pick(r, "ls", "rm")},
				K8s: &policyv1.K8SCommand{Verb: pick(r, "get", "delete"), Namespace: pick(r, "default", "kube-system")},
			}
			if r.IntN(3) == 0 {
				in.Grants = []*approvalsv1.Grant{{Role: pick(r, "writer", "ddl")}}
			}
			v, masks, _ := set.Rule(context.Background(), in)
			require.Equal(t, set.Evaluate(context.Background(), in), v)
			require.Len(t, masks, len(set.Masks(context.Background(), in)))
		}
		assert.Greater(t, set.memo.hitCount(), uint64(300), "inputs shared keys")
	}
}

// BenchmarkRuleRemembered is a verdict from the memo for an engineer's read
// under the policy `sluice dev` applies: the key and the lookup.
func BenchmarkRuleRemembered(b *testing.B) {
	f, err := config.ReadFile("../../services/sluice/internal/dev/sluice.yaml")
	require.NoError(b, err)
	set, err := Compile(f.RuleProtos(), 1)
	require.NoError(b, err)
	in := Input{Principal: &commonv1.Principal{Subject: "alice", Email: "alice@example.com", Groups: []string{"engineers"}, Issuer: "https://idp"},
		Target: &commonv1.Target{Name: "demo", Kind: "postgres", Labels: map[string]string{"env": "dev"}}, Protocol: "postgres",
		SQL: &policyv1.SQLInput{Text: "SELECT abalance AS c1 FROM pgbench_accounts WHERE aid = 5", Kind: "read", Command: "SELECT",
			Reads: []string{"pgbench_accounts"}, Tables: []string{"pgbench_accounts"}, Statements: 1, Columns: []string{"abalance", "aid"}}}
	set.Rule(context.Background(), in)
	b.ReportAllocs()
	for b.Loop() {
		set.Rule(context.Background(), in)
	}
}

// distinctKeys returns add, which fails the test when an input's key is
// another's.
func distinctKeys(t *testing.T, set *Set) (add func(name string, in Input)) {
	keys := map[string]string{}
	return func(name string, in Input) {
		t.Helper()
		k, ok := set.key(in)
		require.True(t, ok, name)
		if other, dup := keys[string(k)]; dup {
			t.Errorf("%s and %s share a key", name, other)
		}
		keys[string(k)] = name
	}
}
