package policy_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/config"
	"sluice.dev/sluice/libs/controlstate"
	engine "sluice.dev/sluice/libs/policy"
	"sluice.dev/sluice/libs/sqlclass"
	"sluice.dev/sluice/libs/testkit"
	approvalsv1 "sluice.dev/sluice/proto/sluice/approvals/v1"
	commonv1 "sluice.dev/sluice/proto/sluice/common/v1"
	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
	policyv1 "sluice.dev/sluice/proto/sluice/policy/v1"
	"sluice.dev/sluice/services/policy"
)

func putPolicy(t *testing.T, c *bus.Conn, revision uint64, rules ...*controlv1.Rule) {
	t.Helper()
	kv, err := controlstate.Bucket(context.Background(), c.JS)
	require.NoError(t, err)
	b, _ := proto.Marshal(&controlv1.PolicySetApplied{Rules: rules, Revision: revision})
	_, err = kv.Put(context.Background(), controlstate.KeyPolicy, b)
	require.NoError(t, err)
}

func evaluate(t *testing.T, c *bus.Conn, sql string) *policyv1.Decision {
	t.Helper()
	var d policyv1.Decision
	err := bus.Request(context.Background(), c.NC, bus.APIPolicyEvaluate, &policyv1.EvaluateRequest{
		Principal: &commonv1.Principal{Subject: "alice", Groups: []string{"engineers"}},
		Target:    &commonv1.Target{Name: "demo"},
		Command:   &policyv1.EvaluateRequest_Sql{Sql: &policyv1.SQLCommand{Text: sql}},
	}, &d)
	require.NoError(t, err)
	return &d
}

