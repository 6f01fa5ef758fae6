package pgworker_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"sluice.dev/sluice/libs/testkit"
	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
	"sluice.dev/sluice/services/pgworker"
)

// one runs a statement and returns the first column of the first row.
func one(t *testing.T, c *pgconn.PgConn, sql string) string {
	t.Helper()
	res, err := c.Exec(context.Background(), sql).ReadAll()
	require.NoError(t, err, sql)
	require.NotEmpty(t, res)
	require.NotEmpty(t, res[len(res)-1].Rows, sql)
	return string(res[len(res)-1].Rows[0][0])
}

func waitPooled(t *testing.T, w *pgworker.Worker, n int) {
	t.Helper()
	testkit.Eventually(t, 10*time.Second, func() error {
		if got := w.Pooled(); got != n {
			return fmt.Errorf("%d pooled connections, want %d", got, n)
		}
		return nil
	})
}

// backendAlive reports whether a backend with pid is still connected.
func backendAlive(t *testing.T, pid string) bool {
	t.Helper()
	ctx := context.Background()
	c, err := pgconn.Connect(ctx, pg.SuperuserDSN("postgres"))
	require.NoError(t, err)
	defer c.Close(ctx)
	res, err := c.Exec(ctx, "SELECT count(*) FROM pg_stat_activity WHERE pid = "+pid).ReadAll()
	require.NoError(t, err)
	return string(res[0].Rows[0][0]) != "0"
}

