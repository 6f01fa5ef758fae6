package e2e

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
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
// approved was released and a revoked grant kept allowing writes). One
// longer than an approver is shown is refused at once (an approver who saw
// its first 4 KiB approved a DROP hidden after them), and so is one whose
// bound parameters are (an approver once approved a statement without
// seeing its parameters at all); every other hold, release and grant goes
// on working.
func TestLargeHeldStatements(t *testing.T) {
	requireTool(t, "psql")
	env := withDemo(t, startDev(t, devOptions{extra: []string{"--hold-timeout", "60s"}}))
	alice := env.Token("--sub", "alice", "--groups", "engineers")
	carol := env.Token("--sub", "carol", "--groups", "engineers")
	bob := []string{"SLUICE_TOKEN=" + env.Token("--sub", "bob", "--groups", "approvers")}
	padding := strings.Repeat("x", 2<<20)

	// 2 MiB, in the text (simple protocol) and as a parameter (extended).
	big := holdOn(t, env, alice, "UPDATE orders SET status = 'shipped' /* "+padding+" */; DROP TABLE orders")
	bigParam := holdOn(t, env, alice, "UPDATE orders SET status = 'shipped' WHERE $1::text IS NOT NULL OR true", padding)

	t.Run("a statement longer than an approver is shown is refused at once", func(t *testing.T) {
		for _, h := range []*heldClient{big, bigParam} {
			err := h.result(t, 20*time.Second)
			require.Error(t, err)
			assert.Contains(t, err.Error(), "longer than an approver is shown")
		}
		for _, a := range approvalsJSON(t, env, bob, "pending") {
			assert.NotContains(t, a["command"], "DROP TABLE", "no request was opened for it")
		}
		out, err := env.CLI(bob, "approvals", "list")
		require.NoError(t, err)
		assert.Less(t, len(out), 4096, "the table stays short")
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

	t.Run("approvers read the bound parameters, decoded, and what would not show written out", func(t *testing.T) {
		bot := env.Token("--sub", "param-bot", "--groups", "engineers", "--machine")
		// Text parameters (pgconn): one tries to pass for a line of its own.
		text := holdOn(t, env, bot, "UPDATE orders SET status = $1 WHERE $2::text IS NOT NULL OR true", "x'\n-- $2 = 'harmless", "7")
		textID := text.heldAs(t)
		// Binary parameters (pgx encodes them by the types the server
		// describes), and a bidirectional override in the text.
		pgxDone := make(chan error, 1)
		go func() {
			conn, err := pgx.Connect(context.Background(), env.dsn(bot))
			if err != nil {
				pgxDone <- err
				return
			}
			defer conn.Close(context.Background())
			_, err = conn.Exec(context.Background(), "UPDATE orders SET amount = amount /* \u202e */ WHERE id <> $1 OR $2 OR $3 < now() OR true",
				int64(-42), true, time.Date(2026, 12, 3, 10, 4, 5, 0, time.UTC))
			pgxDone <- err
		}()
		var binID string
		testkit.Eventually(t, 20*time.Second, func() error {
			for _, a := range approvalsJSON(t, env, bob, "pending") {
				if cmd, _ := a["command"].(string); strings.Contains(cmd, "amount = amount") {
					binID = a["id"].(string)
					return nil
				}
			}
			return fmt.Errorf("the pgx statement is not held yet")
		})
		show := func(id string) string {
			out, err := env.CLI(bob, "approvals", "show", id)
			require.NoError(t, err, out)
			return out
		}
		out := show(textID)
		assert.Contains(t, out, "UPDATE orders SET status = $1 WHERE $2::text IS NOT NULL OR true\n  -- bound parameters:\n  -- $1 = E'x\\'\\n-- $2 = \\'harmless'\n  -- $2 = '7'\n", out)
		assert.Contains(t, out, "requester:  param-bot (machine identity)")
		out = show(binID)
		assert.Contains(t, out, "/* ⟨U+202E⟩ */", "the override is written out")
		assert.NotContains(t, out, "\u202e")
		assert.Contains(t, out, "-- $1 = -42\n  -- $2 = true\n  -- $3 = '2026-12-03 10:04:05Z'::timestamptz\n", out)
		for _, id := range []string{textID, binID} {
			out, err := env.CLI(bob, "deny", id, "--reason", "checked the parameters")
			require.NoError(t, err, out)
		}

		// A statement parsed again under the same name with other types:
		// an old portal of the name, ruled on again, does not bring its
		// statement's types back for the new one's parameters.
		conn, err := pgconn.Connect(context.Background(), env.dsn(bot))
		require.NoError(t, err)
		defer conn.Close(context.Background())
		fe := conn.Frontend()
		const upd = "UPDATE orders SET amount = amount WHERE id < $1"
		require.Empty(t, exchange(t, fe, &pgproto3.Query{String: "BEGIN"}).errs) // the portal outlives a Sync
		require.Empty(t, exchange(t, fe, &pgproto3.Parse{Name: "warm", Query: upd, ParameterOIDs: []uint32{701}}, &pgproto3.Sync{}).errs)
		require.Empty(t, exchange(t, fe, &pgproto3.Parse{Name: "s", Query: upd, ParameterOIDs: []uint32{701}},
			&pgproto3.Bind{DestinationPortal: "p", PreparedStatement: "s", ParameterFormatCodes: []int16{1}, Parameters: [][]byte{binary.BigEndian.AppendUint64(nil, math.Float64bits(1.5))}},
			&pgproto3.Sync{}).errs)
		require.Empty(t, exchange(t, fe, &pgproto3.Close{ObjectType: 'S', Name: "s"}, &pgproto3.Parse{Name: "s", Query: upd, ParameterOIDs: []uint32{20}}, &pgproto3.Sync{}).errs)
		time.Sleep(1200 * time.Millisecond) // past the cached decisions' life: the portal is ruled on again
		decided := make(chan answers, 1)
		go func() { decided <- exchange(t, fe, &pgproto3.Execute{Portal: "p"}, &pgproto3.Sync{}) }()
		old := pendingApproval(t, env.devEnv, bob, "param-bot")
		assert.Contains(t, show(old), "-- $1 = 1.5\n")
		out, err = env.CLI(bob, "deny", old, "--reason", "no")
		require.NoError(t, err, out)
		<-decided
		require.Empty(t, exchange(t, fe, &pgproto3.Query{String: "ROLLBACK"}).errs)
		go func() {
			decided <- exchange(t, fe, &pgproto3.Bind{DestinationPortal: "q", PreparedStatement: "s", ParameterFormatCodes: []int16{1},
				Parameters: [][]byte{binary.BigEndian.AppendUint64(nil, 1e18)}}, &pgproto3.Execute{Portal: "q"}, &pgproto3.Sync{})
		}()
		id := pendingApproval(t, env.devEnv, bob, "param-bot")
		assert.Contains(t, show(id), "-- $1 = 1000000000000000000\n")
		out, err = env.CLI(bob, "deny", id, "--reason", "no")
		require.NoError(t, err, out)
		<-decided

		// EXECUTE foo(...) is held by what foo is: its approver reads foo.
		prepDone := make(chan error, 1)
		prep, err := pgconn.Connect(context.Background(), env.dsn(alice))
		require.NoError(t, err)
		defer prep.Close(context.Background())
		go func() {
			_, err := prep.Exec(context.Background(), "PREPARE foo (text) AS UPDATE orders SET status = $1").ReadAll()
			prepDone <- err
		}()
		out, err = env.CLI(bob, "approve", pendingApproval(t, env.devEnv, bob, "alice"))
		require.NoError(t, err, out)
		require.NoError(t, <-prepDone)
		go func() { _, err := prep.Exec(context.Background(), "EXECUTE foo('lost')").ReadAll(); prepDone <- err }()
		id = pendingApproval(t, env.devEnv, bob, "alice")
		assert.Contains(t, show(id), "EXECUTE foo('lost')\n  -- 'foo' is prepared as:\n  --   PREPARE foo (text) AS UPDATE orders SET status = $1\n")
		out, err = env.CLI(bob, "deny", id, "--reason", "no")
		require.NoError(t, err, out)
		require.Error(t, <-prepDone)
		require.Error(t, text.result(t, 20*time.Second))
		select {
		case err := <-pgxDone:
			require.Error(t, err)
			assert.Contains(t, err.Error(), "checked the parameters")
		case <-time.After(20 * time.Second):
			t.Fatal("the pgx statement did not end")
		}
	})
}

// approvalState is the state of request id and its decision reason, as an
// auditor sees it.
func approvalState(t *testing.T, env *pgEnv, id string) (string, string) {
	t.Helper()
	out, err := env.CLI([]string{"SLUICE_TOKEN=" + env.Token("--sub", "audrey", "--groups", "auditors")}, "approvals", "list", "--state", "all", "-o", "json")
	require.NoError(t, err, tail(out, 5))
	var res struct {
		Approvals []struct {
			ID, State      string
			DecisionReason string `json:"decision_reason"`
			Waiting        bool   `json:"requester_waiting"`
		} `json:"approvals"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &res))
	for _, a := range res.Approvals {
		if a.ID == id {
			return a.State, a.DecisionReason
		}
	}
	return "", ""
}

// TestHeldRequestsEndWithTheirClient: a request whose client leaves (a
// clean close, a dropped socket, a killed psql, an expired session) or
// cancels is withdrawn at once, as an event, and never runs, even when an
// approver approves it afterwards (an UPDATE once ran after its client had
// gone). A client that sends the same statement again leaves one request.
func TestHeldRequestsEndWithTheirClient(t *testing.T) {
	requireTool(t, "psql")
	env := withDemo(t, startDev(t, devOptions{extra: []string{"--hold-timeout", "60s"}}))
	alice := env.Token("--sub", "alice", "--groups", "engineers")
	bob := []string{"SLUICE_TOKEN=" + env.Token("--sub", "bob", "--groups", "approvers")}
	ran := func(status string) string {
		out, err := timedCommand(t, "psql", env.directDSN(t), "-Atc", "SELECT count(*) FROM orders WHERE status = '"+status+"'").CombinedOutput()
		require.NoError(t, err, string(out))
		return strings.TrimSpace(string(out))
	}
	// gone checks that id is withdrawn with a reason, cannot be approved,
	// and that its statement never ran.
	gone := func(t *testing.T, id, status string, reasons ...string) {
		t.Helper()
		testkit.Eventually(t, 10*time.Second, func() error {
			st, why := approvalState(t, env, id)
			if st == "withdrawn" && slices.ContainsFunc(reasons, func(r string) bool { return strings.Contains(why, r) }) {
				return nil
			}
			return fmt.Errorf("request %s is %s (%s)", id, st, why)
		})
		out, err := env.CLI(bob, "approve", id)
		require.Error(t, err, out)
		assert.Contains(t, out, "withdrawn")
		assert.Contains(t, out, "nothing will run")
		time.Sleep(500 * time.Millisecond)
		assert.Equal(t, "0", ran(status), "the withdrawn statement ran")
	}

	t.Run("the client closes its connection", func(t *testing.T) {
		h := holdOn(t, env, alice, "UPDATE orders SET status = 'orphan-close'")
		id := h.heldAs(t)
		require.NoError(t, h.conn.Close(context.Background()))
		gone(t, id, "orphan-close", "the client disconnected")
	})

	t.Run("the socket drops (extended protocol)", func(t *testing.T) {
		h := holdOn(t, env, alice, "UPDATE orders SET status = $1", "orphan-drop")
		id := h.heldAs(t)
		require.NoError(t, h.conn.Conn().Close())
		// pgconn answers a broken connection with a CancelRequest of its
		// own (asyncClose), which may reach the worker before it reads the
		// end of the socket: either way the request is withdrawn.
		gone(t, id, "orphan-drop", "the client disconnected", "the client cancelled")
	})

	t.Run("a Terminate on a socket left open", func(t *testing.T) {
		h := holdOn(t, env, alice, "UPDATE orders SET status = 'orphan-terminate'")
		id := h.heldAs(t)
		_, err := h.conn.Conn().Write([]byte{'S', 0, 0, 0, 4, 'X', 0, 0, 0, 4})
		require.NoError(t, err)
		gone(t, id, "orphan-terminate", "the client disconnected")
	})

	t.Run("the socket drops behind 200 KiB of pipelined statements", func(t *testing.T) {
		conn, err := pgconn.Connect(context.Background(), env.dsn(alice))
		require.NoError(t, err)
		p := conn.StartPipeline(context.Background())
		p.SendQueryParams("UPDATE orders SET status = $1", [][]byte{[]byte("orphan-pipelined")}, nil, nil, nil)
		filler := "SELECT '" + strings.Repeat("f", 1000) + "'"
		for i := 0; i < 200; i++ {
			p.SendQueryParams(filler, nil, nil, nil, nil)
		}
		require.NoError(t, p.Sync())
		id := pendingApproval(t, env.devEnv, bob, "alice")
		require.NoError(t, conn.Conn().Close())
		gone(t, id, "orphan-pipelined", "the client disconnected", "the client cancelled")
	})

	t.Run("statements pipelined behind a held one run after it", func(t *testing.T) {
		conn, err := pgconn.Connect(context.Background(), env.dsn(alice))
		require.NoError(t, err)
		defer conn.Close(context.Background())
		p := conn.StartPipeline(context.Background())
		p.SendQueryParams("UPDATE orders SET status = $1", [][]byte{[]byte("pipelined-ran")}, nil, nil, nil)
		for i := 0; i < 100; i++ {
			p.SendQueryParams("SELECT $1::int + 0, '"+strings.Repeat("p", 1000)+"'", [][]byte{[]byte(fmt.Sprint(i))}, nil, nil, nil)
		}
		require.NoError(t, p.Sync())
		id := pendingApproval(t, env.devEnv, bob, "alice")
		out, err := env.CLI(bob, "approve", id)
		require.NoError(t, err, out)
		got := 0
		for i := 0; i <= 100; i++ {
			rr, err := p.GetResults()
			require.NoError(t, err)
			res := rr.(*pgconn.ResultReader).Read()
			require.NoError(t, res.Err)
			if i > 0 {
				assert.Equal(t, fmt.Sprint(i-1), string(res.Rows[0][0]))
				got++
			}
		}
		assert.Equal(t, 100, got)
		require.NoError(t, p.Close())
		assert.NotEqual(t, "0", ran("pipelined-ran"))
	})

	t.Run("psql is killed", func(t *testing.T) {
		cmd := timedCommand(t, "psql", env.dsn(alice), "-X", "-c", "UPDATE orders SET status = 'orphan-kill'")
		require.NoError(t, cmd.Start())
		id := pendingApproval(t, env.devEnv, bob, "alice")
		require.NoError(t, cmd.Process.Kill())
		_ = cmd.Wait()
		gone(t, id, "orphan-kill", "the client disconnected")
	})

	t.Run("the session's token expires", func(t *testing.T) {
		short := env.Token("--sub", "alice", "--groups", "engineers", "--ttl", "4s")
		h := holdOn(t, env, short, "UPDATE orders SET status = 'orphan-expired'")
		id := h.heldAs(t)
		err := h.result(t, 20*time.Second)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "token expired")
		gone(t, id, "orphan-expired", "the session ended while the statement was held: the access token expired")
	})

	t.Run("the client cancels; the session goes on", func(t *testing.T) {
		for _, params := range [][]string{nil, {"orphan-cancel"}} {
			sql := "UPDATE orders SET status = 'orphan-cancel'"
			if params != nil {
				sql = "UPDATE orders SET status = $1"
			}
			h := holdOn(t, env, alice, sql, params...)
			id := h.heldAs(t)
			require.NoError(t, h.conn.CancelRequest(context.Background()))
			err := h.result(t, 10*time.Second)
			var pgErr *pgconn.PgError
			require.ErrorAs(t, err, &pgErr)
			assert.Equal(t, "57014", pgErr.Code)
			assert.Equal(t, "canceling statement due to user request", pgErr.Message)
			res, err := h.conn.Exec(context.Background(), "SELECT 41 + 1").ReadAll()
			require.NoError(t, err)
			assert.Equal(t, "42", string(res[0].Rows[0][0]))
			gone(t, id, "orphan-cancel", "the client cancelled the statement")
		}
	})

	t.Run("a retry leaves one request, and it runs once", func(t *testing.T) {
		first := holdOn(t, env, alice, "UPDATE orders SET status = 'retried'")
		firstID := first.heldAs(t)
		second := holdOn(t, env, alice, "UPDATE orders SET status = 'retried'")
		secondID := second.heldAs(t)
		err := first.result(t, 10*time.Second)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "sent again")
		testkit.Eventually(t, 10*time.Second, func() error {
			var pending []string
			for _, a := range approvalsJSON(t, env, bob, "pending") {
				pending = append(pending, a["id"].(string))
			}
			if len(pending) != 1 || pending[0] != secondID {
				return fmt.Errorf("pending %v, want only %s (not %s)", pending, secondID, firstID)
			}
			return nil
		})
		for _, a := range approvalsJSON(t, env, bob, "pending") {
			assert.Equal(t, true, a["requester_waiting"])
		}
		out, err := env.CLI(bob, "approvals", "list")
		require.NoError(t, err)
		assert.Contains(t, out, "alice, waiting")
		out, err = env.CLI(bob, "approve", secondID)
		require.NoError(t, err, out)
		require.NoError(t, second.result(t, 20*time.Second))
		assert.Equal(t, ran("retried"), func() string {
			out, err := timedCommand(t, "psql", env.directDSN(t), "-Atc", "SELECT count(*) FROM orders").CombinedOutput()
			require.NoError(t, err)
			return strings.TrimSpace(string(out))
		}())
	})
}
