package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"sluice.dev/sluice/libs/pglocal"
	"sluice.dev/sluice/libs/testkit"
)

// composeService is what this test takes of a compose service.
type composeService struct {
	Command     []string          `yaml:"command"`
	Environment map[string]string `yaml:"environment"`
	Volumes     []any             `yaml:"volumes"`
}

// mounts maps each file a service mounts from the secrets volume to its
// path inside the volume.
func (s composeService) mounts() map[string]string {
	out := map[string]string{}
	for _, v := range s.Volumes {
		m, ok := v.(map[string]any)
		if !ok || m["source"] != "secrets" {
			continue
		}
		sub, _ := m["volume"].(map[string]any)
		out[fmt.Sprint(m["target"])] = fmt.Sprint(sub["subpath"])
	}
	return out
}

var composeVar = regexp.MustCompile(`\$\{([A-Z0-9_]+)(?::([-?])([^}]*))?\}`)

// interpolate resolves ${VAR:-default} and ${VAR:?message} as compose does.
func interpolate(t *testing.T, s string, vars map[string]string) string {
	return composeVar.ReplaceAllStringFunc(s, func(m string) string {
		p := composeVar.FindStringSubmatch(m)
		if v, ok := vars[p[1]]; ok && v != "" {
			return v
		}
		if p[2] == "?" {
			t.Fatalf("compose needs %s: %s", p[1], p[3])
		}
		return p[3]
	})
}

