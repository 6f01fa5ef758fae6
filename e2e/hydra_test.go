package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"sluice.dev/sluice/libs/testkit"
)

// hydra is ORY Hydra, a real OIDC provider Sluice did not write, built from
// the Go module proxy by scripts/tools.sh (cached outside the clone).
type hydra struct {
	issuer, admin string
}

func startHydra(t *testing.T) *hydra {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	out, err := exec.Command(filepath.Join(filepath.Dir(file), "..", "scripts", "tools.sh"), "hydra").Output()
	require.NoError(t, err, "scripts/tools.sh hydra: %s", out)
	bin := strings.TrimSpace(string(out))
	dir := t.TempDir()
	pub, adm := freePort(t), freePort(t)
	h := &hydra{issuer: fmt.Sprintf("http://127.0.0.1:%d", pub), admin: fmt.Sprintf("http://127.0.0.1:%d", adm)}
	cfg := fmt.Sprintf(`dsn: sqlite://%s/hydra.sqlite?_fk=true&mode=rwc
serve:
  public: {host: 127.0.0.1, port: %d}
  admin: {host: 127.0.0.1, port: %d}
urls:
  self: {issuer: %s}
strategies:
  access_token: jwt
secrets:
  system: [%s]
log: {level: warn}
`, dir, pub, adm, h.issuer, secret(t)+secret(t))
	cfgFile := filepath.Join(dir, "hydra.yml")
	require.NoError(t, os.WriteFile(cfgFile, []byte(cfg), 0o600))
	mig, err := exec.Command(bin, "migrate", "sql", "up", "-e", "--yes", "--config", cfgFile).CombinedOutput()
	require.NoError(t, err, string(mig))
	logs := &syncBuffer{}
	cmd := exec.Command(bin, "serve", "all", "--dev", "--config", cfgFile)
	cmd.Stdout, cmd.Stderr = logs, logs
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("hydra:\n%s", tail(logs.String(), 40))
		}
	})
	testkit.Eventually(t, 30*time.Second, func() error {
		resp, err := http.Get(h.issuer + "/.well-known/openid-configuration")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("discovery: HTTP %d", resp.StatusCode)
		}
		return nil
	})
	return h
}

