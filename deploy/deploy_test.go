// Package deploy_test checks the deployment files as far as this machine
// allows without a container runtime: the Helm chart is linted, rendered
// and applied with a server-side dry run to a real kube-apiserver; the
// compose file, Dockerfile, systemd units, dashboard and alert rules are
// parsed and held to what the binary really accepts (every SLUICE_*
// variable is a flag of sluice serve, every metric is one the services
// export). e2e/deploy_test.go runs the compose file's processes.
package deploy_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"sluice.dev/sluice/libs/kubelocal"
	"sluice.dev/sluice/libs/telemetry"

	// Every package that exports metrics, so that telemetry.Names knows
	// them all.
	_ "sluice.dev/sluice/libs/bus"
	_ "sluice.dev/sluice/libs/gateway"
	_ "sluice.dev/sluice/libs/recording"
	_ "sluice.dev/sluice/services/api"
	_ "sluice.dev/sluice/services/approvals"
	_ "sluice.dev/sluice/services/control"
	_ "sluice.dev/sluice/services/exporter"
	_ "sluice.dev/sluice/services/identity"
	_ "sluice.dev/sluice/services/policy"
	_ "sluice.dev/sluice/services/recorder"
	_ "sluice.dev/sluice/services/slackbot"
)

// sluice returns the built binary (make test sets SLUICE_BIN).
func sluice(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("SLUICE_BIN")
	if bin == "" {
		if os.Getenv("SLUICE_E2E_REQUIRED") != "" {
			t.Fatal("SLUICE_BIN is not set")
		}
		t.Skip("SLUICE_BIN is not set (make test sets it)")
	}
	return bin
}

var settingVar = regexp.MustCompile(`\bSLUICE_[A-Z0-9_]+\b`)

// serveSettings are the variables sluice serve reads, from its --help.
func serveSettings(t *testing.T) (vars map[string]bool, services []string) {
	t.Helper()
	out, err := exec.Command(sluice(t), "serve", "--help").CombinedOutput()
	require.NoError(t, err, string(out))
	vars = map[string]bool{}
	for _, m := range regexp.MustCompile(`\[\$(SLUICE_[A-Z0-9_]+)\]`).FindAllStringSubmatch(string(out), -1) {
		vars[m[1]] = true
	}
	require.Contains(t, vars, "SLUICE_ADMIN_ADDR")
	require.Contains(t, vars, "SLUICE_CONFIG_FILE")
	m := regexp.MustCompile(`Services: ([a-z0-9, ]+), or all`).FindStringSubmatch(string(out))
	require.NotNil(t, m, "serve --help names the services")
	return vars, strings.Split(m[1], ", ")
}

// TestSettingsAreFlags: every SLUICE_* variable the deployment files set
// is one sluice serve reads (a misspelt one would be silently ignored), or
// one the NATS configuration reads.
func TestSettingsAreFlags(t *testing.T) {
	vars, _ := serveSettings(t)
	nats, err := os.ReadFile(filepath.Join("nats", "nats.conf"))
	require.NoError(t, err)
	for _, v := range settingVar.FindAllString(string(nats), -1) {
		vars[v] = true // the NATS server's own: node name, certificate files
	}
	// Not settings: the compose image's name, and the master key given
	// as a value rather than a file.
	vars["SLUICE_IMAGE"], vars["SLUICE_MASTER_KEY"] = true, true
	checked := 0
	err = filepath.WalkDir(".", func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "users.conf") || path == filepath.Join("nats", "nats.conf") {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		checked++
		for _, v := range settingVar.FindAllString(string(b), -1) {
			if strings.HasPrefix(v, "SLUICE_NKEY_") {
				continue // users.conf's public keys (nats.env)
			}
			assert.True(t, vars[v], "%s sets %s, which sluice serve does not read", path, v)
		}
		return nil
	})
	require.NoError(t, err)
	assert.Greater(t, checked, 20)
}

// TestChartUsersConf: the chart carries the NATS users file the bus
// generates, unchanged.
func TestChartUsersConf(t *testing.T) {
	want, err := os.ReadFile(filepath.Join("nats", "users.conf"))
	require.NoError(t, err)
	got, err := os.ReadFile(filepath.Join("helm", "sluice", "files", "users.conf"))
	require.NoError(t, err)
	assert.Equal(t, string(want), string(got), "copy deploy/nats/users.conf to deploy/helm/sluice/files/users.conf")
}

