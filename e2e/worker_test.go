package e2e

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/testkit"
)

// A PostgreSQL worker deployed on its own, as in production: its own
// process, connected over TCP as the restricted pgworker NATS identity, beside
// the services of `sluice dev`. Everything a client relies on works through
// it: identity, masking, denials, approvals (promptly), recording.
func TestStandaloneWorker(t *testing.T) {
	requireTool(t, "psql")
	env := startDev(t, devOptions{extra: []string{"--hold-timeout", "20s"}})
	port := freePort(t)
	logs := &syncBuffer{}
	cmd := exec.Command(sluiceBin, "serve", "pgworker", "--nats", env.natsURL(), "--nats-nkey-file", env.natsKey(bus.CompPGWorker),
		"--pg-addr", fmt.Sprintf("127.0.0.1:%d", port), "--master-key-file", filepath.Join(env.Dir, "master.key"),
		"--tls-cert", filepath.Join(env.Dir, "tls", "cert.pem"), "--tls-key", filepath.Join(env.Dir, "tls", "key.pem"), "--log-format", "json",
		"--admin-addr", "127.0.0.1:0")
	cmd.Stderr = logs
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("worker logs:\n%s", tail(logs.String(), 60))
		}
	})

	alice := env.Token("--sub", "alice", "--groups", "engineers")
	dsn := fmt.Sprintf("host=127.0.0.1 port=%d dbname=demo user=alice sslmode=require password=%s connect_timeout=10", port, alice)
	as := func(sub, group string) func(args ...string) (string, error) {
		tok := []string{"SLUICE_TOKEN=" + env.Token("--sub", sub, "--groups", group)}
		return func(args ...string) (string, error) { return env.CLI(tok, args...) }
	}
	g := gatewayUser{psql: psqlAt(t, dsn), approver: as("bob", "approvers"), auditor: as("audrey", "auditors")}
	testkit.Eventually(t, 30*time.Second, func() error {
		if out, err := g.psql("SELECT 1"); err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	g.checkControls(t, "SELECT email FROM customers ORDER BY id LIMIT 1", "DELETE 64")
}

// psqlAt runs one statement with psql on dsn (unaligned, tuples only).
func psqlAt(t *testing.T, dsn string) func(sql string) (string, error) {
	return func(sql string) (string, error) {
		out, err := timedCommand(t, "psql", dsn, "-X", "-At", "-c", sql).CombinedOutput()
		return string(out), err
	}
}

// gatewayUser is alice (an engineer) going through a PostgreSQL worker,
// with bob approving and audrey auditing through the CLI.
type gatewayUser struct {
	psql     func(sql string) (string, error)
	approver func(args ...string) (string, error)
	auditor  func(args ...string) (string, error)
}

// checkControls walks the controls a client relies on: a masked read
// (emailSQL selects one email), a denied role change, a held DELETE of every
// customer (answered with tag) approved and run within 3 s of the decision,
// and the approval in the audit log with intact chains.
func (g gatewayUser) checkControls(t *testing.T, emailSQL, tag string) {
	t.Helper()
	out, err := g.psql(emailSQL)
	require.NoError(t, err, out)
	assert.Equal(t, "****\n", out, "masked for an engineer")

	out, err = g.psql("SET ROLE postgres")
	require.Error(t, err)
	assert.Contains(t, out, `denied by rule "deny-role-changes"`)

	res := make(chan string, 1)
	go func() {
		out, _ := g.psql("DELETE FROM customers")
		res <- out
	}()
	// A statement that ended before it was held says why.
	var id string
	testkit.Eventually(t, 20*time.Second, func() error {
		select {
		case out := <-res:
			t.Fatalf("the DELETE ended before it was held: %s", out)
		default:
		}
		var err error
		id, err = pendingIn(g.approver, "alice")
		return err
	})
	out, err = g.approver("approve", id)
	require.NoError(t, err, out)
	approved := time.Now()
	select {
	case out := <-res:
		assert.Contains(t, out, tag)
		// The worker learns the outcome as soon as it is stored.
		assert.Less(t, time.Since(approved), 3*time.Second, "the approved statement ran late")
	case <-time.After(40 * time.Second):
		t.Fatal("the held statement did not run")
	}

	g.inAuditLog(t, id)
}

// inAuditLog waits until text appears in the exported audit log, then
// checks that every chain is intact.
func (g gatewayUser) inAuditLog(t *testing.T, text string) {
	t.Helper()
	testkit.Eventually(t, 30*time.Second, func() error {
		out, err := g.auditor("audit", "tail", "--format", "json")
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		if !strings.Contains(out, text) {
			return fmt.Errorf("%q not in the audit log yet", text)
		}
		return nil
	})
	out, err := g.auditor("audit", "verify")
	require.NoError(t, err, out)
	assert.Contains(t, out, "intact")
}
