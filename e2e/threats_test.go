package e2e

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestThreatsOverTheWire sends the SQL classes of THREATS.md through Sluice
// over the simple protocol (psql) and the extended protocol (pgx, with the
// SQL in a Parse message), and checks each is refused with the expected
// rule and never reaches the database.
func TestThreatsOverTheWire(t *testing.T) {
	env := startPG(t)
	alice := env.Token("--sub", "alice", "--groups", "engineers")
	cases := []struct{ sql, rule string }{
		{"DEL/**/ETE FROM customers", "builtin:unparseable-sql"},
		{"SELECT 1; SET ROLE postgres", "deny-role-changes"},
		{"WITH x AS (DELETE FROM orders RETURNING *) SELECT count(*) FROM x", "review-unbounded-writes"},
		{"EXPLAIN (ANALYZE true) DELETE FROM orders", "review-unbounded-writes"},
		{"DO $x$ BEGIN EXECUTE 'DROP ' || 'TABLE orders'; END $x$", "review-dynamic-sql"},
		{"SELECT * FROM query_to_xml('delete from orders returning 1', true, true, '')", "review-dynamic-sql"},
		{"COPY customers TO PROGRAM 'cat > /tmp/sluice-leak'", "deny-file-and-program-access"},
		{"SELECT pg_read_file('/etc/passwd')", "deny-file-and-program-access"},
		{"SELECT lo_export(1, '/tmp/sluice-leak')", "deny-file-and-program-access"},
		{"SELECT pg_terminate_backend(pg_backend_pid())", "deny-backend-signals"},
		{"ALTER SYSTEM SET log_statement = 'none'", "deny-server-configuration"},
		{"SELECT set_config('log_statement', 'none', false)", "deny-server-configuration"},
		{"SET SESSION AUTHORIZATION postgres", "deny-role-changes"},
		{"RESET ALL", "deny-role-changes"},
		{"SET standard_conforming_strings = off", "deny-lexer-settings"},
		{"SET client_encoding = 'SJIS'", "deny-lexer-settings"},
		{"GRANT ALL ON customers TO PUBLIC", "deny-role-changes"},
		{"CREATE EXTENSION dblink", "deny-extensions"},
		{"DROP DATABASE demo", "deny-drop-database"},
		{"SELECT * INTO stolen FROM customers", "builtin:masked-data-copy"}, // a copy of masked values, before any review
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, env.dsn(alice))
	require.NoError(t, err)
	defer conn.Close(ctx)
	for _, tc := range cases {
		t.Run(tc.sql, func(t *testing.T) {
			out, _ := env.psql(t, alice, "", "-c", tc.sql)
			assert.Contains(t, out, `ERROR:  42501: sluice: statement denied by rule "`+tc.rule+`"`, "simple protocol")
			if strings.Contains(tc.sql, ";") || strings.HasPrefix(tc.sql, "DEL/**/") {
				return // several statements cannot go in one Parse; junk fails either way
			}
			// QueryExecModeDescribeExec sends the SQL in a Parse message.
			_, err := conn.Exec(ctx, tc.sql, pgx.QueryExecModeDescribeExec)
			var pgErr *pgconn.PgError
			require.ErrorAs(t, err, &pgErr, "extended protocol")
			assert.Equal(t, "42501", pgErr.Code)
			assert.Contains(t, pgErr.Message, `"`+tc.rule+`"`)
		})
	}
	// A write hidden from keyword filters (MERGE) by a machine identity is
	// held like any write (and, unapproved, refused); bounded only by a
	// join, it is an unbounded write too.
	bot := env.Token("--sub", "etl-bot", "--groups", "engineers", "--machine")
	out, _ := env.psql(t, bot, "", "-c", "MERGE INTO orders o USING customers c ON o.customer_id = c.id WHEN MATCHED THEN DELETE")
	assert.Contains(t, out, "held for approval")
	assert.Contains(t, out, `denied by rule "review-unbounded-writes"`)
	out, _ = env.psql(t, bot, "", "-c", "MERGE INTO orders o USING customers c ON o.id = 3 AND o.customer_id = c.id WHEN MATCHED THEN DELETE")
	assert.Contains(t, out, "held for approval")
	assert.Contains(t, out, `denied by rule "review-machine-writes"`)

	// Nothing ran: the tables are intact and no file was written.
	var n int
	require.NoError(t, conn.QueryRow(ctx, "SELECT count(*) FROM orders").Scan(&n))
	assert.Equal(t, 200, n)
	out, _ = env.psql(t, env.Token("--sub", "dora", "--groups", "engineers,dba"), "", "-Atc", "SELECT count(*) FROM pg_class WHERE relname = 'stolen'")
	assert.Equal(t, "0", strings.TrimSpace(out))
}
