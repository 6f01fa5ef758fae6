package policy_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/structpb"

	engine "sluice.dev/sluice/libs/policy"
	commonv1 "sluice.dev/sluice/proto/sluice/common/v1"
	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
	policyv1 "sluice.dev/sluice/proto/sluice/policy/v1"
	"sluice.dev/sluice/services/policy"
)

// A call through the MCP endpoint is ruled on as the command it runs (the
// SQL rules apply unchanged), and mcp names the tool and its arguments, so
// that a policy can allow or deny whole tools, or calls by argument.
func TestMCPDecisions(t *testing.T) {
	rules := []*controlv1.Rule{
		{Name: "deny-mcp-big-results", Action: "deny", When: `mcp.tool == "run_sql" && "max_rows" in mcp.arguments && mcp.arguments.max_rows > 1000.0`},
		{Name: "deny-mcp-shell", Action: "deny", When: `mcp.tool == "run_command" && principal.machine`},
		{Name: "review-writes", Action: "review", Approvers: []string{"approvers"}, When: `protocol == "postgres" && sql.kind == "write"`},
		{Name: "allow-reads", Action: "allow", When: `protocol == "postgres" && sql.kind == "read"`},
		{Name: "allow-ls", Action: "allow", When: `protocol == "ssh" && ssh.program == "ls"`},
		{Name: "allow-list-targets", Action: "allow", When: `protocol == "mcp" && mcp.tool == "list_targets" && target.labels["env"] == "dev"`},
	}
	set, err := engine.Compile(rules, 7)
	require.NoError(t, err)
	args := func(m map[string]any) *structpb.Struct {
		s, err := structpb.NewStruct(m)
		require.NoError(t, err)
		return s
	}
	human := &commonv1.Principal{Subject: "alice", Groups: []string{"engineers"}}
	machine := &commonv1.Principal{Subject: "agent", Groups: []string{"engineers"}, Machine: true}
	dev := &commonv1.Target{Name: "demo", Labels: map[string]string{"env": "dev"}}
	prod := &commonv1.Target{Name: "prod", Labels: map[string]string{"env": "prod"}}
	sql := func(text string) *policyv1.EvaluateRequest_Sql {
		return &policyv1.EvaluateRequest_Sql{Sql: &policyv1.SQLCommand{Text: text}}
	}
	tests := []struct {
		name      string
		principal *commonv1.Principal
		target    *commonv1.Target
		req       *policyv1.EvaluateRequest
		action    string
		rule      string
	}{
		{"a read through run_sql", human, dev, &policyv1.EvaluateRequest{Command: sql("SELECT 1"),
			Mcp: &policyv1.MCPInput{Tool: "run_sql", Arguments: args(map[string]any{"sql": "SELECT 1", "max_rows": 100})}}, "allow", "allow-reads"},
		{"a write through run_sql is held like a native one", human, dev, &policyv1.EvaluateRequest{Command: sql("UPDATE t SET a = 1 WHERE id = 2"),
			Mcp: &policyv1.MCPInput{Tool: "run_sql"}}, "review", "review-writes"},
		{"an argument a rule forbids", human, dev, &policyv1.EvaluateRequest{Command: sql("SELECT 1"),
			Mcp: &policyv1.MCPInput{Tool: "run_sql", Arguments: args(map[string]any{"max_rows": 5000})}}, "deny", "deny-mcp-big-results"},
		{"a whole tool denied for machines", machine, dev, &policyv1.EvaluateRequest{
			Command: &policyv1.EvaluateRequest_Ssh{Ssh: &policyv1.SSHCommand{RequestType: "exec", Command: "ls"}},
			Mcp:     &policyv1.MCPInput{Tool: "run_command"}}, "deny", "deny-mcp-shell"},
		{"the same tool for a human", human, dev, &policyv1.EvaluateRequest{
			Command: &policyv1.EvaluateRequest_Ssh{Ssh: &policyv1.SSHCommand{RequestType: "exec", Command: "ls"}},
			Mcp:     &policyv1.MCPInput{Tool: "run_command"}}, "allow", "allow-ls"},
		{"a native client sees an empty mcp", human, dev, &policyv1.EvaluateRequest{Command: sql("SELECT 1")}, "allow", "allow-reads"},
		{"listing a target the policy shows", human, dev, &policyv1.EvaluateRequest{Mcp: &policyv1.MCPInput{Tool: "list_targets"}}, "allow", "allow-list-targets"},
		{"listing a target it does not", human, prod, &policyv1.EvaluateRequest{Mcp: &policyv1.MCPInput{Tool: "list_targets"}}, "deny", engine.NoMatch},
		{"no tool and no command", human, dev, &policyv1.EvaluateRequest{Mcp: &policyv1.MCPInput{}}, "deny", policy.RuleNoCommand},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.req.Principal, tc.req.Target = tc.principal, tc.target
			d := policy.Evaluate(context.Background(), set, tc.target, tc.req, time.Now())
			assert.Equal(t, tc.action, d.GetAction(), d.GetReason())
			assert.Equal(t, tc.rule, d.GetRule())
		})
	}
}