// TestCompose: each Sluice service runs `sluice serve` of a real service
// with only its own NATS seed; the break-glass seed reaches no service.
func TestCompose(t *testing.T) {
	_, services := serveSettings(t)
	var c struct {
		Services map[string]struct {
			Image       string         `yaml:"image"`
			Command     []string       `yaml:"command"`
			Entrypoint  []string       `yaml:"entrypoint"`
			Environment map[string]any `yaml:"environment"`
			Volumes     []any          `yaml:"volumes"`
			Profiles    []string       `yaml:"profiles"`
		} `yaml:"services"`
		Volumes map[string]any `yaml:"volumes"`
	}
	b, err := os.ReadFile(filepath.Join("compose", "compose.yaml"))
	require.NoError(t, err)
	require.NoError(t, yaml.Unmarshal(b, &c))
	served := map[string]bool{}
	for name, s := range c.Services {
		mounts := fmt.Sprint(s.Volumes)
		if len(s.Command) == 2 && s.Command[0] == "serve" {
			svc := s.Command[1]
			served[svc] = true
			assert.Contains(t, services, svc, "%s: sluice serve %s", name, svc)
			assert.Contains(t, mounts, "nats-keys/"+svc+".nk", "%s mounts its own NATS seed", name)
			assert.Len(t, regexp.MustCompile(`nats-keys/[a-z]+\.nk`).FindAllString(mounts, -1), 1, "%s mounts one NATS seed", name)
			assert.Equal(t, "/run/sluice/nats.nk", s.Environment["SLUICE_NATS_NKEY_FILE"], name)
			assert.Equal(t, "0.0.0.0:9090", s.Environment["SLUICE_ADMIN_ADDR"], name)
		}
		if name != "init" && name != "admin" {
			assert.NotContains(t, mounts, "break-glass", "%s must not reach the break-glass seed", name)
		}
	}
	for _, svc := range []string{"identity", "control", "policy", "approvals", "recorder", "api", "pgworker"} {
		assert.True(t, served[svc], "compose runs %s", svc)
	}
	assert.Equal(t, []string{"admin", "init", "--dir", "/secrets", "--admin-key", "/break-glass/admin.nk"}, c.Services["init"].Command[:6])
	for _, f := range []string{"sluice.yaml", filepath.Join("demo", "postgres-init.sh"), filepath.Join("..", "nats", "nats.conf")} {
		_, err := os.Stat(filepath.Join("compose", f))
		assert.NoError(t, err, "compose.yaml mounts %s", f)
	}
}

// TestDockerfile: a multi-stage build of the one binary into a static,
// non-root final image.
func TestDockerfile(t *testing.T) {
	f, err := os.Open(filepath.Join("docker", "Dockerfile"))
	require.NoError(t, err)
	defer f.Close()
	type stage struct {
		from  string
		lines []string
	}
	var stages []stage
	var line strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if strings.HasSuffix(l, "\\") {
			line.WriteString(strings.TrimSuffix(l, "\\") + " ")
			continue
		}
		line.WriteString(l)
		full := line.String()
		line.Reset()
		instr, _, _ := strings.Cut(full, " ")
		switch strings.ToUpper(instr) {
		case "FROM":
			stages = append(stages, stage{from: full})
		case "ARG":
			if len(stages) == 0 {
				continue
			}
			fallthrough
		default:
			require.NotEmpty(t, stages, "an instruction before FROM: %s", full)
			stages[len(stages)-1].lines = append(stages[len(stages)-1].lines, full)
		}
	}
	require.GreaterOrEqual(t, len(stages), 2, "a build stage and a final stage")
	build, final := strings.Join(stages[0].lines, "\n"), stages[len(stages)-1]
	assert.Contains(t, build, "./services/sluice/cmd/sluice")
	assert.Contains(t, build, "-extldflags -static", "a static binary")
	assert.Contains(t, final.from, "static", "a static base image")
	user := ""
	for _, l := range final.lines {
		if strings.HasPrefix(l, "USER ") {
			user = strings.TrimPrefix(l, "USER ")
		}
	}
	assert.NotEmpty(t, user, "the final stage names its user")
	assert.NotContains(t, []string{"root", "0", "0:0"}, user)
	assert.Contains(t, strings.Join(final.lines, "\n"), `ENTRYPOINT ["/usr/local/bin/sluice"]`)
	// compose's init writes the secrets volume as that user.
	for _, dir := range []string{"/secrets", "/break-glass"} {
		assert.Contains(t, strings.Join(final.lines, "\n"), "--chown="+user+" /out"+dir+" "+dir)
	}
	ignore, err := os.ReadFile(filepath.Join("docker", "Dockerfile.dockerignore"))
	require.NoError(t, err)
	for _, p := range []string{"secrets", ".sluice", "**/*.nk", "**/*-key.pem"} {
		assert.Contains(t, strings.Split(string(ignore), "\n"), p, "secrets stay out of the build context")
	}
	for _, l := range stages[0].lines {
		if strings.HasPrefix(l, "COPY ") && !strings.HasPrefix(l, "COPY . ") {
			for _, src := range strings.Fields(l)[1 : len(strings.Fields(l))-1] {
				_, err := os.Stat(filepath.Join("..", src))
				assert.NoError(t, err, "the Dockerfile copies %s", src)
			}
		}
	}
}

