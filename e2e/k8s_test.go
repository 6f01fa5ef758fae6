package e2e

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"sluice.dev/sluice/libs/kubelocal"
	"sluice.dev/sluice/libs/testkit"
)

// kubeUser runs the real kubectl through Sluice as one principal, with the
// kubeconfig sluice kubeconfig wrote (its exec plugin runs sluice token).
type kubeUser struct {
	t          *testing.T
	env        *devEnv
	kubeconfig string
	token      string
}

func (u kubeUser) kubectl(stdin string, args ...string) (string, error) {
	u.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "kubectl", append([]string{"--kubeconfig", u.kubeconfig}, args...)...)
	cmd.Env = append(os.Environ(), "SLUICE_TOKEN="+u.token, "SLUICE_API="+u.env.API, "KUBECACHEDIR="+filepath.Join(u.t.TempDir(), "cache"))
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

var heldRE = regexp.MustCompile(`held for approval ([0-9a-z]{26})`)

// TestKubernetes drives the real kubectl through the Kubernetes worker
// against a real kube-apiserver and etcd (sluice dev --demo-k8s).
func TestKubernetes(t *testing.T) {
	requireTool(t, "kubectl")
	if _, _, err := kubelocal.Binaries(); err != nil {
		if os.Getenv("SLUICE_E2E_REQUIRED") == "1" {
			t.Fatalf("%v (make test builds them with scripts/tools.sh)", err)
		}
		t.Skip(err)
	}
	env := startDev(t, devOptions{extra: []string{"--demo-k8s", "--k8s-addr", fmt.Sprintf("127.0.0.1:%d", freePort(t)), "--hold-timeout", "60s"}})
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	out, err := env.CLI([]string{"SLUICE_TOKEN=" + env.Token("--sub", "alice", "--groups", "engineers")}, "kubeconfig", "--target", "demo-k8s", "--out", kubeconfig)
	require.NoError(t, err, out)
	as := func(sub, groups string, extra ...string) kubeUser {
		return kubeUser{t: t, env: env, kubeconfig: kubeconfig, token: env.Token(append([]string{"--sub", sub, "--groups", groups}, extra...)...)}
	}
	alice, sam, dora, root := as("alice", "engineers"), as("sam", "sre"), as("dora", "dba,engineers"), as("root", "k8s-admins,dba")
	bob := []string{"SLUICE_TOKEN=" + env.Token("--sub", "bob", "--groups", "approvers")}
	auditor := []string{"SLUICE_TOKEN=" + env.Token("--sub", "audrey", "--groups", "auditors")}

	t.Run("reads and writes the policy allows", func(t *testing.T) {
		out, err := alice.kubectl("", "get", "namespaces")
		require.NoError(t, err, out)
		assert.Contains(t, out, "kube-system")
		out, err = alice.kubectl("", "create", "namespace", "team-a")
		require.NoError(t, err, out)
		manifest := `apiVersion: v1
kind: ConfigMap
metadata: {name: app, namespace: team-a}
data: {owner: ada.lovelace@example.com, replicas: "3"}
`
		out, err = alice.kubectl(manifest, "apply", "-f", "-")
		require.NoError(t, err, out)
		assert.Contains(t, out, "configmap/app created")
		out, err = alice.kubectl(strings.Replace(manifest, `"3"`, `"4"`, 1), "apply", "-f", "-")
		require.NoError(t, err, out)
		assert.Contains(t, out, "configmap/app configured")
	})

	t.Run("values are masked in every output format; dba sees them", func(t *testing.T) {
		for _, format := range []string{"yaml", "json", "jsonpath={.data.owner}"} {
			out, err := alice.kubectl("", "-n", "team-a", "get", "configmap", "app", "-o", format)
			require.NoError(t, err, out)
			assert.NotContains(t, out, "ada.lovelace@example.com", format)
			assert.Contains(t, out, "[email]", format)
		}
		out, err := dora.kubectl("", "-n", "team-a", "get", "configmap", "app", "-o", "jsonpath={.data.owner}")
		require.NoError(t, err, out)
		assert.Equal(t, "ada.lovelace@example.com", out)
	})

	t.Run("Secrets: reading them is a policy decision, their values redacted", func(t *testing.T) {
		out, err := alice.kubectl("", "-n", "team-a", "create", "secret", "generic", "db", "--from-literal=password=hunter2")
		require.NoError(t, err, out)
		assert.NotContains(t, out, base64.StdEncoding.EncodeToString([]byte("hunter2")))
		out, err = alice.kubectl("", "-n", "team-a", "get", "secret", "db", "-o", "yaml")
		require.Error(t, err)
		assert.Contains(t, out, `denied by rule "deny-k8s-secret-reads"`)
		for _, args := range [][]string{{"get", "secret", "db", "-o", "yaml"}, {"get", "secrets", "-o", "json"}, {"get", "secret", "db", "-o", "jsonpath={.data.password}"}} {
			out, err = sam.kubectl("", append([]string{"-n", "team-a"}, args...)...)
			require.NoError(t, err, out)
			assert.NotContains(t, out, base64.StdEncoding.EncodeToString([]byte("hunter2")), args)
			assert.Contains(t, out, "W3JlZGFjdGVkXQ==", args)
		}
		out, err = sam.kubectl("", "-n", "team-a", "get", "secrets")
		require.NoError(t, err, out)
		assert.Contains(t, out, "db")
		out, err = dora.kubectl("", "-n", "team-a", "get", "secret", "db", "-o", "jsonpath={.data.password}")
		require.NoError(t, err, out)
		assert.Equal(t, base64.StdEncoding.EncodeToString([]byte("hunter2")), out)
		// A write answers with the Secret it changed: redacted whoever
		// asked, since what a policy lets write is not what it lets read.
		out, err = dora.kubectl("", "-n", "team-a", "patch", "secret", "db", "-p", "{}", "--dry-run=server", "-o", "yaml")
		require.NoError(t, err, out)
		assert.NotContains(t, out, base64.StdEncoding.EncodeToString([]byte("hunter2")))
		assert.Contains(t, out, "W3JlZGFjdGVkXQ==")
	})

	t.Run("a delete is held, approved from the CLI, and the same command then runs once", func(t *testing.T) {
		out, err := alice.kubectl("", "-n", "team-a", "delete", "configmap", "app")
		require.Error(t, err)
		m := heldRE.FindStringSubmatch(out)
		require.NotNil(t, m, out)
		assert.Contains(t, out, "sluice approve "+m[1])
		// Asking again before it is decided names the same approval.
		out, err = alice.kubectl("", "-n", "team-a", "delete", "configmap", "app")
		require.Error(t, err)
		assert.Contains(t, out, m[1])
		approved, err := env.CLI(bob, "approve", m[1], "--reason", "cleanup")
		require.NoError(t, err, approved)
		testkit.Eventually(t, 10*time.Second, func() error {
			out, err = alice.kubectl("", "-n", "team-a", "delete", "configmap", "app")
			if err != nil {
				return fmt.Errorf("%v: %s", err, out)
			}
			return nil
		})
		assert.Contains(t, out, `configmap "app" deleted`)
		// Used once: the next delete is held again.
		_, _ = alice.kubectl(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"app","namespace":"team-a"}}`, "apply", "-f", "-")
		out, err = alice.kubectl("", "-n", "team-a", "delete", "configmap", "app")
		require.Error(t, err)
		assert.Regexp(t, heldRE, out)
		assert.NotContains(t, out, m[1])
	})

	t.Run("dangerous paths are denied by the default policy", func(t *testing.T) {
		// The policy reads the pod spec a write asks for: a plain pod runs,
		// one that mounts a Secret is held (the approver sees it), one that
		// reaches the host is denied.
		out, err := alice.kubectl("", "-n", "team-a", "run", "web", "--image=nginx")
		require.NoError(t, err, out)
		mountsSecret := `{"spec":{"volumes":[{"name":"s","secret":{"secretName":"db"}}],"containers":[{"name":"leak","image":"busybox","command":["cat","/s/password"],"volumeMounts":[{"name":"s","mountPath":"/s"}]}]}}`
		out, err = alice.kubectl("", "-n", "team-a", "run", "leak", "--image=busybox", "--overrides", mountsSecret)
		require.Error(t, err)
		assert.Contains(t, out, `(rule "review-k8s-workload-secrets")`)
		m := heldRE.FindStringSubmatch(out)
		require.NotNil(t, m, out)
		pending, err := env.CLI(bob, "approvals", "list", "-o", "json")
		require.NoError(t, err, pending)
		assert.Contains(t, pending, m[1])
		assert.Contains(t, pending, "secretName", "the approver sees what the pod mounts")
		privileged := `{"spec":{"containers":[{"name":"p","image":"busybox","securityContext":{"privileged":true}}]}}`
		out, err = alice.kubectl("", "-n", "team-a", "run", "p", "--image=busybox", "--overrides", privileged)
		require.Error(t, err)
		assert.Contains(t, out, `denied by rule "deny-k8s-host-pods"`)
		deployment := `apiVersion: apps/v1
kind: Deployment
metadata: {name: agent, namespace: team-a}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      hostPID: true
      containers: [{name: a, image: busybox}]
`
		out, err = alice.kubectl(deployment, "apply", "-f", "-")
		require.Error(t, err)
		assert.Contains(t, out, `denied by rule "deny-k8s-host-pods"`)
		// A pod spec beside a field the cluster would drop is still read;
		// and a write is validated strictly, so the cluster refuses a field
		// it does not know rather than storing what was not ruled on.
		hidden := `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"hidden"},"spec":{"template":null,"hostPID":true,"containers":[{"name":"x","image":"busybox"}]}}`
		out, err = alice.kubectl(hidden, "create", "--raw", "/targets/demo-k8s/api/v1/namespaces/team-a/pods", "-f", "-")
		require.Error(t, err)
		assert.Contains(t, out, `denied by rule "deny-k8s-host-pods"`)
		odd := `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"odd"},"spec":{"bogus":1,"containers":[{"name":"x","image":"busybox"}]}}`
		out, err = alice.kubectl(odd, "create", "--raw", "/targets/demo-k8s/api/v1/namespaces/team-a/pods", "-f", "-")
		require.Error(t, err)
		assert.Contains(t, out, `unknown field "spec.bogus"`)
		out, err = alice.kubectl("", "-n", "team-a", "exec", "web", "--", "id")
		require.Error(t, err)
		assert.Contains(t, out, `denied by rule "deny-k8s-streams-and-proxies"`)
		out, err = alice.kubectl("", "delete", "--raw", "/targets/demo-k8s/api/v1/namespaces/team-a/configmaps")
		require.Error(t, err)
		assert.Contains(t, out, `denied by rule "deny-k8s-bulk-deletes"`)
		out, err = alice.kubectl("", "create", "clusterrolebinding", "me", "--clusterrole=cluster-admin", "--user=alice")
		require.Error(t, err)
		assert.Contains(t, out, `denied by rule "deny-k8s-rbac-writes"`)
		out, err = alice.kubectl("", "create", "token", "default", "-n", "team-a")
		require.Error(t, err)
		assert.Contains(t, out, `denied by rule "deny-k8s-cluster-controls"`)
		out, err = alice.kubectl("", "get", "--raw", "/targets/demo-k8s/metrics")
		require.Error(t, err)
		assert.Contains(t, out, `denied by rule "deny-k8s-server-paths"`)
		// A watch in disguise is a watch (the API server reads any value
		// but false or 0 as true).
		out, err = alice.kubectl("", "get", "--raw", "/targets/demo-k8s/api/v1/namespaces/team-a/secrets?watch=yes")
		require.Error(t, err)
		assert.Contains(t, out, `denied by rule "deny-k8s-secret-reads"`)
		// Where a rule allows exec, the upgrade reaches the cluster (which
		// has no kubelet: the pod has no host).
		out, err = root.kubectl("", "-n", "team-a", "exec", "web", "--", "id")
		require.Error(t, err)
		assert.Contains(t, out, "does not have a host assigned")
	})

	t.Run("the client's credentials and impersonation never reach the cluster", func(t *testing.T) {
		for _, args := range [][]string{{"auth", "whoami"}, {"--as=nobody", "auth", "whoami"}, {"--as=nobody", "--as-group=system:masters", "auth", "whoami"}} {
			out, err := alice.kubectl("", args...)
			require.NoError(t, err, out)
			assert.Contains(t, out, "sluice-gateway", args)
			assert.NotContains(t, out, "nobody", args)
		}
		// A token of the cluster itself is no Sluice token.
		out, err := alice.kubectl("", "--token", "not-a-sluice-token", "get", "namespaces")
		require.Error(t, err)
		assert.Contains(t, out, "provide credentials")
		// Which targets exist is for callers with a token: a target that
		// does not exist answers a bad token as one that does.
		out, err = alice.kubectl("", "--token", "not-a-sluice-token", "get", "--raw", "/targets/no-such-target/api/v1/namespaces")
		require.Error(t, err)
		assert.Contains(t, out, "You must be logged in to the server")
		assert.Contains(t, out, "the token is refused")
		assert.NotContains(t, out, "no-such-target")
	})

	t.Run("a target may impersonate the principal into the cluster's RBAC", func(t *testing.T) {
		// A second target on the same cluster, impersonate: true. The
		// gateway's credential (only Sluice holds it) acts as alice, with
		// her groups; never as a system: identity, whatever she claims.
		server := regexp.MustCompile(`"server":"(https://127\.0\.0\.1:\d+)"`).FindStringSubmatch(env.Logs())
		require.NotNil(t, server, "the demo cluster's URL is in sluice dev's log")
		k8sDir := filepath.Join(env.Dir, "k8s")
		cfg := filepath.Join(t.TempDir(), "impersonating.yaml")
		require.NoError(t, os.WriteFile(cfg, []byte(fmt.Sprintf(`targets:
  - name: demo-k8s-as-you
    kind: kubernetes
    labels: {env: dev}
    kubernetes:
      server: %s
      ca_file: %s
      token: {file: %s}
      impersonate: true
