package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"sluice.dev/sluice/libs/testkit"
)

// pendingApproval waits for the one pending request of requester and
// returns its id.
func pendingApproval(t *testing.T, env *devEnv, approver []string, requester string) string {
	t.Helper()
	return pendingOf(t, func(args ...string) (string, error) { return env.CLI(approver, args...) }, requester)
}

// pendingOf is pendingApproval with the CLI of any deployment (cli runs a
// sluice command as an approver).
func pendingOf(t *testing.T, cli func(args ...string) (string, error), requester string) string {
	t.Helper()
	var id string
	testkit.Eventually(t, 20*time.Second, func() (err error) {
		id, err = pendingIn(cli, requester)
		return err
	})
	return id
}

// pendingIn is the id of a pending request of requester that cli lists.
func pendingIn(cli func(args ...string) (string, error), requester string) (string, error) {
	out, err := cli("approvals", "list", "-o", "json")
	if err != nil {
		return "", fmt.Errorf("%v: %s", err, out)
	}
	var res struct {
		Approvals []struct {
			ID        string `json:"id"`
			Requester string `json:"requester"`
		} `json:"approvals"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		return "", err
	}
	for _, a := range res.Approvals {
		if a.Requester == requester {
			return a.ID, nil
		}
	}
	return "", fmt.Errorf("no pending request of %s in %s", requester, out)
}

func TestApprovals(t *testing.T) {
	requireTool(t, "psql")
	env := startDev(t, devOptions{extra: []string{"--hold-timeout", "10s"}})
	pgenv := &pgEnv{devEnv: env}
	alice := env.Token("--sub", "alice", "--groups", "engineers")
	bob := []string{"SLUICE_TOKEN=" + env.Token("--sub", "bob", "--groups", "approvers")}
	aliceCLI := []string{"SLUICE_TOKEN=" + alice}

	runPsql := func(sql string) (chan string, *exec.Cmd) {
		out := make(chan string, 1)
		cmd := timedCommand(t, "psql", pgenv.dsn(alice), "-X", "-c", sql)
		go func() {
			b, _ := cmd.CombinedOutput()
			out <- string(b)
		}()
		return out, cmd
	}

	t.Run("held, approved by another principal, runs once", func(t *testing.T) {
		out, _ := runPsql("DELETE FROM customers")
		id := pendingApproval(t, env, bob, "alice")
		// Alice cannot approve her own request.
		o, err := env.CLI(aliceCLI, "approve", id)
		require.Error(t, err)
		assert.Contains(t, o, "nobody approves their own request")
		o, err = env.CLI(bob, "approve", id, "--reason", "cleanup agreed")
		require.NoError(t, err, o)
		approved := time.Now()
		select {
		case res := <-out:
			assert.Contains(t, res, "statement held for approval "+id)
			assert.Contains(t, res, "sluice approve "+id)
			assert.Contains(t, res, "DELETE 64")
			// The worker learns the outcome as soon as it is stored (it
			// once waited out a 5 s NATS timeout first).
			assert.Less(t, time.Since(approved), 3*time.Second, "the approved statement ran late")
		case <-time.After(20 * time.Second):
			t.Fatal("the held statement did not run")
		}
		// Once: the approval is consumed; running the same statement again is
		// held again under a new request.
		o, err = env.CLI(bob, "approvals", "list", "--state", "consumed", "-o", "json")
		require.NoError(t, err)
		assert.Contains(t, o, id)
		o, err = env.CLI(bob, "approve", id)
		require.Error(t, err)
		assert.Contains(t, o, "consumed")
	})

	t.Run("denied", func(t *testing.T) {
		out, _ := runPsql("UPDATE orders SET status = 'refunded'")
		id := pendingApproval(t, env, bob, "alice")
		o, err := env.CLI(bob, "deny", id, "--reason", "not during business hours")
		require.NoError(t, err, o)
		denied := time.Now()
		var res string
		select {
		case res = <-out:
			assert.Less(t, time.Since(denied), 3*time.Second, "the client learned of the denial late")
		case <-time.After(20 * time.Second):
			t.Fatal("the denied statement did not end")
		}
		assert.Contains(t, res, "ERROR:  sluice: statement denied by rule \"review-unbounded-writes\"")
		assert.Contains(t, res, "denied by bob: not during business hours")
	})

	t.Run("expired", func(t *testing.T) {
		out, _ := runPsql("DELETE FROM orders")
		res := <-out
		assert.Contains(t, res, "held for approval")
		assert.Contains(t, res, "expired")
	})

	t.Run("extended protocol binds the parameters", func(t *testing.T) {
		ctx := context.Background()
		conn, err := pgconn.Connect(ctx, pgenv.dsn(alice))
		require.NoError(t, err)
		defer conn.Close(ctx)
		done := make(chan error, 1)
		go func() {
			res := conn.ExecParams(ctx, "UPDATE orders SET status = $1 WHERE $2::int = 1 OR true", [][]byte{[]byte("approved-batch"), []byte("1")}, nil, nil, nil).Read()
			done <- res.Err
		}()
		id := pendingApproval(t, env, bob, "alice")
		o, err := env.CLI(bob, "approvals", "list", "-o", "json")
		require.NoError(t, err)
		assert.Contains(t, o, "UPDATE orders SET status = $1")
		_, err = env.CLI(bob, "approve", id)
		require.NoError(t, err)
		require.NoError(t, <-done)
	})

	t.Run("a scope approved with a held change: the session's next changes run, other sessions' do not", func(t *testing.T) {
		ctx := context.Background()
		bot := env.Token("--sub", "mig-bot", "--groups", "engineers", "--machine")
		connect := func() *pgconn.PgConn {
			conn, err := pgconn.Connect(ctx, pgenv.dsn(bot))
			require.NoError(t, err)
			t.Cleanup(func() { conn.Close(ctx) })
			return conn
		}
		conn := connect()
		done := make(chan error, 1)
		go func() { done <- conn.Exec(ctx, "CREATE TABLE scope_t (id int)").Close() }()
		id := pendingApproval(t, env, bob, "mig-bot")
		out, err := env.CLI(bob, "approve", id, "--grant", "ddl", "--for", "1m", "--reason", "migration rehearsal")
		require.NoError(t, err, out)
		assert.Contains(t, out, "approved "+id)
		assert.Contains(t, out, "granted ")
		require.NoError(t, <-done, "the held change runs once approved")

		// The scope: the same session's next schema changes run at once.
		for _, sql := range []string{"CREATE INDEX scope_t_id ON scope_t (id)", "ALTER TABLE scope_t ADD COLUMN v text", "DROP TABLE scope_t"} {
			sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := conn.Exec(sctx, sql).Close()
			cancel()
			require.NoError(t, err, sql)
		}
		// Another session of the same agent is still held.
		other := connect()
		octx, cancel := context.WithTimeout(ctx, 3*time.Second)
		err = other.Exec(octx, "CREATE TABLE scope_other (id int)").Close()
		cancel()
		require.Error(t, err, "another session holds no scope")

		// The grant is listed, with its scope and who granted it, and its id.
		out, err = env.CLI(bob, "grants", "list", "-o", "json")
		require.NoError(t, err, out)
		var listed struct {
			Grants []struct {
				ID, Requester, Role, Session, DecidedBy string
				RequestID                               string `json:"request_id"`
			} `json:"grants"`
		}
		require.NoError(t, json.Unmarshal([]byte(out), &listed), out)
		var grantID, session string
		for _, g := range listed.Grants {
			if g.RequestID == id {
				grantID, session = g.ID, g.Session
				assert.Equal(t, "mig-bot", g.Requester)
				assert.Equal(t, "ddl", g.Role)
				assert.NotEmpty(t, g.Session)
			}
		}
		require.NotEmpty(t, grantID, "the grant is listed: %s", out)
		out, err = env.CLI(bob, "grants", "list")
		require.NoError(t, err, out)
		assert.Contains(t, out, "session "+session)
		assert.Contains(t, out, "ends in ")

		// The audit record names the grant each change ran under.
		auditor := []string{"SLUICE_TOKEN=" + env.Token("--sub", "audrey", "--groups", "auditors")}
		testkit.Eventually(t, 10*time.Second, func() error {
			out, err := env.CLI(auditor, "replay", session, "-o", "json")
			if err != nil {
				return fmt.Errorf("%v: %s", err, out)
			}
			if strings.Count(out, grantID) < 3 {
				return fmt.Errorf("the grant is not on the decisions: %s", out)
			}
			return nil
		})

		// Revoked, the scope ends at once.
		out, err = env.CLI(aliceCLI, "revoke", grantID)
		require.Error(t, err, "only its holder or an approver revokes it: %s", out)
		out, err = env.CLI(bob, "revoke", grantID, "--reason", "done")
		require.NoError(t, err, out)
		testkit.Eventually(t, 10*time.Second, func() error {
			sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			if err := conn.Exec(sctx, "CREATE TABLE scope_after (id int)").Close(); err == nil {
				return fmt.Errorf("still granted")
			}
			return nil
		})
	})

	t.Run("a just-in-time grant changes the decision for its window only", func(t *testing.T) {
		bot := env.Token("--sub", "etl-bot", "--groups", "engineers", "--machine")
		botCLI := []string{"SLUICE_TOKEN=" + bot}
		insert := "INSERT INTO customers (name, email, ssn, card_number, phone) VALUES ('Jit Bot', 'jit@example.com', '123-45-6789', '4111111111111111', '+1-415-555-0100')"
		policy := func() string {
			out, err := env.CLI([]string{"SLUICE_TOKEN=" + env.Token("--sub", "root", "--groups", "sluice-admins")},
				"policy", "test", "--sub", "etl-bot", "--groups", "engineers", "--machine", "--target", "demo", "-o", "json", insert)
			require.NoError(t, err, out)
			return out
		}
		assert.Contains(t, policy(), `"review-machine-writes"`)
		out, err := env.CLI(botCLI, "request", "--target", "demo", "--role", "writer", "--for", "6s", "--reason", "nightly backfill")
		require.NoError(t, err, out)
		id := pendingApproval(t, env, bob, "etl-bot")
		_, err = env.CLI(bob, "approve", id)
		require.NoError(t, err)
		testkit.Eventually(t, 5*time.Second, func() error {
			if p := policy(); !strings.Contains(p, `"allow-granted-writes"`) {
				return fmt.Errorf("not yet granted: %s", p)
			}
			return nil
		})
		// Through the wire too: the bot's insert runs without a hold.
		res, err := timedCommand(t, "psql", pgenv.dsn(bot), "-X", "-c", insert).CombinedOutput()
		require.NoError(t, err, string(res))
		assert.Contains(t, string(res), "INSERT 0 1")
		// When the window closes, the review comes back.
		testkit.Eventually(t, 15*time.Second, func() error {
			if p := policy(); !strings.Contains(p, `"review-machine-writes"`) {
				return fmt.Errorf("grant still active: %s", p)
			}
			return nil
		})
	})
}
