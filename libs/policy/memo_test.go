package policy

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

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
		v, masks := set.Rule(context.Background(), in)
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
	assert.Equal(t, uint64(len(inputs)), set.memo.hitCount(), "each input's second answer came from the memo")
	_, masks := set.Rule(context.Background(), inputs[2].in)
	assert.Len(t, masks, 1, "the engineer's read of customers is masked")
	_, masks = set.Rule(context.Background(), inputs[3].in)
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
	v, _ := set.Rule(context.Background(), in)
	assert.Equal(t, Allow, v.Action)
	in.Now = morning.Add(6 * time.Hour)
	v, _ = set.Rule(context.Background(), in)
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
	v, _ := set.Rule(ctx, in)
	require.Equal(t, Deny, v.Action, "a cancelled evaluation denies")
	v, _ = set.Rule(context.Background(), in)
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
			v, _ := set.Rule(context.Background(), hot)
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

	// An input too large to be worth a key is ruled on every time.
	groups := make([]string, memoMaxKey)
	for i := range groups {
		groups[i] = "g"
	}
	big := Input{Principal: &commonv1.Principal{Subject: "alice", Groups: groups}}
	_, ok := set.key(big)
	assert.False(t, ok)
}

// Two inputs are one key only when everything the rules may read is equal:
// parts are length prefixed, so moving bytes between parts makes another key.
func TestMemoKeysAreUnambiguous(t *testing.T) {
	set, err := Compile(memoRules(), 1)
	require.NoError(t, err)
	keys := map[string]string{}
	add := func(name string, in Input) {
		k, ok := set.key(in)
		require.True(t, ok, name)
		if other, dup := keys[k]; dup {
			t.Errorf("%s and %s share a key", name, other)
		}
		keys[k] = name
	}
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
	add("sql fingerprint", Input{SQL: &policyv1.SQLInput{Kind: "read", Fingerprint: "ab"}})
	add("sql columns", Input{SQL: &policyv1.SQLInput{Kind: "read", Columns: []string{"email"}}})
	// The text alone does not make another key when no rule reads it.
	k1, _ := set.key(Input{SQL: &policyv1.SQLInput{Kind: "read", Text: "SELECT 1"}})
	k2, _ := set.key(Input{SQL: &policyv1.SQLInput{Kind: "read", Text: "SELECT 2"}})
	assert.Equal(t, k1, k2)
	assert.Equal(t, "sql", keys[k1])
}