func TestReplicasAndRevisions(t *testing.T) {
	_, conn := testkit.NATS(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	require.NoError(t, bus.Provision(ctx, conn.JS, bus.Topology{}))

	// No policy yet: everything is denied.
	for i := 0; i < 2; i++ {
		c := testkit.Connect(t, conn.NC.ConnectedUrl())
		go func() { _ = policy.New(policy.Config{Conn: c, Log: zerolog.Nop()}).Run(ctx) }()
	}
	testkit.Eventually(t, 10*time.Second, func() error {
		var d policyv1.Decision
		return bus.Request(ctx, conn.NC, bus.APIPolicyEvaluate, &policyv1.EvaluateRequest{Command: &policyv1.EvaluateRequest_Sql{Sql: &policyv1.SQLCommand{Text: "SELECT 1"}}}, &d)
	})
	d := evaluate(t, conn, "SELECT 1")
	assert.Equal(t, "deny", d.Action)
	assert.Equal(t, policy.RuleNoPolicy, d.Rule)

	putPolicy(t, conn, 1, &controlv1.Rule{Name: "allow-reads", Action: "allow", When: `sql.kind == "read"`},
		&controlv1.Rule{Name: "deny-one-query", Action: "deny", When: `sql.fingerprint == "none"`})
	testkit.Eventually(t, 10*time.Second, func() error {
		// Both replicas answer; each must have the new revision.
		for i := 0; i < 10; i++ {
			if d := evaluate(t, conn, "SELECT 1"); d.Revision != 1 || d.Action != "allow" {
				return fmt.Errorf("revision %d: %s", d.Revision, d.Action)
			}
		}
		return nil
	})
	d = evaluate(t, conn, "SELECT * FROM t WHERE id = 42")
	assert.True(t, d.Cache.GetCacheable())
	assert.NotEmpty(t, d.Cache.GetFingerprint())
	assert.Equal(t, evaluate(t, conn, "SELECT * FROM t WHERE id = 7").Cache.GetFingerprint(), d.Cache.GetFingerprint(), "same shape, same key")

	// A new revision takes effect without a restart.
	putPolicy(t, conn, 2, &controlv1.Rule{Name: "deny-all", Action: "deny", When: `true`})
	testkit.Eventually(t, 10*time.Second, func() error {
		for i := 0; i < 10; i++ {
			if d := evaluate(t, conn, "SELECT 1"); d.Revision != 2 || d.Rule != "deny-all" {
				return fmt.Errorf("revision %d: %s", d.Revision, d.Rule)
			}
		}
		return nil
	})

	// Counted: the revision in force, and every decision by action and rule.
	testkit.Eventually(t, 10*time.Second, func() error {
		if got := testutil.ToFloat64(policy.RevisionMetric); got != 2 {
			return fmt.Errorf("sluice_policy_revision %v", got)
		}
		return nil
	})
	denied := testutil.ToFloat64(policy.EvaluationsMetric.WithLabelValues("deny", "deny-all"))
	assert.GreaterOrEqual(t, denied, 10.0)
	evaluate(t, conn, "SELECT 2")
	assert.Equal(t, denied+1, testutil.ToFloat64(policy.EvaluationsMetric.WithLabelValues("deny", "deny-all")))
}

// BenchmarkColdDecision is a worker's round trip for a statement shape not
// seen before, over NATS, with the policy `sluice dev` applies (45 rules over
// four protocols): classification, the shape check and the rules.
func BenchmarkColdDecision(b *testing.B) {
	_, conn := testkit.NATS(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	require.NoError(b, bus.Provision(ctx, conn.JS, bus.Topology{}))
	go func() { _ = policy.New(policy.Config{Conn: conn, Log: zerolog.Nop()}).Run(ctx) }()
	kv, _ := controlstate.Bucket(ctx, conn.JS)
	f, err := config.ReadFile("../sluice/internal/dev/sluice.yaml")
	require.NoError(b, err)
	data, _ := proto.Marshal(&controlv1.PolicySetApplied{Rules: f.RuleProtos(), Revision: 1})
	_, _ = kv.Put(ctx, controlstate.KeyPolicy, data)
	client := testkit.Connect(b, conn.NC.ConnectedUrl())
	principal := &commonv1.Principal{Subject: "alice", Groups: []string{"engineers"}}
	request := func(sql string) *policyv1.EvaluateRequest {
		return &policyv1.EvaluateRequest{Principal: principal, Command: &policyv1.EvaluateRequest_Sql{Sql: &policyv1.SQLCommand{Text: sql}}}
	}
	testkit.Eventually(b, 10*time.Second, func() error {
		var d policyv1.Decision
		if err := bus.Request(ctx, client.NC, bus.APIPolicyEvaluate, request("SELECT 1"), &d); err != nil {
			return err
		}
		if d.Revision != 1 {
			return fmt.Errorf("not ready")
		}
		return nil
	})
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		var d policyv1.Decision
		if err := bus.Request(ctx, client.NC, bus.APIPolicyEvaluate, request(fmt.Sprintf("SELECT abalance AS c%d FROM pgbench_accounts WHERE aid = %d", i, i)), &d); err != nil {
			b.Fatal(err)
		}
		if d.Action != engine.Allow {
			b.Fatal(d.Reason)
		}
	}
}

// A statement that differs from one ruled on before only in what no rule
// of the demo policy reads (here a column alias) is ruled on from the memo,
// and counted so.
func TestRulesRunOncePerWhatTheyRead(t *testing.T) {
	f, err := config.ReadFile("../sluice/internal/dev/sluice.yaml")
	require.NoError(t, err)
	set, err := engine.Compile(f.RuleProtos(), 1)
	require.NoError(t, err)
	eval := func(sql string) *policyv1.Decision {
		return policy.Evaluate(context.Background(), set, &commonv1.Target{Name: "demo"}, &policyv1.EvaluateRequest{
			Principal: &commonv1.Principal{Subject: "alice", Groups: []string{"engineers"}},
			Command:   &policyv1.EvaluateRequest_Sql{Sql: &policyv1.SQLCommand{Text: sql}},
		}, time.Now())
	}
	remembered := func() float64 { return testutil.ToFloat64(policy.RuleMemoMetric.WithLabelValues("true")) }
	ran := func() float64 { return testutil.ToFloat64(policy.RuleMemoMetric.WithLabelValues("false")) }
	r0, h0 := ran(), remembered()
	first := eval("SELECT abalance AS a FROM pgbench_accounts WHERE aid = 1")
	second := eval("SELECT abalance AS b FROM pgbench_accounts WHERE aid = 2")
	assert.Equal(t, r0+1, ran())
	assert.Equal(t, h0+1, remembered())
	assert.Equal(t, first.GetRule(), second.GetRule())
	assert.Equal(t, first.GetAction(), second.GetAction())
	// A write is another kind: the rules run.
	write := eval("UPDATE pgbench_accounts SET abalance = 0 WHERE aid = 1")
	assert.Equal(t, r0+2, ran())
	assert.NotEqual(t, first.GetRule(), write.GetRule())
}

func TestShapeCacheability(t *testing.T) {
	set, err := engineCompile()
	require.NoError(t, err)
	ctx := context.Background()
	eval := func(sql string) *policyv1.Decision {
		return policy.Evaluate(ctx, set, &commonv1.Target{Name: "demo"}, &policyv1.EvaluateRequest{
			Principal: &commonv1.Principal{Subject: "alice"},
			Command:   &policyv1.EvaluateRequest_Sql{Sql: &policyv1.SQLCommand{Text: sql}},
		}, time.Now())
	}
	tests := []struct {
		sql   string
		shape string
		reuse bool
	}{
		{"SELECT abalance FROM pgbench_accounts WHERE aid = 42", "SELECT abalance FROM pgbench_accounts WHERE aid = $1", true},
		{"UPDATE t SET x = 'a' WHERE id = 3", "UPDATE t SET x = $1 WHERE id = $2", true},
		// The literal decides what the statement does: no reuse by shape.
		{"SELECT set_config('role', 'postgres', false)", "SELECT set_config($1, $2, false)", false},
		{"SELECT pg_read_file('/etc/passwd')", "SELECT pg_read_file($1)", true},
		// Same classification with or without the literal: reuse is sound.
		{"SELECT table_to_xml('customers', true, true, '')", "SELECT table_to_xml($1, true, true, $2)", true},
		{"SET statement_timeout = 5", "SET statement_timeout = $1", true},
		// The constant starts at the sign: the shape's text is classified.
		{"SELECT abalance FROM pgbench_accounts WHERE aid = -5", "SELECT abalance FROM pgbench_accounts WHERE aid = -$1", true},
		// A file name is no expression, and no parameter can stand there.
		{"COPY pgbench_accounts FROM '/tmp/x.csv'", "COPY pgbench_accounts FROM $1", false},
		// A typed literal: the grammar takes no parameter after INTERVAL,
		// so every statement of this shape has a string there, and the
		// parameter in the statement's own tree changes no class.
		{"SELECT INTERVAL '1' DAY", "SELECT INTERVAL $1 DAY", true},
		// The lexer gives up: exact text only.
		{"SELECT E'\\x'", "", false},
	}
	for _, tc := range tests {
		d := eval(tc.sql)
		assert.Equal(t, tc.reuse, d.Cache.GetShapeCacheable(), tc.sql)
		if tc.shape != "" {
			assert.Equal(t, tc.shape, d.Cache.GetShape(), tc.sql)
		}
	}
}

// The classifier's fingerprint costs a parse of its own: it is computed when
// a rule reads it, and then rules see it.
func TestFingerprintOnlyWhenARuleReadsIt(t *testing.T) {
	ctx := context.Background()
	eval := func(set *engine.Set, sql string) *policyv1.Decision {
		return policy.Evaluate(ctx, set, &commonv1.Target{Name: "demo"}, &policyv1.EvaluateRequest{
			Principal: &commonv1.Principal{Subject: "alice"},
			Command:   &policyv1.EvaluateRequest_Sql{Sql: &policyv1.SQLCommand{Text: sql}},
		}, time.Now())
	}
	set, err := engineCompile()
	require.NoError(t, err)
	d := eval(set, "SELECT * FROM t WHERE id = 1")
	assert.Equal(t, engine.Allow, d.Action)
	assert.Empty(t, d.Cache.GetFingerprint())

	want, err := sqlclass.Classify("SELECT * FROM t WHERE id = 1")
	require.NoError(t, err)
	set, err = engine.Compile([]*controlv1.Rule{
		{Name: "deny-this-query", Action: "deny", When: fmt.Sprintf("sql.fingerprint == %q", want.Fingerprint)},
		{Name: "allow", Action: "allow", When: "true"},
	}, 1)
	require.NoError(t, err)
	d = eval(set, "SELECT * FROM t WHERE id = 2")
	assert.Equal(t, "deny-this-query", d.Rule)
	assert.Equal(t, want.Fingerprint, d.Cache.GetFingerprint())
	assert.Equal(t, "allow", eval(set, "SELECT * FROM u WHERE id = 2").Rule)
}

// A statement that changes how the server reads the next ones is refused
// whatever the rules say; returning to the session's start is not.
func TestLexerSettingsAreRefusedWhateverTheRules(t *testing.T) {
	ctx := context.Background()
	set, err := engineCompile() // allows everything
	require.NoError(t, err)
	eval := func(sql string) *policyv1.Decision {
		return policy.Evaluate(ctx, set, &commonv1.Target{Name: "demo"}, &policyv1.EvaluateRequest{
			Principal: &commonv1.Principal{Subject: "alice"},
			Command:   &policyv1.EvaluateRequest_Sql{Sql: &policyv1.SQLCommand{Text: sql}},
		}, time.Now())
	}
	for _, sql := range []string{
		"SET standard_conforming_strings = off",
		"SET SESSION client_encoding TO 'SJIS'",
		"SELECT set_config('standard_conforming_strings', 'off', false)",
		"SET backslash_quote = on",
		"SELECT 1; SET LOCAL standard_conforming_strings TO off",
	} {
		d := eval(sql)
		assert.Equal(t, engine.Deny, d.Action, sql)
		assert.Equal(t, policy.RuleLexerSetting, d.Rule, sql)
	}
	for _, sql := range []string{"RESET ALL", "DISCARD ALL", "RESET standard_conforming_strings", "SET search_path = public",
		"SET client_encoding TO 'UTF8'", "SET NAMES 'unicode'", "SET standard_conforming_strings = on"} {
		assert.Equal(t, engine.Allow, eval(sql).Action, sql)
	}
}

func engineCompile() (*engine.Set, error) {
	return engine.Compile([]*controlv1.Rule{{Name: "allow", Action: "allow", When: "true"}}, 1)
}

// A worker that has seen a grant change is answered only by a policy view
// that has seen it too: the decision waits for it, and without it denies.
func TestDecisionsWaitForTheGrantsTheWorkerSaw(t *testing.T) {
	_, conn := testkit.NATS(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	require.NoError(t, bus.Provision(ctx, conn.JS, bus.Topology{}))
	go func() { _ = policy.New(policy.Config{Conn: conn, Log: zerolog.Nop()}).Run(ctx) }()
	putPolicy(t, conn, 1, &controlv1.Rule{Name: "allow-reads", Action: "allow", When: `sql.kind == "read"`})
	ask := func(min uint64) (*policyv1.Decision, time.Duration) {
		start := time.Now()
		var d policyv1.Decision
		require.NoError(t, bus.Request(ctx, conn.NC, bus.APIPolicyEvaluate, &policyv1.EvaluateRequest{
			Principal: &commonv1.Principal{Subject: "alice"}, Target: &commonv1.Target{Name: "demo"}, MinGrantsRevision: min,
			Command: &policyv1.EvaluateRequest_Sql{Sql: &policyv1.SQLCommand{Text: "SELECT 1"}},
		}, &d))
		return &d, time.Since(start)
	}
	decidesBy(t, ctx, conn, "allow-reads")
	// A revision no grant change has reached yet: denied after the wait.
	d, took := ask(1 << 40)
	assert.Equal(t, "deny", d.GetAction())
	assert.Equal(t, policy.RuleGrantsBehind, d.GetRule())
	assert.False(t, d.GetCache().GetCacheable())
	assert.GreaterOrEqual(t, took, time.Second)
	// A grant change arrives while the decision waits: it goes ahead.
	kv, err := conn.JS.KeyValue(ctx, bus.BucketApprovals)
	require.NoError(t, err)
	grant, _ := proto.Marshal(&approvalsv1.Approval{Id: "g1", Type: "grant", State: "revoked", Requester: &commonv1.Principal{Subject: "alice"}, Target: "demo", Role: "writer"})
	next := make(chan uint64, 1)
	go func() {
		time.Sleep(300 * time.Millisecond)
		rev, err := kv.Put(ctx, "g1", grant)
		assert.NoError(t, err)
		next <- rev
	}()
	st, err := conn.JS.Stream(ctx, "KV_"+bus.BucketApprovals)
	require.NoError(t, err)
	info, err := st.Info(ctx)
	require.NoError(t, err)
	d, _ = ask(info.State.LastSeq + 1)
	assert.Equal(t, "allow-reads", d.GetRule())
	assert.Equal(t, info.State.LastSeq+1, <-next)
}

// BenchmarkColdEvaluate rules on a statement shape not seen before with the
// policy `sluice dev` applies (45 rules over four protocols): what the policy
// service spends on a new shape besides NATS, classification and the shape
// check included. Every statement has a new column alias, which is no part
// of its classification: "seen" rules from the set's memo. In "new" each
// statement comes from a principal in another group as well, which the
// rules read: they run every time.
func BenchmarkColdEvaluate(b *testing.B) {
	f, err := config.ReadFile("../sluice/internal/dev/sluice.yaml")
	require.NoError(b, err)
	ctx := context.Background()
	target := &commonv1.Target{Name: "demo"}
	for _, c := range []struct {
		name     string
		newInput bool
	}{{"classification=seen", false}, {"classification=new", true}} {
		b.Run(c.name, func(b *testing.B) {
			set, err := engine.Compile(f.RuleProtos(), 1)
			require.NoError(b, err)
			principal := &commonv1.Principal{Subject: "alice", Groups: []string{"engineers"}}
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if c.newInput {
					principal = &commonv1.Principal{Subject: "alice", Groups: []string{"engineers", fmt.Sprint("g", i)}}
				}
				d := policy.Evaluate(ctx, set, target, &policyv1.EvaluateRequest{Principal: principal,
					Command: &policyv1.EvaluateRequest_Sql{Sql: &policyv1.SQLCommand{Text: fmt.Sprintf("SELECT abalance AS c%d FROM pgbench_accounts WHERE aid = %d", i, i)}}}, time.Now())
				if d.Action != engine.Allow || !d.Cache.GetShapeCacheable() {
					b.Fatal(d)
				}
			}
		})
	}
}

// A worker that holds a newer policy than the service has loaded (a rule
// applied a moment ago) is not answered with the older one: the service
// catches up first, and denies if it cannot.
func TestDecisionsUseThePolicyTheWorkerHolds(t *testing.T) {
	_, conn := testkit.NATS(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	require.NoError(t, bus.Provision(ctx, conn.JS, bus.Topology{}))
	go func() { _ = policy.New(policy.Config{Conn: conn, Log: zerolog.Nop()}).Run(ctx) }()
	putPolicy(t, conn, 1, &controlv1.Rule{Name: "allow-reads", Action: "allow", When: `sql.kind == "read"`})
	ask := func(min uint64) *policyv1.Decision {
		var d policyv1.Decision
		require.NoError(t, bus.Request(ctx, conn.NC, bus.APIPolicyEvaluate, &policyv1.EvaluateRequest{
			Principal: &commonv1.Principal{Subject: "alice"}, Target: &commonv1.Target{Name: "demo"}, MinPolicyRevision: min,
			Command: &policyv1.EvaluateRequest_Sql{Sql: &policyv1.SQLCommand{Text: "SELECT 1"}},
		}, &d))
		return &d
	}
	decidesBy(t, ctx, conn, "allow-reads")
	// Revision 2 denies reads; the worker asks for it right after it is
	// stored: never the allow of revision 1.
	for rev := uint64(2); rev < 12; rev++ {
		action := "deny"
		if rev%2 == 1 {
			action = "allow"
		}
		putPolicy(t, conn, rev, &controlv1.Rule{Name: fmt.Sprintf("r%d", rev), Action: action, When: `sql.kind == "read"`})
		d := ask(rev)
		assert.Equal(t, rev, d.GetRevision())
		assert.Equal(t, fmt.Sprintf("r%d", rev), d.GetRule())
		assert.Equal(t, action, d.GetAction())
	}
	// A revision that is not stored: denied after the wait.
	d := ask(1 << 40)
	assert.Equal(t, "deny", d.GetAction())
	assert.Equal(t, policy.RulePolicyBehind, d.GetRule())
	assert.False(t, d.GetCache().GetCacheable())
}

// decidesBy waits until the policy service decides SELECT 1 by rule.
func decidesBy(t *testing.T, ctx context.Context, conn *bus.Conn, rule string) {
	t.Helper()
	testkit.Eventually(t, 10*time.Second, func() error {
		var d policyv1.Decision
		if err := bus.Request(ctx, conn.NC, bus.APIPolicyEvaluate, &policyv1.EvaluateRequest{
			Command: &policyv1.EvaluateRequest_Sql{Sql: &policyv1.SQLCommand{Text: "SELECT 1"}}}, &d); err != nil {
			return err
		}
		if d.GetRule() != rule {
			return fmt.Errorf("not ready: %s", d.GetRule())
		}
		return nil
	})
}