// A session that ends cleanly leaves its target connection for the next
// session, which finds nothing of the first one's state in it.
func TestPooledConnectionIsReset(t *testing.T) {
	h := newHarness(t, &controlv1.Rule{Name: "allow-all", Action: "allow", When: "true"})
	w := h.start(pgworker.Config{})
	tok := h.token(time.Hour)

	a, err := h.connect(w.Addr(), tok)
	require.NoError(t, err)
	pidA := one(t, a, "SELECT pg_backend_pid()")
	for _, q := range []string{
		"SET statement_timeout = 1234", "SET application_name = 'left-behind'", "PREPARE leftover AS SELECT 1",
		"CREATE TEMP TABLE scratch (x int)", "LISTEN leftover_channel", "SELECT pg_advisory_lock(42)",
		"SET SESSION AUTHORIZATION DEFAULT", "DECLARE cur CURSOR WITH HOLD FOR SELECT 1",
	} {
		_, err := a.Exec(context.Background(), q).ReadAll()
		require.NoError(t, err, q)
	}
	require.NoError(t, a.Close(context.Background()))
	waitPooled(t, w, 1)

	b, err := h.connect(w.Addr(), tok)
	require.NoError(t, err)
	defer b.Close(context.Background())
	assert.Equal(t, pidA, one(t, b, "SELECT pg_backend_pid()"), "the pooled connection is reused")
	assert.Equal(t, 0, w.Pooled())
	assert.Equal(t, "0", one(t, b, "SHOW statement_timeout"))
	assert.Equal(t, "sluice", one(t, b, "SHOW application_name"))
	assert.Equal(t, "sluice", b.ParameterStatus("application_name"), "the client sees the connection's settings as reset")
	assert.Equal(t, "gw", one(t, b, "SELECT current_user"))
	assert.Equal(t, "0", one(t, b, "SELECT count(*) FROM pg_prepared_statements"))
	assert.Equal(t, "0", one(t, b, "SELECT count(*) FROM pg_cursors"))
	assert.Equal(t, "0", one(t, b, "SELECT count(*) FROM pg_listening_channels()"))
	assert.Equal(t, "0", one(t, b, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"))
	_, err = b.Exec(context.Background(), "SELECT * FROM scratch").ReadAll()
	assert.Equal(t, "42P01", pgCode(err), "the temporary table is gone")
}

// A connection is never pooled when its session ends inside a transaction,
// mid-statement, or without a Terminate: it is closed.
func TestDirtyConnectionIsNotPooled(t *testing.T) {
	h := newHarness(t, &controlv1.Rule{Name: "allow-all", Action: "allow", When: "true"})
	w := h.start(pgworker.Config{})
	tok := h.token(time.Hour)
	ctx := context.Background()

	inTx, err := h.connect(w.Addr(), tok)
	require.NoError(t, err)
	pidTx := one(t, inTx, "SELECT pg_backend_pid()")
	_, err = inTx.Exec(ctx, "BEGIN").ReadAll()
	require.NoError(t, err)
	require.NoError(t, inTx.Close(ctx))

	dropped, err := h.connect(w.Addr(), tok)
	require.NoError(t, err)
	pidDropped := one(t, dropped, "SELECT pg_backend_pid()")
	require.NoError(t, dropped.Conn().Close()) // no Terminate

	busy, err := h.connect(w.Addr(), tok)
	require.NoError(t, err)
	pidBusy := one(t, busy, "SELECT pg_backend_pid()")
	busy.Exec(ctx, "SELECT pg_sleep(2)") // sent, not read: the backend ends when the sleep does
	require.NoError(t, busy.Close(ctx))

	// Extended-protocol messages without a Sync: an error that makes the
	// backend discard input until a Sync, and an INSERT in the implicit
	// transaction a Sync would commit. Neither connection is reused, and
	// the INSERT is rolled back with it.
	badBind, err := h.connect(w.Addr(), tok)
	require.NoError(t, err)
	pidBadBind := one(t, badBind, "SELECT pg_backend_pid()")
	fe := badBind.Frontend()
	fe.Send(&pgproto3.Bind{PreparedStatement: "no_such_statement"})
	fe.Send(&pgproto3.Flush{})
	require.NoError(t, fe.Flush())
	msg, err := fe.Receive()
	require.NoError(t, err)
	require.IsType(t, &pgproto3.ErrorResponse{}, msg)
	require.NoError(t, badBind.Close(ctx))

	unsynced, err := h.connect(w.Addr(), tok)
	require.NoError(t, err)
	_, err = unsynced.Exec(ctx, "CREATE TABLE IF NOT EXISTS pool_unsynced (x int)").ReadAll()
	require.NoError(t, err)
	pidUnsynced := one(t, unsynced, "SELECT pg_backend_pid()")
	fe = unsynced.Frontend()
	fe.Send(&pgproto3.Parse{Query: "INSERT INTO pool_unsynced VALUES (1)"})
	fe.Send(&pgproto3.Bind{})
	fe.Send(&pgproto3.Execute{})
	fe.Send(&pgproto3.Flush{})
	require.NoError(t, fe.Flush())
	for {
		msg, err := fe.Receive()
		require.NoError(t, err)
		if _, ok := msg.(*pgproto3.CommandComplete); ok {
			break
		}
	}
	require.NoError(t, unsynced.Close(ctx))

	for _, pid := range []string{pidTx, pidDropped, pidBusy, pidBadBind, pidUnsynced} {
		testkit.Eventually(t, 10*time.Second, func() error {
			if backendAlive(t, pid) {
				return fmt.Errorf("backend %s still connected", pid)
			}
			return nil
		})
	}
	assert.Equal(t, 0, w.Pooled())
	check, err := h.connect(w.Addr(), tok)
	require.NoError(t, err)
	assert.Equal(t, "0", one(t, check, "SELECT count(*) FROM pool_unsynced"), "the unsynced INSERT was rolled back")
	require.NoError(t, check.Close(ctx))

	// Pooling can be turned off.
	off := h.start(pgworker.Config{UpstreamPool: -1})
	c, err := h.connect(off.Addr(), tok)
	require.NoError(t, err)
	pid := one(t, c, "SELECT pg_backend_pid()")
	require.NoError(t, c.Close(ctx))
	testkit.Eventually(t, 10*time.Second, func() error {
		if backendAlive(t, pid) {
			return fmt.Errorf("backend %s still connected", pid)
		}
		return nil
	})
	assert.Equal(t, 0, off.Pooled())
}