// A Kubernetes request is classified by the policy service itself from
// its method, path and query: what the worker says it is counts for
// nothing.
func TestK8sRequestsAreClassifiedHere(t *testing.T) {
	rules := []*controlv1.Rule{
		{Name: "deny-secret-reads", Action: "deny", When: `k8s.resource == "secrets" && k8s.verb in ["get", "list", "watch"]`},
		{Name: "deny-server-paths", Action: "deny", When: `!k8s.is_resource && k8s.path != "/version"`},
		{Name: "deny-sidecar-exec", Action: "deny", When: `k8s.subresource == "exec" && k8s.container == "vault-agent"`},
		{Name: "allow-rest", Action: "allow", When: `protocol == "kubernetes"`},
	}
	set, err := engine.Compile(rules, 2)
	require.NoError(t, err)
	dev := &commonv1.Target{Name: "k"}
	for _, tc := range []struct {
		cmd        *policyv1.K8SCommand
		action     string
		rule, verb string
	}{
		{&policyv1.K8SCommand{Method: "GET", Path: "/api/v1/namespaces/a/secrets", Query: "watch=yes", Verb: "get", Resource: "configmaps"}, "deny", "deny-secret-reads", "watch"},
		{&policyv1.K8SCommand{Method: "GET", Path: "/api/v1/namespaces/a/configmaps"}, "allow", "allow-rest", "list"},
		{&policyv1.K8SCommand{Method: "GET", Path: "/metrics"}, "deny", "deny-server-paths", "get"},
		{&policyv1.K8SCommand{Method: "GET", Path: "/version"}, "allow", "allow-rest", "get"},
		// The container an exec names is a policy input; the worker's
		// word for it counts for nothing either.
		{&policyv1.K8SCommand{Method: "GET", Path: "/api/v1/namespaces/a/pods/web/exec", Query: "command=id&container=vault-agent"}, "deny", "deny-sidecar-exec", "create"},
		{&policyv1.K8SCommand{Method: "GET", Path: "/api/v1/namespaces/a/pods/web/exec", Query: "command=id&container=app", Container: "vault-agent"}, "allow", "allow-rest", "create"},
		{&policyv1.K8SCommand{Method: "GET", Path: "/api/v1/namespaces/a/pods/../secrets"}, "deny", policy.RuleUnparseableRequest, ""},
		{&policyv1.K8SCommand{Verb: "get", Resource: "configmaps"}, "deny", policy.RuleUnparseableRequest, ""},
	} {
		d := policy.Evaluate(context.Background(), set, dev, &policyv1.EvaluateRequest{Target: dev, Command: &policyv1.EvaluateRequest_K8S{K8S: tc.cmd}}, time.Now())
		assert.Equal(t, tc.action, d.GetAction(), "%v: %s", tc.cmd, d.GetReason())
		assert.Equal(t, tc.rule, d.GetRule(), "%v", tc.cmd)
		assert.Equal(t, tc.verb, d.GetK8S().GetVerb(), "%v", tc.cmd)
	}
}

// A workload write shows its pod spec to rules as k8s.pod, read here from
// the body the worker sends (never from what it says of it).
func TestK8sPodSpecIsVisible(t *testing.T) {
	rules := []*controlv1.Rule{
		{Name: "deny-privileged", Action: "deny", When: `k8s.pod.privileged`},
		{Name: "review-secrets", Action: "review", Approvers: []string{"approvers"}, When: `k8s.pod.present && (k8s.pod.parse_error || k8s.pod.secrets.size() > 0)`},
		{Name: "allow-rest", Action: "allow", When: `protocol == "kubernetes"`},
	}
	set, err := engine.Compile(rules, 3)
	require.NoError(t, err)
	k := &commonv1.Target{Name: "k"}
	eval := func(c *policyv1.K8SCommand) *policyv1.Decision {
		return policy.Evaluate(context.Background(), set, k, &policyv1.EvaluateRequest{Target: k, Command: &policyv1.EvaluateRequest_K8S{K8S: c}}, time.Now())
	}
	post := func(body string) *policyv1.K8SCommand {
		return &policyv1.K8SCommand{Method: "POST", Path: "/api/v1/namespaces/a/pods", Body: []byte(body), ContentType: "application/json"}
	}
	d := eval(post(`{"kind":"Pod","spec":{"containers":[{"image":"nginx"}]}}`))
	assert.Equal(t, "allow", d.GetAction())
	assert.Equal(t, []string{"nginx"}, d.GetK8S().GetPod().GetImages())
	assert.Empty(t, d.GetK8S().GetBody(), "the decision (recorded) carries the summary, not the body")
	assert.Equal(t, "deny-privileged", eval(post(`{"kind":"Pod","spec":{"containers":[{"image":"x","securityContext":{"privileged":true}}]}}`)).GetRule())
	assert.Equal(t, "review-secrets", eval(post(`{"kind":"Pod","spec":{"volumes":[{"secret":{"secretName":"db"}}],"containers":[{"image":"x"}]}}`)).GetRule())
	// A workload write whose body did not come is unknown: reviewed.
	assert.Equal(t, "review-secrets", eval(&policyv1.K8SCommand{Method: "POST", Path: "/apis/apps/v1/namespaces/a/deployments"}).GetRule())
	// Reads and other resources carry no pod.
	assert.False(t, eval(&policyv1.K8SCommand{Method: "GET", Path: "/api/v1/namespaces/a/pods"}).GetK8S().GetPod().GetPresent())
}