`, server[1], filepath.Join(k8sDir, "certs", "apiserver.crt"), filepath.Join(k8sDir, "admin.token"))), 0o600))
		admin := []string{"SLUICE_TOKEN=" + env.Token("--sub", "root", "--groups", "sluice-admins")}
		out, err := env.CLI(admin, "apply", "-f", cfg)
		require.NoError(t, err, out)
		kc := filepath.Join(t.TempDir(), "kubeconfig")
		out, err = env.CLI([]string{"SLUICE_TOKEN=" + alice.token}, "kubeconfig", "--target", "demo-k8s-as-you", "--out", kc)
		require.NoError(t, err, out)
		// alice's identity provider also says system:masters: that group
		// is dropped, never impersonated.
		as := kubeUser{t: t, env: env, kubeconfig: kc, token: env.Token("--sub", "alice", "--groups", "engineers,system:masters")}
		testkit.Eventually(t, 20*time.Second, func() error {
			out, err = as.kubectl("", "auth", "whoami", "-o", "jsonpath={.status.userInfo.username} {.status.userInfo.groups}")
			if err != nil {
				return fmt.Errorf("%v: %s", err, out)
			}
			return nil
		})
		assert.Contains(t, out, "alice")
		assert.Contains(t, out, "engineers")
		assert.NotContains(t, out, "sluice-gateway")
		assert.NotContains(t, out, "system:masters")
		// The cluster's RBAC now rules too: alice has no role binding there.
		out, err = as.kubectl("", "-n", "team-a", "get", "configmaps")
		require.Error(t, err)
		assert.Contains(t, out, `User "alice" cannot list resource "configmaps"`)
		// A principal named like a cluster identity is not impersonated: the
		// request is refused, and recorded.
		sys := kubeUser{t: t, env: env, kubeconfig: kc, token: env.Token("--sub", "system:admin", "--groups", "engineers")}
		out, err = sys.kubectl("", "get", "--raw", "/targets/demo-k8s-as-you/api/v1/namespaces")
		require.Error(t, err)
		assert.Contains(t, out, "Forbidden")
		findReplay(t, env, auditor, func(r string) bool {
			return strings.Contains(r, "system:admin") && strings.Contains(r, "DENY by rule builtin:impersonation-refused")
		})
	})

	t.Run("an agent over MCP: the same rules, the same masking, a held delete collected", func(t *testing.T) {
		agent := connectMCP(t, env, sam.token)
		r := agent.call("kube_request", map[string]any{"target": "demo-k8s", "path": "/api/v1/namespaces/team-a/secrets/db"}, nil)
		require.Equal(t, "ok", r.Status, r.text)
		assert.NotContains(t, r.text, base64.StdEncoding.EncodeToString([]byte("hunter2")))
		assert.Contains(t, r.text, "W3JlZGFjdGVkXQ==")
		eng := connectMCP(t, env, alice.token)
		r = eng.call("kube_request", map[string]any{"target": "demo-k8s", "path": "/api/v1/namespaces/team-a/secrets/db"}, nil)
		assert.Equal(t, "denied", r.Status)
		assert.Equal(t, "deny-k8s-secret-reads", r.Decision.Rule)
		r = eng.call("kube_request", map[string]any{"target": "demo-k8s", "method": "POST", "path": "/api/v1/namespaces/team-a/configmaps",
			"body": map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": "from-agent"}, "data": map[string]any{"k": "v"}}}, nil)
		require.Equal(t, "ok", r.Status, r.text)
		r = eng.call("kube_request", map[string]any{"target": "demo-k8s", "method": "DELETE", "path": "/api/v1/namespaces/team-a/configmaps/from-agent"}, nil)
		require.Equal(t, "pending_approval", r.Status, r.text)
		out, err := env.CLI(bob, "approve", r.Approval.ID, "--reason", "agent cleanup")
		require.NoError(t, err, out)
		r = eng.call("collect_result", map[string]any{"approval_id": r.Approval.ID, "wait_seconds": 30}, nil)
		require.Equal(t, "ok", r.Status, r.text)
		out, err = alice.kubectl("", "-n", "team-a", "get", "configmap", "from-agent")
		require.Error(t, err)
		assert.Contains(t, out, "NotFound")

		// A held write: its approver reads the body it would send.
		bot := connectMCP(t, env, env.Token("--sub", "kube-bot", "--groups", "engineers", "--machine"))
		r = bot.call("kube_request", map[string]any{"target": "demo-k8s", "method": "POST", "path": "/api/v1/namespaces/team-a/configmaps",
			"body": map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": "from-bot"},
				"data": map[string]any{"mode": "v-from-bot", "owner": "mallory@corp.example"}}}, nil)
		require.Equal(t, "pending_approval", r.Status, r.text)
		out, err = env.CLI(bob, "approvals", "show", r.Approval.ID)
		require.NoError(t, err, out)
		assert.Contains(t, out, "POST /api/v1/namespaces/team-a/configmaps\n  Content-Type: application/json\n", out)
		assert.Contains(t, out, `"mode":"v-from-bot"`, out)
		assert.Contains(t, out, `"owner":"mallory@corp.example"`, "the approver reads what the detectors would mask in a record")
		out, err = env.CLI(bob, "deny", r.Approval.ID, "--reason", "read the body")
		require.NoError(t, err, out)
	})

	t.Run("a watch is recorded as its start and a summary of what it sent", func(t *testing.T) {
		// (kubectl sends the query's parameters sorted)
		const watch = "/api/v1/namespaces/team-a/configmaps?timeoutSeconds=2&watch=1"
		out, err := alice.kubectl("", "get", "--raw", "/targets/demo-k8s"+watch)
		require.NoError(t, err, out)
		assert.Contains(t, out, `"type":"ADDED"`)
		events := len(strings.Split(strings.TrimSpace(out), "\n"))
		transcript := findReplay(t, env, auditor, func(r string) bool { return strings.Contains(r, "GET "+watch) })
		after := transcript[strings.Index(transcript, "GET "+watch):]
		assert.Regexp(t, fmt.Sprintf(`^GET \S+\n(?:.*\n)*?\s+→ HTTP 200, %d row\(s\)`, events), after, "the watch's result counts its %d events", events)
	})

	t.Run("every request is in replay, and the audit log verifies", func(t *testing.T) {
		transcript := findReplay(t, env, auditor, func(r string) bool {
			return strings.Contains(r, "deny-k8s-secret-reads") && strings.Contains(r, "kubernetes on target demo-k8s") && strings.Contains(r, "GET /api/v1/namespaces/team-a/secrets/db")
		})
		assert.Contains(t, transcript, "kubernetes on target demo-k8s")
		assert.Contains(t, transcript, "GET /api/v1/namespaces/team-a/secrets/db")
		v, err := env.CLI(auditor, "audit", "verify")
		require.NoError(t, err, v)
		assert.Contains(t, v, "intact")
	})
}

// findReplay returns the replay of the first session whose transcript
// satisfies match, waiting for it to be recorded.
func findReplay(t *testing.T, env *devEnv, auditor []string, match func(string) bool) string {
	t.Helper()
	var transcript string
	testkit.Eventually(t, 15*time.Second, func() error {
		o, err := env.CLI(auditor, "sessions", "list", "-o", "json")
		if err != nil {
			return fmt.Errorf("%v: %s", err, o)
		}
		for _, id := range regexp.MustCompile(`"id":\s*"([0-9a-z]{26})"`).FindAllStringSubmatch(o, -1) {
			if r, _ := env.CLI(auditor, "replay", id[1]); match(r) {
				transcript = r
				return nil
			}
		}
		return fmt.Errorf("no such session recorded yet")
	})
	return transcript
}
