package e2e

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestStatementNamesStandForWhatTheServerHolds: the worker rules on an
// Execute by what it knows a statement or portal name to stand for. A
// second Parse or PREPARE under a taken name fails on the server and
// leaves the first statement there; a DEALLOCATE in an aborted transaction
// deallocates nothing; a portal may be a SQL cursor; a statement prepared
// with Parse may be run with SQL EXECUTE. None of these may make the worker
// believe a name stands for something else than what runs: held
// statements stay held, masked columns stay masked.
func TestStatementNamesStandForWhatTheServerHolds(t *testing.T) {
	env := startPG(t) // held statements give up after 2 s: nobody approves
	alice := env.Token("--sub", "alice", "--groups", "engineers")
	ctx := context.Background()
	orders := func() string {
		out, err := timedCommand(t, "psql", env.directDSN(t), "-Atc", "SELECT count(*) FROM orders").CombinedOutput()
		require.NoError(t, err, string(out))
		return strings.TrimSpace(string(out))
	}
	before := orders()
	connect := func(t *testing.T) *pgconn.PgConn {
		conn, err := pgconn.Connect(ctx, env.dsn(alice))
		require.NoError(t, err)
		t.Cleanup(func() { conn.Close(ctx) })
		return conn
	}
	code := func(err error) string {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) {
			return pgErr.Code
		}
		return ""
	}
	held := func(t *testing.T, err error) {
		t.Helper()
		require.Error(t, err)
		assert.Contains(t, err.Error(), `denied by rule "review-unbounded-writes": approval request`)
		assert.Contains(t, err.Error(), "expired")
	}

	t.Run("a second Parse under a taken name", func(t *testing.T) {
		for _, second := range []string{"SELECT 1", "SELECT '\xff'", "DROP TABLE orders"} {
			conn := connect(t)
			_, err := conn.Prepare(ctx, "s", "DELETE FROM orders", nil)
			require.NoError(t, err, "preparing runs nothing; executing is held")
			_, err = conn.Prepare(ctx, "s", second, nil)
			require.Error(t, err, second)
			res := conn.ExecPrepared(ctx, "s", nil, nil, nil).Read()
			held(t, res.Err)
			assert.Equal(t, before, orders(), "after %q", second)
		}
	})

	t.Run("a second Parse in the same pipeline", func(t *testing.T) {
		conn := connect(t)
		p := conn.StartPipeline(ctx)
		p.SendPrepare("s", "DELETE FROM orders", nil)
		p.SendPrepare("s", "SELECT 1", nil)
		p.SendQueryPrepared("s", nil, nil, nil)
		require.NoError(t, p.Sync())
		for {
			r, err := p.GetResults()
			if err != nil || r == nil {
				break
			}
			if rr, ok := r.(*pgconn.ResultReader); ok {
				rr.Read()
			}
			if _, ok := r.(*pgconn.PipelineSync); ok {
				break
			}
		}
		_ = p.Close()
		assert.Equal(t, before, orders())
	})

	t.Run("a Parse'd statement run with SQL EXECUTE", func(t *testing.T) {
		conn := connect(t)
		_, err := conn.Prepare(ctx, "d", "DELETE FROM orders", nil)
		require.NoError(t, err)
		_, err = conn.Exec(ctx, "EXECUTE d").ReadAll()
		held(t, err)
		assert.Equal(t, before, orders())
	})

	t.Run("a second PREPARE under a taken name", func(t *testing.T) {
		conn := connect(t)
		_, err := conn.Exec(ctx, "PREPARE q AS SELECT ssn FROM customers WHERE id = 1").ReadAll()
		require.NoError(t, err)
		_, err = conn.Exec(ctx, "PREPARE q AS SELECT name FROM customers WHERE id = 1").ReadAll()
		assert.Equal(t, "42P05", code(err))
		res, err := conn.Exec(ctx, "EXECUTE q").ReadAll()
		require.NoError(t, err)
		assert.NotContains(t, string(res[0].Rows[0][0]), firstSSN)

		// A DEALLOCATE in an aborted transaction deallocates nothing on
		// the server; Sluice forgets the name anyway, and refuses to run
		// what it no longer knows rather than guess.
		for _, sql := range []string{"BEGIN", "SELECT 1/0", "DEALLOCATE q", "ROLLBACK", "PREPARE q AS SELECT name FROM customers WHERE id = 1"} {
			_, _ = conn.Exec(ctx, sql).ReadAll()
		}
		res, err = conn.Exec(ctx, "EXECUTE q").ReadAll()
		assert.Equal(t, "26000", code(err))
		for _, r := range res {
			for _, row := range r.Rows {
				assert.NotContains(t, string(row[0]), firstSSN)
			}
		}

		// A PREPARE among other statements is refused: which of them ran
		// is not told apart. Through Parse, too.
		_, err = conn.Exec(ctx, "SELECT 1; PREPARE r AS SELECT 1").ReadAll()
		assert.Equal(t, "0A000", code(err))
		_, err = conn.Prepare(ctx, "", "PREPARE r AS SELECT 1", nil)
		assert.Equal(t, "0A000", code(err))

		// Alone and successful, DEALLOCATE frees the name.
		_, err = conn.Exec(ctx, "DEALLOCATE q").ReadAll()
		require.NoError(t, err)
		_, err = conn.Exec(ctx, "PREPARE q AS SELECT name FROM customers WHERE id = 1").ReadAll()
		require.NoError(t, err)
		res, err = conn.Exec(ctx, "EXECUTE q").ReadAll()
		require.NoError(t, err)
		assert.Equal(t, "Ada Lovelace", string(res[0].Rows[0][0]))
	})

	t.Run("an Execute of a cursor's portal", func(t *testing.T) {
		conn := connect(t)
		_, err := conn.Exec(ctx, "BEGIN; DECLARE c CURSOR FOR SELECT ssn FROM customers WHERE id = 1").ReadAll()
		require.NoError(t, err)
		a := exchange(t, conn.Frontend(), &pgproto3.Execute{Portal: "c"}, &pgproto3.Sync{})
		assert.Equal(t, []string{"34000"}, a.codes())
		assert.NotContains(t, fmt.Sprint(a.rows), firstSSN)
		// FETCH reads it, masked.
		res, err := conn.Exec(ctx, "ROLLBACK; BEGIN; DECLARE c CURSOR FOR SELECT ssn FROM customers WHERE id = 1; FETCH 1 FROM c").ReadAll()
		require.NoError(t, err)
		assert.NotContains(t, string(res[len(res)-1].Rows[0][0]), firstSSN)
	})

	t.Run("DISCARD that keeps the statements", func(t *testing.T) {
		conn := connect(t)
		_, err := conn.Prepare(ctx, "s", "DELETE FROM orders", nil)
		require.NoError(t, err)
		_, err = conn.Exec(ctx, "DISCARD PLANS").ReadAll()
		require.NoError(t, err)
		held(t, conn.ExecPrepared(ctx, "s", nil, nil, nil).Read().Err)
		assert.Equal(t, before, orders())
	})

	t.Run("a portal after its transaction ended, a cursor of its name", func(t *testing.T) {
		conn := connect(t)
		_, err := conn.Prepare(ctx, "one", "SELECT '1'::text", nil)
		require.NoError(t, err)
		fe := conn.Frontend()
		require.Empty(t, exchange(t, fe, &pgproto3.Bind{DestinationPortal: "c", PreparedStatement: "one"}, &pgproto3.Sync{}).errs)
		require.Empty(t, exchange(t, fe, &pgproto3.Query{String: "DECLARE c CURSOR WITH HOLD FOR SELECT ssn FROM customers WHERE id = 1"}).errs)
		a := exchange(t, fe, &pgproto3.Execute{Portal: "c"}, &pgproto3.Sync{})
		assert.Equal(t, []string{"34000"}, a.codes())
		assert.NotContains(t, fmt.Sprint(a.rows), firstSSN)
	})

	t.Run("a Parse'd EXECUTE follows its statement", func(t *testing.T) {
		conn := connect(t)
		_, err := conn.Exec(ctx, "PREPARE foo AS SELECT name FROM customers WHERE id = 1").ReadAll()
		require.NoError(t, err)
		_, err = conn.Prepare(ctx, "x", "EXECUTE foo", nil)
		require.NoError(t, err)
		for _, sql := range []string{"DEALLOCATE foo", "PREPARE foo AS SELECT ssn FROM customers WHERE id = 1"} {
			_, err = conn.Exec(ctx, sql).ReadAll()
			require.NoError(t, err)
		}
		res := conn.ExecPrepared(ctx, "x", nil, nil, nil).Read()
		require.NoError(t, res.Err)
		assert.NotContains(t, string(res.Rows[0][0]), firstSSN)
	})

	t.Run("a Query inside a pipeline, a Sync inside COPY", func(t *testing.T) {
		conn := connect(t)
		fe := conn.Frontend()
		fe.Send(&pgproto3.Parse{Query: "SELECT 1"})
		fe.Send(&pgproto3.Query{String: "SELECT 2"})
		require.NoError(t, fe.Flush())
		fatal := func() string {
			for {
				msg, err := fe.Receive()
				if err != nil {
					return ""
				}
				if e, ok := msg.(*pgproto3.ErrorResponse); ok && e.Severity == "FATAL" {
					return e.Code
				}
			}
		}
		assert.Equal(t, "08P01", fatal())

		conn = connect(t)
		fe = conn.Frontend()
		fe.Send(&pgproto3.Query{String: "COPY orders (customer_id, amount, status) FROM STDIN"})
		fe.Send(&pgproto3.Sync{})
		require.NoError(t, fe.Flush())
		assert.Equal(t, "08P01", fatal())

		// A COPY that fails before it starts leaves the session usable.
		conn = connect(t)
		_, err := conn.Exec(ctx, "COPY no_such_table FROM STDIN").ReadAll()
		require.Error(t, err)
		res, err := conn.Exec(ctx, "SELECT 'after'").ReadAll()
		require.NoError(t, err)
		assert.Equal(t, "after", string(res[0].Rows[0][0]))
	})

	t.Run("drivers' prepared statements work as before", func(t *testing.T) {
		conn := connect(t)
		for i := 0; i < 3; i++ {
			_, err := conn.Prepare(ctx, "n", "SELECT name FROM customers WHERE id = $1", nil)
			require.NoError(t, err)
			res := conn.ExecPrepared(ctx, "n", [][]byte{[]byte("1")}, nil, nil).Read()
			require.NoError(t, res.Err)
			assert.Equal(t, "Ada Lovelace", string(res.Rows[0][0]))
			require.NoError(t, conn.Deallocate(ctx, "n"))
		}
		// A Parse that failed leaves the name free (a retry after fixing
		// the schema).
		_, err := conn.Prepare(ctx, "late", "SELECT * FROM not_yet", nil)
		require.Error(t, err)
		_, err = conn.Prepare(ctx, "late", "SELECT 1", nil)
		require.NoError(t, err)
	})
}
