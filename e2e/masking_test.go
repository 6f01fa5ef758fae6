package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"sluice.dev/sluice/libs/testkit"
)

// The demo's first customer, as the database holds it.
const (
	firstEmail = "ada.lovelace1@example.com"
	firstSSN   = "107-11-1037"
)

func TestMasking(t *testing.T) {
	env := startPG(t)
	alice := env.Token("--sub", "alice", "--groups", "engineers")
	dora := env.Token("--sub", "dora", "--groups", "engineers,dba")
	ctx := context.Background()

	psqlOut := func(token, sql string) string {
		t.Helper()
		out, err := env.psql(t, token, "", "-A", "-t", "-c", sql)
		require.NoError(t, err, out)
		return out
	}
	clean := func(t *testing.T, out string) {
		t.Helper()
		// COPY's text format escapes a delimiter inside a value.
		out = strings.ReplaceAll(out, `\`, "")
		assert.NotContains(t, out, firstEmail)
		assert.NotContains(t, out, firstSSN)
		assert.NotContains(t, out, "@example.com")
	}

	t.Run("dba sees clear values", func(t *testing.T) {
		out := psqlOut(dora, "SELECT email, ssn FROM customers WHERE id = 1")
		assert.Contains(t, out, firstEmail)
		assert.Contains(t, out, firstSSN)
	})

	cases := map[string]string{
		"columns":     "SELECT email, ssn, card_number, phone FROM customers WHERE id = 1",
		"aliases":     "SELECT email AS contact, ssn AS x FROM customers WHERE id = 1",
		"expressions": "SELECT upper(email), substr(ssn, 1, 6), email || '' FROM customers WHERE id = 1",
		"casts":       "SELECT email::varchar(100), ssn::text FROM customers WHERE id = 1",
		"json":        "SELECT row_to_json(c), to_jsonb(c), json_build_object('e', email) FROM customers c WHERE id = 1",
		"aggregates":  "SELECT string_agg(email, ','), max(ssn), array_agg(phone) FROM customers WHERE id < 3",
		"cte":         "WITH x AS (SELECT email AS e FROM customers) SELECT e FROM x LIMIT 3",
		"subquery":    "SELECT (SELECT email FROM customers WHERE id = 1) AS e",
		"view":        "SELECT email FROM customer_orders LIMIT 3",
		"union":       "SELECT email FROM customers WHERE id = 1 UNION ALL SELECT 'x'",
		"copy query":  "COPY (SELECT name, email, ssn FROM customers WHERE id = 1) TO STDOUT",
		"copy table":  "COPY customers TO STDOUT",
		"copy csv":    "COPY customers (id, email, ssn) TO STDOUT WITH (FORMAT csv, HEADER)",
		// COPY's own grammar: a quote of its own, a delimiter that values
		// hold (escaped in text format), an escape of its own, an encoding.
		"copy csv quote":      `COPY (SELECT name AS "x""", email, ssn, card_number, phone FROM customers) TO STDOUT WITH (FORMAT csv, HEADER, QUOTE '|')`,
		"copy text delimiter": "COPY (SELECT ssn, email, ssn FROM customers WHERE id = 1) TO STDOUT (DELIMITER '-')",
		"copy at delimiter":   "COPY (SELECT email, email FROM customers WHERE id = 1) TO STDOUT (DELIMITER '@')",
		"copy csv escape":     `COPY (SELECT email, ssn FROM customers WHERE id < 3) TO STDOUT (FORMAT csv, QUOTE '''', ESCAPE '\', FORCE_QUOTE *)`,
		"copy encoding":       "COPY (SELECT email, ssn FROM customers WHERE id = 1) TO STDOUT (ENCODING 'LATIN1')",
		// A value ending in the escape, then a quoted literal holding
		// delimiters: the field count still adds up.
		"copy csv escape value": `COPY (SELECT ',\', ssn, 'a,b,c"' FROM customers WHERE id = 1) TO STDOUT (FORMAT csv, ESCAPE '\')`,
		"error message":         "SELECT ssn::int FROM customers WHERE id = 1",
	}
	for name, sql := range cases {
		t.Run(name, func(t *testing.T) {
			out, _ := env.psql(t, alice, "", "-A", "-t", "-c", sql)
			clean(t, out)
			assert.NotEmpty(t, strings.TrimSpace(out))
		})
	}

	t.Run("a whole row is withheld", func(t *testing.T) {
		// A row holding masked columns is a value derived from them: not a
		// text the detectors could be trusted with, so it is NULL.
		out := psqlOut(alice, "SELECT c, id FROM customers c WHERE id = 1")
		assert.Equal(t, "|1", strings.TrimSpace(out))
		out = psqlOut(alice, "SELECT o FROM orders o ORDER BY id LIMIT 1")
		assert.NotEqual(t, "", strings.TrimSpace(out), "a row without masked columns is untouched")
	})

	t.Run("unrelated computed columns are untouched", func(t *testing.T) {
		out := psqlOut(alice, "SELECT count(*), max(length(name)) FROM customers WHERE email LIKE '%example.com'")
		assert.Contains(t, out, "64|")
	})

	t.Run("cursors and RETURNING", func(t *testing.T) {
		out, err := env.psql(t, alice, "BEGIN;\nDECLARE c CURSOR FOR SELECT email, ssn FROM customers ORDER BY id;\nFETCH 2 FROM c;\nCLOSE c;\nUPDATE customers SET phone = phone WHERE id = 2 RETURNING email, ssn;\nROLLBACK;\n", "-A", "-t")
		require.NoError(t, err, out)
		clean(t, out)
		assert.Contains(t, out, "****|****")
	})

	t.Run("binary results through pgx", func(t *testing.T) {
		conn, err := pgx.Connect(ctx, env.dsn(alice))
		require.NoError(t, err)
		defer conn.Close(ctx)
		// pgx asks for binary results where it can; text columns come back
		// masked, and a non-text computed value from masked data is NULL.
		var email, ssn string
		var n *int64
		err = conn.QueryRow(ctx, "SELECT email, ssn, length(email)::int8 FROM customers WHERE id = $1", 1).Scan(&email, &ssn, &n)
		require.NoError(t, err)
		assert.Equal(t, "****", email)
		assert.Equal(t, "****", ssn)
		assert.Nil(t, n, "a number computed from a masked column is withheld")
		// A JSON value derived from masked columns is replaced whole, as
		// valid JSON.
		var doc any
		require.NoError(t, conn.QueryRow(ctx, "SELECT to_jsonb(c) FROM customers c WHERE id = $1", 1).Scan(&doc))
		b, _ := json.Marshal(doc)
		clean(t, string(b))
		assert.Equal(t, `"****"`, string(b))
		var idOK int
		require.NoError(t, conn.QueryRow(ctx, "SELECT id FROM customers WHERE email = $1", firstEmail).Scan(&idOK))
		assert.Equal(t, 1, idOK, "filtering on a masked column still works")
	})

	t.Run("COPY's NULL string is no oracle", func(t *testing.T) {
		// Text format writes a value equal to the statement's NULL string
		// as it is: a guess that matches must not show through.
		ssn := strings.TrimSpace(psqlOut(dora, "SELECT ssn FROM customers WHERE id = 2"))
		require.NotEmpty(t, ssn)
		out := psqlOut(alice, "COPY (SELECT ssn, id FROM customers WHERE id = 2) TO STDOUT (NULL '"+ssn+"')")
		assert.NotContains(t, out, ssn)
		assert.Contains(t, out, "****")
	})

	t.Run("a write's error does not echo the row", func(t *testing.T) {
		// "Failing row contains (...)" lists every column of the row.
		out, err := env.psql(t, alice, "BEGIN;\nUPDATE customers SET name = NULL WHERE id = 1;\nROLLBACK;\n", "-A", "-t", "-v", "VERBOSITY=verbose", "-v", "ON_ERROR_STOP=1")
		assert.Error(t, err)
		clean(t, out)
		assert.Contains(t, out, "23502", "the SQLSTATE stays")
		assert.NotContains(t, out, "1037")
	})

	t.Run("binary whole rows and statistics", func(t *testing.T) {
		// A whole row (attribute 0 of its table) and what the statistics
		// sample of a table's values, asked for in binary: neither may come
		// back as clear bytes.
		out, err := timedCommand(t, "psql", env.directDSN(t), "-c",
			"ANALYZE customers; CREATE VIEW stats_copy AS SELECT tablename, attname, most_common_vals::text AS v FROM pg_stats").CombinedOutput()
		require.NoError(t, err, string(out))
		conn, err := pgconn.Connect(ctx, env.dsn(alice))
		require.NoError(t, err)
		defer conn.Close(ctx)
		for _, sql := range []string{
			"SELECT c FROM customers c WHERE id = 1",
			"SELECT (c.*)::customers FROM customers c WHERE id = 1",
			"SELECT attname, most_common_vals, histogram_bounds FROM pg_stats WHERE tablename = 'customers'",
			"SELECT s FROM pg_stats s WHERE tablename = 'customers'",
			"SELECT attname, v FROM stats_copy WHERE tablename = 'customers'",
		} {
			res := conn.ExecParams(ctx, sql, nil, nil, nil, []int16{1}).Read()
			var got []byte
			for _, r := range res.Rows {
				for _, v := range r {
					got = append(got, v...)
					got = append(got, '\n')
				}
			}
			if res.Err != nil {
				got = append(got, res.Err.Error()...)
			}
			clean(t, string(got))
			assert.NotContains(t, string(got), "1037", sql)
		}
	})

	t.Run("notifications", func(t *testing.T) {
		conn, err := pgconn.Connect(ctx, env.dsn(alice))
		require.NoError(t, err)
		defer conn.Close(ctx)
		_, err = conn.Exec(ctx, "LISTEN news").ReadAll()
		require.NoError(t, err)
		out, err := timedCommand(t, "psql", env.directDSN(t), "-c", "NOTIFY news, 'customer "+firstEmail+" changed'").CombinedOutput()
		require.NoError(t, err, string(out))
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		require.NoError(t, conn.WaitForNotification(wctx))
	})

	t.Run("the record says what was masked", func(t *testing.T) {
		auditor := []string{"SLUICE_TOKEN=" + env.Token("--sub", "audrey", "--groups", "auditors")}
		testkit.Eventually(t, 20*time.Second, func() error {
			out, err := env.CLI(auditor, "audit", "tail", "--format", "json")
			if err != nil {
				return err
			}
			if !strings.Contains(out, `"masking"`) || !strings.Contains(out, "customers.ssn") {
				return fmt.Errorf("no masking summary yet")
			}
			assert.NotContains(t, out, firstSSN, "the audit log never holds masked values")
			return nil
		})
	})
}