// TestSystemdUnits: the units run sluice serve, read the settings files,
// and hand every secret over as a credential whose variable is a flag.
func TestSystemdUnits(t *testing.T) {
	unit := readUnit(t, filepath.Join("systemd", "sluice@.service"))
	assert.Equal(t, []string{"/usr/local/bin/sluice serve %i"}, unit["ExecStart"])
	assert.Equal(t, []string{"/etc/sluice/common.env", "-/etc/sluice/%i.env"}, unit["EnvironmentFile"])
	assert.Equal(t, []string{"yes"}, unit["DynamicUser"])
	dropIns, err := filepath.Glob(filepath.Join("systemd", "sluice@*.service.d", "*.conf"))
	require.NoError(t, err)
	require.NotEmpty(t, dropIns)
	nats := readUnit(t, filepath.Join("systemd", "sluice-nats.service"))
	assert.Equal(t, []string{"/usr/local/bin/nats-server -c %d/nats.conf"}, nats["ExecStart"])
	assert.Contains(t, nats["EnvironmentFile"], "/etc/sluice/nats-keys/nats.env", "where sluice admin init writes it")
	for _, f := range append(dropIns, filepath.Join("systemd", "sluice@.service"), filepath.Join("systemd", "sluice-nats.service")) {
		u := readUnit(t, f)
		creds := map[string]bool{}
		for _, c := range u["LoadCredential"] {
			name, path, ok := strings.Cut(c, ":")
			require.True(t, ok, "%s: LoadCredential=%s", f, c)
			assert.True(t, strings.HasPrefix(path, "/etc/sluice/"), "%s: %s", f, path)
			creds[name] = true
		}
		for _, env := range u["Environment"] {
			for _, kv := range strings.Fields(env) {
				_, v, _ := strings.Cut(kv, "=")
				if strings.HasPrefix(v, "%d/") {
					assert.True(t, creds[strings.TrimPrefix(v, "%d/")], "%s: %s names a credential it loads", f, kv)
				}
			}
		}
	}
}

func readUnit(t *testing.T, path string) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	out := map[string][]string{}
	for _, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") || strings.HasPrefix(l, "[") {
			continue
		}
		k, v, ok := strings.Cut(l, "=")
		require.True(t, ok, "%s: %q", path, l)
		out[k] = append(out[k], v)
	}
	return out
}

var metricRef = regexp.MustCompile(`\bsluice_[a-z0-9_]+`)