// TestComposeProcesses runs deploy/compose/compose.yaml's Sluice processes
// as compose would, with their commands, environment and secrets (this
// machine has no container runtime): `sluice admin init` as the init
// container does, three NATS servers with deploy/nats/nats.conf and the
// keys and certificate init made, the demo database from its init script,
// and every service with the environment compose gives it, addresses
// mapped to loopback ports. Then a psql session, a denial and an approval,
// and every component's /metrics counts them.
func TestComposeProcesses(t *testing.T) {
	requireTool(t, "psql")
	pgBin := postgresBinaries(t)
	ctx := context.Background()
	dir := t.TempDir()
	composeDir := filepath.Join("..", "deploy", "compose")
	raw, err := os.ReadFile(filepath.Join(composeDir, "compose.yaml"))
	require.NoError(t, err)
	var compose struct {
		Services map[string]composeService `yaml:"services"`
	}
	require.NoError(t, yaml.Unmarshal(raw, &compose))

	// The volumes, as directories.
	secrets, breakGlass := filepath.Join(dir, "secrets"), filepath.Join(dir, "break-glass")
	volume := func(p string) string {
		p = strings.Replace(p, "/secrets", secrets, 1)
		return strings.Replace(p, "/break-glass", breakGlass, 1)
	}
	var initArgs []string
	for _, a := range compose.Services["init"].Command {
		initArgs = append(initArgs, volume(a))
	}
	out, err := exec.Command(sluiceBin, initArgs...).CombinedOutput()
	require.NoError(t, err, string(out))
	// Run twice, it keeps what it made.
	before, _ := os.ReadFile(filepath.Join(secrets, "master.key"))
	out, err = exec.Command(sluiceBin, initArgs...).CombinedOutput()
	require.NoError(t, err, string(out))
	after, _ := os.ReadFile(filepath.Join(secrets, "master.key"))
	require.Equal(t, before, after, "admin init keeps existing secrets")
	for _, f := range []string{"admin.nk", "nats-keys/pgworker.nk", "recorder.key", "tls/ca.pem", "tls/gateway-key.pem", "ssh/ssh_host_key", "ssh/ssh_user_ca.pub"} {
		path := filepath.Join(secrets, f)
		if f == "admin.nk" {
			path = filepath.Join(breakGlass, f)
		}
		require.FileExists(t, path)
	}
	require.NoFileExists(t, filepath.Join(secrets, "nats-keys", "admin.nk"), "the break-glass seed is kept apart")

	// NATS: deploy/nats/nats.conf with the environment the compose NATS
	// containers have (nats.env, then their own variables).
	natsEnv, err := os.ReadFile(filepath.Join(secrets, "nats-keys", "nats.env"))
	require.NoError(t, err)
	for _, l := range strings.Split(string(natsEnv), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok && !strings.HasPrefix(k, "#") {
			t.Setenv(k, v)
		}
	}
	natsSvc := compose.Services["nats-1"]
	for k, v := range natsSvc.Environment {
		if target, ok := natsSvc.mounts()[v]; ok {
			v = filepath.Join(secrets, target)
		}
		t.Setenv(k, v)
	}
	cluster := testkit.NATSClusterFromConfig(t, filepath.Join("..", "deploy", "nats", "nats.conf"))
	natsURL := strings.ReplaceAll(cluster.URL(), "nats://", "tls://")

	// The identity provider.
	iss, token := startIssuer(t, dir)

	// The demo database, made by compose's own init script.
	pg, err := pglocal.Start(ctx, pglocal.Config{Dir: filepath.Join(dir, "pg"), BinDir: pgBin})
	require.NoError(t, err)
	t.Cleanup(pg.Stop)
	require.NoError(t, pg.Exec(ctx, "postgres", "CREATE DATABASE demo"))
	vars := map[string]string{"SLUICE_ISSUER": iss.URL, "DEMO_DB_PASSWORD": secret(t)}
	script := exec.Command("sh", filepath.Join(composeDir, "demo", "postgres-init.sh"))
	script.Env = append(os.Environ(), "POSTGRES_USER=postgres", "POSTGRES_DB=demo", "PGHOST="+pg.SocketDir,
		"PGPORT="+strconv.Itoa(pg.Port), "DEMO_DB_PASSWORD="+vars["DEMO_DB_PASSWORD"])
	out, err = script.CombinedOutput()
	require.NoError(t, err, string(out))

	// Every Sluice service as compose runs it.
	listen := map[string]string{}
	adminAddr := map[string]string{}
	var names []string
	for name, s := range compose.Services {
		if len(s.Command) != 2 || s.Command[0] != "serve" {
			continue
		}
		names = append(names, name)
		env := []string{}
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, "SLUICE_") {
				env = append(env, kv)
			}
		}
		mounts := s.mounts()
		for k, v := range s.Environment {
			v = interpolate(t, v, vars)
			switch {
			case k == "SLUICE_NATS":
				v = natsURL
			case mounts[v] != "":
				v = filepath.Join(secrets, mounts[v])
			case strings.HasPrefix(v, "0.0.0.0:"):
				v = fmt.Sprintf("127.0.0.1:%d", freePort(t))
				listen[name+" "+k] = v
			}
			env = append(env, k+"="+v)
		}
		if name == "mcpworker" {
			env = append(env, "SLUICE_MCP_PUBLIC_URL=http://"+listen["mcpworker SLUICE_MCP_ADDR"]+"/mcp")
		}
		adminAddr[name] = listen[name+" SLUICE_ADMIN_ADDR"]
		require.NotEmpty(t, adminAddr[name], "%s has an admin port", name)
		logs := &syncBuffer{}
		cmd := exec.Command(sluiceBin, s.Command...)
		cmd.Env, cmd.Stderr = env, logs
		require.NoError(t, cmd.Start())
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			if t.Failed() {
				t.Logf("sluice %s:\n%s", strings.Join(s.Command, " "), tail(logs.String(), 20))
			}
		})
	}
	sort.Strings(names)
	require.Subset(t, names, []string{"api", "approvals", "control", "identity", "mcpworker", "pgworker", "policy", "recorder"})

	// Ready means ready: each admin port's /readyz.
	for _, name := range names {
		testkit.Eventually(t, 60*time.Second, func() error {
			resp, err := http.Get("http://" + adminAddr[name] + "/readyz")
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("%s: %d %s", name, resp.StatusCode, b)
			}
			return nil
		})
	}

	// The first configuration, through the break-glass identity as the
	// compose admin service runs it: compose's sluice.yaml, its target at
	// this test's database.
	config, err := os.ReadFile(filepath.Join(composeDir, "sluice.yaml"))
	require.NoError(t, err)
	cfg := strings.Replace(string(config), "https://idp.example.com/realms/sluice", iss.URL, 1)
	cfg = strings.Replace(cfg, "host: demo-postgres\n      port: 5432", fmt.Sprintf("host: 127.0.0.1\n      port: %d", pg.Port), 1)
	require.NotEqual(t, string(config), cfg)
	cfgFile := filepath.Join(dir, "sluice.yaml")
	require.NoError(t, os.WriteFile(cfgFile, []byte(cfg), 0o600))
	adminSvc := compose.Services["admin"]
	testkit.Eventually(t, 60*time.Second, func() error {
		cmd := timedCommand(t, sluiceBin, "admin", "apply", "-f", cfgFile)
		cmd.Env = os.Environ()
		for k, v := range adminSvc.Environment {
			switch {
			case k == "SLUICE_NATS":
				v = natsURL
			case adminSvc.mounts()[v] != "":
				v = filepath.Join(secrets, adminSvc.mounts()[v])
			default:
				v = volume(v)
			}
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})

	api := "SLUICE_API=http://" + listen["api SLUICE_ADDR"]
	cli := func(tok string, args ...string) (string, error) {
		cmd := timedCommand(t, sluiceBin, args...)
		cmd.Env = append(os.Environ(), api, "SLUICE_TOKEN="+tok)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	pgHost, pgPort, _ := net.SplitHostPort(listen["pgworker SLUICE_PG_ADDR"])
	dsn := fmt.Sprintf("host=%s port=%s dbname=demo user=alice sslmode=verify-full sslrootcert=%s password=%s connect_timeout=10",
		pgHost, pgPort, filepath.Join(secrets, "tls", "ca.pem"), token("alice", "engineers"))
	as := func(sub, group string) func(args ...string) (string, error) {
		tok := token(sub, group)
		return func(args ...string) (string, error) { return cli(tok, args...) }
	}
	g := gatewayUser{psql: psqlAt(t, dsn), approver: as("bob", "approvers"), auditor: as("audrey", "auditors")}
	testkit.Eventually(t, 30*time.Second, func() error {
		if out, err := g.psql("SELECT name FROM customers WHERE id = 1"); err != nil || out != "customer 1\n" {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	// A psql session, a denial and an approval (the worker's certificate
	// verifies against init's CA: sslmode=verify-full).
	g.checkControls(t, "SELECT email FROM customers WHERE id = 1", "DELETE 100")

	// The auditor pages through the sessions: one page at a time, each
	// naming the next.
	var seen []string
	cursor := ""
	for page := 0; page < 3; page++ {
		args := []string{"sessions", "list", "--limit", "1", "--protocol", "postgres", "-o", "json"}
		if cursor != "" {
			args = append(args, "--before", cursor)
		}
		listed, err := g.auditor(args...)
		require.NoError(t, err, listed)
		var res struct {
			Sessions []struct {
				ID string `json:"id"`
			} `json:"sessions"`
			Next string `json:"next"`
		}
		require.NoError(t, json.Unmarshal([]byte(listed), &res), listed)
		require.Len(t, res.Sessions, 1, listed)
		require.NotContains(t, seen, res.Sessions[0].ID)
		seen = append(seen, res.Sessions[0].ID)
		if res.Next == "" {
			all, _ := g.auditor("sessions", "list", "-o", "json")
			t.Fatalf("psql ran more than three sessions, yet page %d is the last; every session listed:\n%s", page+1, all)
		}
		cursor = res.Next
	}

	// Each component counted them.
	metric := func(name, pattern string) float64 {
		resp, err := http.Get("http://" + adminAddr[name] + "/metrics")
		require.NoError(t, err)
		defer resp.Body.Close()
		re := regexp.MustCompile(`^` + pattern + ` ([0-9.e+-]+)$`)
		sum := 0.0
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				v, _ := strconv.ParseFloat(m[1], 64)
				sum += v
			}
		}
		return sum
	}
	for _, c := range []struct{ service, pattern string }{
		{"pgworker", `sluice_sessions_started_total\{protocol="postgres"\}`},
		{"pgworker", `sluice_decisions_total\{action="deny",protocol="postgres",rule="deny-role-changes"\}`},
		{"pgworker", `sluice_holds_total\{outcome="approved",protocol="postgres"\}`},
		{"pgworker", `sluice_record_wait_seconds_count`},
		{"pgworker", `sluice_nats_connected\{component="pgworker"\}`},
		{"policy", `sluice_policy_evaluations_total\{action="deny",rule="deny-role-changes"\}`},
		{"policy", `sluice_policy_revision`},
		{"approvals", `sluice_approvals_opened_total\{protocol="postgres"\}`},
		{"approvals", `sluice_approvals_decided_total\{outcome="approved"\}`},
		{"approvals", `sluice_approval_wait_seconds_count\{outcome="approved"\}`},
		{"recorder", `sluice_recorder_events_total`},
		{"recorder", `sluice_recorder_batch_size_count`},
		{"identity", `sluice_identity_verifications_total\{result="ok"\}`},
		{"api", `sluice_api_requests_total\{[^}]*\}`},
		{"control", `sluice_control_applies_total\{result="applied"\}`},
		{"mcpworker", `sluice_nats_connected\{component="mcpworker"\}`},
	} {
		assert.Positive(t, metric(c.service, c.pattern), "%s: %s", c.service, c.pattern)
	}
	// The audit stream's size is read every 15 s.
	testkit.Eventually(t, 40*time.Second, func() error {
		if metric("recorder", `sluice_audit_stream_bytes`) <= 0 {
			return fmt.Errorf("sluice_audit_stream_bytes not reported yet")
		}
		return nil
	})
}
