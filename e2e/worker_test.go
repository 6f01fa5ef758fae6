package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"sluice.dev/sluice/libs/testkit"
)

// A PostgreSQL worker deployed on its own, as in production: its own
// process, connected over TCP as the restricted "worker" NATS user, beside
// the services of `sluice dev`. Everything a client relies on works through
// it: identity, masking, denials, approvals (promptly), recording.
func TestStandaloneWorker(t *testing.T) {
	requireTool(t, "psql")
	env := startDev(t, devOptions{extra: []string{"--hold-timeout", "20s"}})
	port := freePort(t)
	logs := &syncBuffer{}
	cmd := exec.Command(sluiceBin, "serve", "pgworker", "--nats", env.natsURL(), "--nats-user", "worker",
		"--pg-addr", fmt.Sprintf("127.0.0.1:%d", port), "--master-key-file", filepath.Join(env.Dir, "master.key"),
		"--tls-dir", filepath.Join(env.Dir, "tls"), "--log-format", "json")
	cmd.Env = append(os.Environ(), "SLUICE_NATS_PASSWORD="+env.natsPassword("worker"))
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
	bob := []string{"SLUICE_TOKEN=" + env.Token("--sub", "bob", "--groups", "approvers")}
	dsn := fmt.Sprintf("host=127.0.0.1 port=%d dbname=demo user=alice sslmode=require password=%s connect_timeout=10", port, alice)
	psql := func(sql string) (string, error) {
		out, err := timedCommand(t, "psql", dsn, "-X", "-At", "-c", sql).CombinedOutput()
		return string(out), err
	}
	testkit.Eventually(t, 30*time.Second, func() error {
		if out, err := psql("SELECT 1"); err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})

	out, err := psql("SELECT email FROM customers ORDER BY id LIMIT 1")
	require.NoError(t, err, out)
	assert.Equal(t, "****\n", out, "masked for an engineer")

	out, err = psql("SET ROLE postgres")
	require.Error(t, err)
	assert.Contains(t, out, `denied by rule "deny-role-changes"`)

	res := make(chan string, 1)
	go func() {
		out, _ := psql("DELETE FROM customers")
		res <- out
	}()
	id := pendingApproval(t, env, bob, "alice")
	o, err := env.CLI(bob, "approve", id)
	require.NoError(t, err, o)
	approved := time.Now()
	select {
	case out := <-res:
		assert.Contains(t, out, "DELETE 64")
		assert.Less(t, time.Since(approved), 3*time.Second, "the approved statement ran late")
	case <-time.After(30 * time.Second):
		t.Fatal("the held statement did not run")
	}

	// Recorded through the worker's own recorder: the approval is in the
	// audit log, and the chains verify.
	auditor := []string{"SLUICE_TOKEN=" + env.Token("--sub", "audrey", "--groups", "auditors")}
	testkit.Eventually(t, 20*time.Second, func() error {
		o, err := env.CLI(auditor, "audit", "tail", "--format", "json")
		if err != nil {
			return fmt.Errorf("%v: %s", err, o)
		}
		if !strings.Contains(o, id) {
			return fmt.Errorf("approval %s not in the audit log yet", id)
		}
		return nil
	})
	o, err = env.CLI(auditor, "audit", "verify")
	require.NoError(t, err, o)
	assert.Contains(t, o, "intact")
}