// TestMonitoring: the dashboard and alert rules parse, and name only
// metrics the services export.
func TestMonitoring(t *testing.T) {
	known := map[string]bool{}
	for _, n := range telemetry.Names() {
		known[n] = true
	}
	require.True(t, known["sluice_decisions_total"], "the services' metrics are registered")
	dash, err := os.ReadFile(filepath.Join("monitoring", "grafana-dashboard.json"))
	require.NoError(t, err)
	var d struct {
		Panels []struct {
			ID      int    `json:"id"`
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	require.NoError(t, json.Unmarshal(dash, &d))
	ids := map[int]bool{}
	exprs := 0
	for _, p := range d.Panels {
		assert.False(t, ids[p.ID], "panel id %d is unique", p.ID)
		ids[p.ID] = true
		exprs += len(p.Targets)
	}
	assert.Greater(t, exprs, 20)
	rules, err := os.ReadFile(filepath.Join("monitoring", "alerts.yaml"))
	require.NoError(t, err)
	var r struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				For         string            `yaml:"for"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	require.NoError(t, yaml.Unmarshal(rules, &r))
	alerts := map[string]bool{}
	for _, g := range r.Groups {
		for _, rule := range g.Rules {
			alerts[rule.Alert] = true
			assert.NotEmpty(t, rule.Expr, rule.Alert)
			assert.Contains(t, []string{"info", "warning", "critical"}, rule.Labels["severity"], rule.Alert)
			assert.NotEmpty(t, rule.Annotations["summary"], rule.Alert)
			if rule.For != "" {
				_, err := time.ParseDuration(rule.For)
				assert.NoError(t, err, rule.Alert)
			}
		}
	}
	for _, a := range []string{"SluiceAuditStreamNearCap", "SluiceRecordingLag", "SluiceRecorderDown"} {
		assert.True(t, alerts[a], "alert %s", a)
	}
	var unknown []string
	for _, ref := range append(metricRef.FindAllString(string(dash), -1), metricRef.FindAllString(string(rules), -1)...) {
		name := ref
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if base := strings.TrimSuffix(ref, suffix); base != ref && known[base] {
				name = base
			}
		}
		if !known[name] && !slices.Contains(unknown, name) {
			unknown = append(unknown, name)
		}
	}
	sort.Strings(unknown)
	assert.Empty(t, unknown, "metrics no service exports")
}

// helm returns the helm binary scripts/tools.sh builds.
func helm(t *testing.T) string {
	t.Helper()
	out, err := exec.Command(filepath.Join("..", "scripts", "tools.sh"), "helm").Output()
	if err != nil {
		t.Fatalf("scripts/tools.sh helm: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// TestHelmChart lints and renders the chart with its defaults, with every
// optional service, and with the two IdP examples, and applies each render
// to a real kube-apiserver with a server-side dry run.
func TestHelmChart(t *testing.T) {
	if testing.Short() {
		t.Skip("helm and kube-apiserver: skipped with -short")
	}
	bin := helm(t)
	chart := filepath.Join("helm", "sluice")
	out, err := exec.Command(bin, "lint", "--strict", chart).CombinedOutput()
	require.NoError(t, err, string(out))

	if _, _, err := kubelocal.Binaries(); err != nil {
		t.Fatalf("kube-apiserver: %v (make tools builds it)", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	kube, err := kubelocal.Start(ctx, kubelocal.Config{Dir: t.TempDir()})
	require.NoError(t, err)
	defer kube.Stop()
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	require.NoError(t, os.WriteFile(kubeconfig, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: test, cluster: {server: %s, certificate-authority: %s}}]
users: [{name: admin, user: {token: %s}}]
contexts: [{name: test, context: {cluster: test, user: admin}}]
current-context: test
`, kube.URL, kube.CAFile, kube.AdminToken)), 0o600))
	kubectl := func(stdin []byte, args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, "kubectl", append([]string{"--kubeconfig", kubeconfig}, args...)...)
		cmd.Stdin = bytes.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out2, err := kubectl(nil, "create", "namespace", "sluice")
	require.NoError(t, err, out2)

	optional := []string{"--set", "sshworker.enabled=true", "--set", "k8sworker.enabled=true", "--set", "mcpworker.enabled=true",
		"--set", "exporter.enabled=true", "--set", "exporter.syslog.addr=siem.example.com:6514", "--set", "slackbot.enabled=true",
		"--set", "slackbot.channel=C0123", "--set", "api.console.clientID=sluice-console", "--set", "api.console.url=https://sluice.example.com"}
	for name, args := range map[string][]string{
		"defaults": nil,
		"optional": optional,
		"keycloak": {"-f", filepath.Join(chart, "examples", "values-keycloak.yaml")},
		"entra":    {"-f", filepath.Join(chart, "examples", "values-entra.yaml")},
		// README's walk from nothing to a psql session.
		"readme": {"--set", "image.repository=registry.example.com/sluice", "--set", "pgworker.extraEnv[0].name=ORDERS_DB_PASSWORD",
			"--set", "pgworker.extraEnv[0].valueFrom.secretKeyRef.name=orders-db", "--set", "pgworker.extraEnv[0].valueFrom.secretKeyRef.key=password"},
	} {
		t.Run(name, func(t *testing.T) {
			rendered, err := exec.Command(bin, append([]string{"template", "sluice", chart, "--namespace", "sluice",
				"--set", "oidc.issuer=https://idp.example.com"}, args...)...).Output()
			require.NoError(t, err)
			for _, kind := range []string{"kind: StatefulSet", "kind: Deployment", "kind: PodDisruptionBudget", "kind: NetworkPolicy", "kind: Service"} {
				assert.Contains(t, string(rendered), kind)
			}
			assert.NotContains(t, string(rendered), "admin.nk", "the break-glass seed is never mounted")
			out, err := kubectl(rendered, "apply", "--server-side", "--dry-run=server", "-n", "sluice", "-f", "-")
			require.NoError(t, err, out)
			assert.Contains(t, out, "serverside-applied (server dry run)")
		})
	}
}