// client registers a client-credentials client whose JWT access tokens
// carry the audience sluice (and no groups: Hydra has none to give).
func (h *hydra) client(t *testing.T, id string) string {
	t.Helper()
	sec := secret(t) + secret(t)
	body, _ := json.Marshal(map[string]any{"client_id": id, "client_secret": sec, "grant_types": []string{"client_credentials"},
		"token_endpoint_auth_method": "client_secret_basic", "audience": []string{"sluice"}, "access_token_strategy": "jwt"})
	resp, err := http.Post(h.admin+"/admin/clients", "application/json", bytes.NewReader(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusCreated, resp.StatusCode)
	return sec
}

// TestRealProviderWithClaimMapping runs Sluice against ORY Hydra: a machine
// identity's client-credentials token (which carries no groups) gets its
// groups from the claim mapping in sluice.yaml, is fetched with `sluice
// token` and runs psql through Sluice. After the identity configuration
// changes, the provider's tokens are refused by the API and the worker.
func TestRealProviderWithClaimMapping(t *testing.T) {
	requireTool(t, "psql")
	h := startHydra(t)
	ciSecret, botSecret, strangerSecret := h.client(t, "ci-agent"), h.client(t, "deploy-bot"), h.client(t, "stranger")
	env := startPG(t)
	ctx := context.Background()
	devIssuer := env.Issuer()
	admin := []string{"SLUICE_TOKEN=" + env.Token("--sub", "root", "--groups", "sluice-admins")}

	both := filepath.Join(t.TempDir(), "identity.yaml")
	require.NoError(t, os.WriteFile(both, []byte(fmt.Sprintf(`oidc:
  - name: people
    issuer: %s
    audience: sluice
  - name: ci
    issuer: %s
    audience: sluice
    subject_groups:
      deploy-bot: [engineers]
    groups_expression: 'claims.client_id == "ci-agent" ? ["engineers"] : []'
`, devIssuer.URL, h.issuer)), 0o600))
	out, err := env.CLI(admin, "apply", "-f", both)
	require.NoError(t, err, out)

	token := func(id, sec string) string {
		out, err := env.CLI([]string{"SLUICE_ISSUER=" + h.issuer, "SLUICE_AUDIENCE=sluice", "SLUICE_CLIENT_ID=" + id, "SLUICE_CLIENT_SECRET=" + sec}, "token")
		require.NoError(t, err, out)
		return strings.TrimSpace(out)
	}
	ci, bot, stranger := token("ci-agent", ciSecret), token("deploy-bot", botSecret), token("stranger", strangerSecret)

	for name, tc := range map[string]struct {
		tok    string
		groups []any
	}{"expression": {ci, []any{"engineers"}}, "static table": {bot, []any{"engineers"}}, "no mapping": {stranger, []any{}}} {
		testkit.Eventually(t, 10*time.Second, func() error {
			status, body := env.HTTP(http.MethodGet, "/api/v1/whoami", tc.tok, nil)
			if status != http.StatusOK {
				return fmt.Errorf("%s: whoami %d %v", name, status, body)
			}
			if fmt.Sprint(body["groups"]) != fmt.Sprint(tc.groups) || body["machine"] != true || body["issuer"] != h.issuer {
				return fmt.Errorf("%s: %v", name, body)
			}
			return nil
		})
	}

	// psql through Sluice with the mapped machine identity: the policy
	// sees an engineer, so reads run and PII is masked.
	psql := psqlAt(t, fmt.Sprintf("host=127.0.0.1 port=%d dbname=demo user=ci sslmode=require password=%s connect_timeout=10", env.PGPort, ci))
	out, err = psql("SELECT name, email FROM customers ORDER BY id LIMIT 1")
	require.NoError(t, err, out)
	assert.Contains(t, out, "Ada Lovelace|****")
	// Without a mapping the same provider's machine has no group: nothing
	// is allowed.
	out, err = psqlAt(t, fmt.Sprintf("host=127.0.0.1 port=%d dbname=demo user=x sslmode=require password=%s connect_timeout=10", env.PGPort, stranger))("SELECT 1")
	require.Error(t, err, out)
	assert.Contains(t, out, "no-matching-rule")

	// An open session with the provider's token.
	conn, err := pgx.Connect(ctx, env.dsn(bot))
	require.NoError(t, err)
	defer conn.Close(ctx)
	var one int
	require.NoError(t, conn.QueryRow(ctx, "SELECT 1").Scan(&one))

	// An approver group's subjects mean someone only within their
	// provider: with two, a group must say which, and a subject of the
	// other provider is nobody there.
	approvers := filepath.Join(t.TempDir(), "approvers.yaml")
	applyApprovers := func(provider string) (string, error) {
		body := "approvers:\n  - name: approvers\n    groups: [approvers]\n    subjects: [deploy-bot]\n"
		if provider != "" {
			body += "    provider: " + provider + "\n"
		}
		require.NoError(t, os.WriteFile(approvers, []byte(body), 0o600))
		return env.CLI(admin, "apply", "-f", approvers)
	}
	out, err = applyApprovers("")
	require.Error(t, err, out)
	assert.Contains(t, out, "say which one its subjects come from")
	out, err = applyApprovers("people")
	require.NoError(t, err, out)
	held := holdOn(t, env, env.Token("--sub", "alice", "--groups", "engineers"), "UPDATE orders SET status = status")
	id := held.heldAs(t)
	out, err = env.CLI([]string{"SLUICE_TOKEN=" + bot}, "approve", id)
	require.Error(t, err, "deploy-bot of the ci provider is not the people provider's deploy-bot")
	assert.Contains(t, out, "not in an approver group")
	out, err = applyApprovers("ci")
	require.NoError(t, err, out)
	testkit.Eventually(t, 10*time.Second, func() error {
		out, err := env.CLI([]string{"SLUICE_TOKEN=" + bot}, "approve", id)
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	require.NoError(t, held.result(t, 20*time.Second))

	// The provider is removed from the configuration: its tokens stop
	// working at once, everywhere.
	people := filepath.Join(t.TempDir(), "people.yaml")
	require.NoError(t, os.WriteFile(people, []byte(fmt.Sprintf("oidc:\n  - name: people\n    issuer: %s\n    audience: sluice\n", devIssuer.URL)), 0o600))
	out, err = env.CLI(admin, "apply", "-f", people)
	require.Error(t, err, "an approver group still counts the provider's members")
	assert.Contains(t, out, "would no longer be an identity provider")
	out, err = applyApprovers("people")
	require.NoError(t, err, out)
	out, err = env.CLI(admin, "apply", "-f", people)
	require.NoError(t, err, out)
	testkit.Eventually(t, 15*time.Second, func() error {
		if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err == nil {
			return fmt.Errorf("the open session still runs statements")
		}
		return nil
	})
	status, body := env.HTTP(http.MethodGet, "/api/v1/whoami", ci, nil)
	assert.Equal(t, http.StatusUnauthorized, status)
	assert.Equal(t, "untrusted_issuer", body["error"])
	out, err = psql("SELECT 1")
	require.Error(t, err, out)
	assert.Contains(t, out, "untrusted_issuer")
}
