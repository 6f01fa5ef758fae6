package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"sluice.dev/sluice/libs/testkit"
)

// TestKillSessions: an administrator ends live sessions of both protocols;
// the client learns who ended it and why, and the audit log records it.
// Nobody else may.
func TestKillSessions(t *testing.T) {
	requireTool(t, "ssh", "sshd")
	env := startDev(t, devOptions{})
	pgenv := withDemo(t, env)
	admin := []string{"SLUICE_TOKEN=" + env.Token("--sub", "root", "--groups", "sluice-admins")}
	auditor := []string{"SLUICE_TOKEN=" + env.Token("--sub", "audrey", "--groups", "auditors")}
	alice := env.Token("--sub", "alice", "--groups", "engineers")

	liveSession := func(t *testing.T, protocol string) string {
		t.Helper()
		var id string
		testkit.Eventually(t, 15*time.Second, func() error {
			o, err := env.CLI(auditor, "sessions", "list", "-o", "json")
			if err != nil {
				return fmt.Errorf("%v: %s", err, o)
			}
			var res struct {
				Sessions []struct {
					ID, Protocol, State string
				} `json:"sessions"`
			}
			if err := json.Unmarshal([]byte(o), &res); err != nil {
				return err
			}
			for _, s := range res.Sessions {
				if s.Protocol == protocol && !strings.HasPrefix(s.State, "ended") {
					id = s.ID
					return nil
				}
			}
			return fmt.Errorf("no live %s session yet: %s", protocol, o)
		})
		return id
	}
	ended := func(t *testing.T, id string) string {
		t.Helper()
		var r string
		testkit.Eventually(t, 10*time.Second, func() error {
			var err error
			if r, err = env.CLI(auditor, "replay", id); err != nil {
				return err
			}
			if !strings.Contains(r, "ended (ended by root: runaway agent)") {
				return fmt.Errorf("not ended by root yet: %s", r)
			}
			return nil
		})
		return r
	}

	t.Run("PostgreSQL", func(t *testing.T) {
		ctx := context.Background()
		conn, err := pgconn.Connect(ctx, pgenv.dsn(alice))
		require.NoError(t, err)
		defer conn.Close(ctx)
		id := liveSession(t, "postgres")
		o, err := env.CLI([]string{"SLUICE_TOKEN=" + alice}, "sessions", "kill", id)
		require.Error(t, err, "an engineer may not")
		assert.Contains(t, o, "sluice-admins")
		o, err = env.CLI(admin, "sessions", "kill", id, "--reason", "runaway agent")
		require.NoError(t, err, o)
		_, err = conn.Exec(ctx, "SELECT 1").ReadAll()
		require.Error(t, err)
		assert.Contains(t, err.Error(), "ended by root: runaway agent")
		ended(t, id)
		o, err = env.CLI(admin, "sessions", "kill", id)
		require.Error(t, err, "twice")
		assert.Contains(t, o, "ended")
	})

	t.Run("SSH", func(t *testing.T) {
		u := sshLogin(t, env, "--sub", "alice", "--groups", "engineers")
		done := make(chan [3]any, 1)
		start := time.Now()
		go func() {
			out, errOut, code := u.run(60*time.Second, "", "ssh", "demo-ssh", "echo started; sleep 50")
			done <- [3]any{out, errOut, code}
		}()
		id := liveSession(t, "ssh")
		o, err := env.CLI(admin, "sessions", "kill", id, "--reason", "runaway agent")
		require.NoError(t, err, o)
		r := <-done
		assert.Less(t, time.Since(start), 30*time.Second, "the command ended with its session")
		assert.NotEqual(t, 0, r[2])
		assert.Contains(t, r[1], "ended by root: runaway agent")
		ended(t, id)
	})
}
