package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"sluice.dev/sluice/libs/testkit"
)

// heldClient is a client connection with a statement in flight.
type heldClient struct {
	conn    *pgconn.PgConn
	mu      sync.Mutex
	notices []string
	done    chan error
}

// holdOn connects as token and sends sql (over the extended protocol when
// params are given) without waiting for its result.
func holdOn(t *testing.T, env *pgEnv, token, sql string, params ...string) *heldClient {
	t.Helper()
	h := &heldClient{done: make(chan error, 1)}
	cfg, err := pgconn.ParseConfig(env.dsn(token))
	require.NoError(t, err)
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
		h.mu.Lock()
		h.notices = append(h.notices, n.Message)
		h.mu.Unlock()
	}
	h.conn, err = pgconn.ConnectConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { h.conn.Close(context.Background()) })
	go func() {
		if len(params) == 0 {
			_, err := h.conn.Exec(context.Background(), sql).ReadAll()
			h.done <- err
			return
		}
		vals := make([][]byte, len(params))
		for i, p := range params {
			vals[i] = []byte(p)
		}
		h.done <- h.conn.ExecParams(context.Background(), sql, vals, nil, nil, nil).Read().Err
	}()
	return h
}

// heldAs waits for the hold notice and returns the approval id.
func (h *heldClient) heldAs(t *testing.T) string {
	t.Helper()
	var id string
	testkit.Eventually(t, 20*time.Second, func() error {
		h.mu.Lock()
		defer h.mu.Unlock()
		for _, n := range h.notices {
			if rest, ok := strings.CutPrefix(n, "sluice: statement held for approval "); ok {
				id = strings.Fields(rest)[0]
				return nil
			}
		}
		select {
		case err := <-h.done:
			h.done <- err
			return fmt.Errorf("the statement ended without a hold: %v", err)
		default:
		}
		return fmt.Errorf("not held yet")
	})
	return id
}

// result waits for the statement's outcome.
func (h *heldClient) result(t *testing.T, within time.Duration) error {
	t.Helper()
	select {
	case err := <-h.done:
		return err
	case <-time.After(within):
		t.Fatalf("the statement did not end within %s", within)
		return nil
	}
}

// approvalsJSON lists approval requests as cli (an approver) sees them.
func approvalsJSON(t *testing.T, env *pgEnv, cli []string, state string) []map[string]any {
	t.Helper()
	out, err := env.CLI(cli, "approvals", "list", "--state", state, "-o", "json")
	require.NoError(t, err, tail(out, 5))
	var res struct {
		Approvals []map[string]any `json:"approvals"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &res))
	return res.Approvals
}

// TestLargeHeldStatements: a client may send a held statement of any size
// (2 MiB once stalled the workers' approvals view for good: nothing
// approved was released and a revoked grant kept allowing writes). The
// request keeps an excerpt, binds to the whole statement by hash, and
// every other hold, release and grant goes on working.
func TestLargeHeldStatements(t *testing.T) {
	requireTool(t, "psql")
	env := &pgEnv{devEnv: startDev(t, devOptions{extra: []string{"--hold-timeout", "60s"}})}
	alice := env.Token("--sub", "alice", "--groups", "engineers")
	carol := env.Token("--sub", "carol", "--groups", "engineers")
	bob := []string{"SLUICE_TOKEN=" + env.Token("--sub", "bob", "--groups", "approvers")}
	padding := strings.Repeat("x", 2<<20)

	// 2 MiB, in the text (simple protocol) and as a parameter (extended).
	big := holdOn(t, env, alice, "UPDATE orders SET status = 'shipped' /* "+padding+" */")
	bigID := big.heldAs(t)
	bigParam := holdOn(t, env, alice, "UPDATE orders SET status = 'shipped' WHERE $1::text IS NOT NULL OR true", padding)
	bigParamID := bigParam.heldAs(t)

	t.Run("requests keep an excerpt and the size", func(t *testing.T) {
		for _, a := range approvalsJSON(t, env, bob, "pending") {
			if a["id"] != bigID {
				continue
			}
			assert.LessOrEqual(t, len(a["command"].(string)), 4096)
			assert.True(t, strings.HasPrefix(a["command"].(string), "UPDATE orders SET status = 'shipped' /* xxx"))
			assert.Equal(t, float64(len("UPDATE orders SET status = 'shipped' /*  */")+len(padding)), a["command_size"])
			out, err := env.CLI(bob, "approvals", "list")
			require.NoError(t, err)
			assert.Less(t, len(out), 4096, "the table stays short")
			assert.True(t, strings.Contains(out, "MiB in all"), "the table gives the size")
			return
		}
		t.Fatalf("%s is not listed", bigID)
	})

	t.Run("other holds are released promptly", func(t *testing.T) {
		small := holdOn(t, env, carol, "UPDATE orders SET status = 'pending'")
		id := small.heldAs(t)
		out, err := env.CLI(bob, "approve", id)
		require.NoError(t, err, out)
		approved := time.Now()
		require.NoError(t, small.result(t, 20*time.Second))
		assert.Less(t, time.Since(approved), 3*time.Second, "the approved statement ran late")
	})

	t.Run("a revoked grant stops allowing writes", func(t *testing.T) {
		bot := env.Token("--sub", "etl-bot", "--groups", "engineers", "--machine")
		insert := "INSERT INTO orders (customer_id, amount, status) VALUES (1, 1, 'by-bot')"
		out, err := env.CLI([]string{"SLUICE_TOKEN=" + bot}, "request", "--target", "demo", "--role", "writer", "--for", "10m", "--reason", "backfill")
		require.NoError(t, err, out)
		grant := pendingApproval(t, env.devEnv, bob, "etl-bot")
		out, err = env.CLI(bob, "approve", grant)
		require.NoError(t, err, out)
		testkit.Eventually(t, 10*time.Second, func() error {
			out, err := env.psql(t, bot, "", "-c", insert)
			if err != nil || !strings.Contains(out, "INSERT 0 1") {
				return fmt.Errorf("not granted yet: %s", tail(out, 3))
			}
			return nil
		})
		out, err = env.CLI(bob, "revoke", grant, "--reason", "done")
		require.NoError(t, err, out)
		revoked := time.Now()
		h := holdOn(t, env, bot, insert)
		h.heldAs(t)
		assert.Less(t, time.Since(revoked), 5*time.Second)
	})

	t.Run("the large statements run as held, once approved", func(t *testing.T) {
		for _, c := range []struct {
			h  *heldClient
			id string
		}{{big, bigID}, {bigParam, bigParamID}} {
			out, err := env.CLI(bob, "approve", c.id)
			require.NoError(t, err, tail(out, 3))
			assert.Less(t, len(out), 400, "approve prints one short line")
			require.NoError(t, c.h.result(t, 20*time.Second))
		}
	})
}
