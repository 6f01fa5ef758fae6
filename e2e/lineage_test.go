package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// translated is what translate(ssn, '0123456789', 'abcdefghij') makes of
// the first customer's SSN: reversible, and invisible to value detectors.
const translated = "bah-bb-bdjh"

// TestLineageThroughRenaming: a masked value keeps its origin whatever it
// is renamed to and however it is transformed: derived tables, CTEs, set
// operations, lateral joins, VALUES, scalar subqueries, views, cursors,
// prepared statements, functions, COPY. What may carry it is masked; a
// statement that would copy it where masking cannot follow is refused.
func TestLineageThroughRenaming(t *testing.T) {
	env := startPG(t)
	alice := env.Token("--sub", "alice", "--groups", "engineers")
	ctx := context.Background()
	// What a DBA made on the target, outside Sluice.
	for _, q := range []string{
		"CREATE VIEW cust_names AS SELECT id, translate(ssn, '0123456789', 'abcdefghij') AS name FROM customers",
		"CREATE VIEW cust_names2 AS SELECT id, name FROM cust_names",
		"CREATE FUNCTION lookup_name(i int) RETURNS text LANGUAGE sql STABLE AS 'SELECT ssn FROM customers WHERE id = i'",
		"GRANT SELECT ON cust_names, cust_names2 TO sluice_gateway",
	} {
		out, err := timedCommand(t, "psql", env.directDSN(t), "-v", "ON_ERROR_STOP=1", "-c", q).CombinedOutput()
		require.NoError(t, err, string(out))
	}
	leaks := func(t *testing.T, out string) {
		t.Helper()
		for _, secret := range []string{translated, firstSSN, strings.ToUpper(translated), "7301-11-701", "moc.elpmaxe@1ecalevol.ada", firstEmail} {
			assert.NotContains(t, out, secret)
		}
	}
	reads := map[string]string{
		"derived table":          "SELECT name FROM (SELECT translate(ssn, '0123456789', 'abcdefghij') AS name FROM customers WHERE id = 1) s",
		"derived table, columns": "SELECT name FROM (SELECT translate(ssn, '0123456789', 'abcdefghij') FROM customers WHERE id = 1) AS s(name)",
		"cte":                    "WITH s AS (SELECT id, translate(ssn, '0123456789', 'abcdefghij') AS name FROM customers) SELECT name FROM s WHERE id = 1",
		"cte, column list":       "WITH s(id, name) AS (SELECT id, reverse(ssn) FROM customers) SELECT s.name FROM s WHERE id = 1",
		"nested":                 "SELECT a FROM (SELECT b AS a FROM (SELECT upper(translate(ssn, '0123456789', 'abcdefghij')) AS b FROM customers WHERE id = 1) x) y",
		"union":                  "SELECT name FROM customers WHERE id = 2 UNION ALL SELECT translate(ssn, '0123456789', 'abcdefghij') FROM customers WHERE id = 1",
		"lateral":                "SELECT x.v FROM customers c, LATERAL (SELECT translate(c.ssn, '0123456789', 'abcdefghij') AS v) x WHERE c.id = 1",
		"lateral function":       "SELECT u FROM customers c, unnest(ARRAY[translate(c.ssn, '0123456789', 'abcdefghij')]) AS u WHERE c.id = 1",
		"values":                 "SELECT column1 FROM (VALUES ((SELECT translate(ssn, '0123456789', 'abcdefghij') FROM customers WHERE id = 1))) v",
		"scalar subquery":        "SELECT (SELECT reverse(email) FROM customers WHERE id = 1) AS name",
		"recursive cte":          "WITH RECURSIVE r(n, v) AS (SELECT 1, translate(ssn, '0123456789', 'abcdefghij') FROM customers WHERE id = 1 UNION ALL SELECT n + 1, v FROM r WHERE n < 2) SELECT v FROM r",
		"star over a subquery":   "SELECT * FROM (SELECT id, translate(ssn, '0123456789', 'abcdefghij') AS name FROM customers WHERE id = 1) s",
		"view":                   "SELECT name FROM cust_names WHERE id = 1",
		"view over a view":       "SELECT name FROM cust_names2 WHERE id = 1",
		"function":               "SELECT lookup_name(1) AS name",
		"copy query":             "COPY (SELECT translate(ssn, '0123456789', 'abcdefghij') AS name FROM customers WHERE id = 1) TO STDOUT",
		"json of a derived row":  "SELECT row_to_json(s) FROM (SELECT translate(ssn, '0123456789', 'abcdefghij') AS name FROM customers WHERE id = 1) s",
		// A star over a join that merges its columns, renamed by position;
		// a WITH RECURSIVE item read before it is defined.
		"using join, renamed": "SELECT c2 FROM (SELECT * FROM (SELECT id FROM customers) a JOIN (SELECT id, translate(ssn, '0123456789', 'abcdefghij') AS s FROM customers WHERE id = 1) b USING (id)) AS x(c1, c2)",
		"natural join, cte":   "WITH x(c1, c2) AS (SELECT * FROM (SELECT id FROM customers) a NATURAL JOIN (SELECT id, translate(ssn, '0123456789', 'abcdefghij') AS s FROM customers WHERE id = 1) b) SELECT c2 FROM x",
		"recursive, forward":  "WITH RECURSIVE a AS (SELECT v FROM b), b AS (SELECT translate(ssn, '0123456789', 'abcdefghij') AS v FROM customers WHERE id = 1) SELECT v FROM a",
	}
	for name, sql := range reads {
		t.Run(name, func(t *testing.T) {
			out, err := env.psql(t, alice, "", "-A", "-t", "-c", sql)
			require.NoError(t, err, out)
			leaks(t, out)
			assert.Contains(t, out, "****", "masked, not empty")
		})
	}

	t.Run("a view made outside while a session is open is followed within a second", func(t *testing.T) {
		// A pooled application connection lives for hours; a migration (or
		// a DBA) adds a view over masked columns meanwhile. No masked
		// statement is planned on a resolution of the masked columns older
		// than a second, so the open session masks the new view too.
		script := "SELECT name FROM customers WHERE id = 1;\n" +
			`\! psql "` + env.directDSN(t) + `" -q -c "CREATE VIEW cust_later AS SELECT id, translate(ssn, '0123456789', 'abcdefghij') AS name FROM customers"` + "\n" +
			"\\! sleep 1.5\n" +
			"SELECT name FROM cust_later WHERE id = 1;\n"
		out, err := env.psql(t, alice, script, "-A", "-t", "-v", "ON_ERROR_STOP=1")
		require.NoError(t, err, out)
		leaks(t, out)
		assert.Equal(t, []string{"Ada Lovelace", "****"}, strings.Split(strings.TrimSpace(out), "\n"), "the view's values masked")
	})

	t.Run("rows a rule adds to a write", func(t *testing.T) {
		// The classification sees an INSERT; the rule on its table makes
		// it return rows of another: their origin is unknown, so masked.
		out, err := env.psql(t, alice, "CREATE TEMP TABLE probe (a int);\n"+
			"CREATE RULE leak AS ON INSERT TO probe DO ALSO SELECT translate(ssn, '0123456789', 'abcdefghij') AS name FROM customers WHERE id = 1;\n"+
			"INSERT INTO probe VALUES (1);\n", "-A", "-t")
		require.NoError(t, err, out)
		leaks(t, out)
		assert.Contains(t, out, "****")
	})
	t.Run("cursor", func(t *testing.T) {
		out, err := env.psql(t, alice, "BEGIN;\nDECLARE c CURSOR FOR SELECT translate(ssn, '0123456789', 'abcdefghij') AS name FROM customers ORDER BY id;\nFETCH 2 FROM c;\nCOMMIT;\n", "-A", "-t")
		require.NoError(t, err, out)
		leaks(t, out)
		assert.Contains(t, out, "****")
	})
	t.Run("prepared statement", func(t *testing.T) {
		out, err := env.psql(t, alice, "PREPARE p AS SELECT name FROM (SELECT translate(ssn, '0123456789', 'abcdefghij') AS name FROM customers WHERE id = 1) s;\nEXECUTE p;\n", "-A", "-t")
		require.NoError(t, err, out)
		leaks(t, out)
		assert.Contains(t, out, "****")
	})
	t.Run("extended protocol, binary results", func(t *testing.T) {
		conn, err := pgx.Connect(ctx, env.dsn(alice))
		require.NoError(t, err)
		defer conn.Close(ctx)
		var name *string
		require.NoError(t, conn.QueryRow(ctx, "SELECT name FROM (SELECT translate(ssn, '0123456789', 'abcdefghij') AS name FROM customers WHERE id = $1) s", 1).Scan(&name))
		require.NotNil(t, name)
		assert.Equal(t, "****", *name)
	})

	t.Run("errors and notices do not echo derived values", func(t *testing.T) {
		for _, sql := range []string{
			"SELECT translate(ssn, '0123456789', 'abcdefghij')::int FROM customers WHERE id = 1",
			"SELECT id FROM customers WHERE translate(ssn, '0123456789', 'abcdefghij')::int > 0",
			"SELECT name::int FROM (SELECT translate(ssn, '0123456789', 'abcdefghij') AS name FROM customers WHERE id = 1) s",
		} {
			out, err := env.psql(t, alice, "", "-A", "-t", "-c", sql)
			require.Error(t, err, out)
			leaks(t, out)
			assert.Contains(t, out, "22P02", "the SQLSTATE stays")
		}
	})

	t.Run("copies where masking cannot follow are refused", func(t *testing.T) {
		for _, sql := range []string{
			"BEGIN; UPDATE customers SET name = translate(ssn, '0123456789', 'abcdefghij') WHERE id = 1; SELECT name FROM customers WHERE id = 1; ROLLBACK;",
			"UPDATE customers SET name = ssn WHERE id = 1",
			"INSERT INTO customers (name, email, ssn, card_number, phone, iban) SELECT ssn, 'x@y.z', '000-00-0000', '0', '0', 'x' FROM customers WHERE id = 1",
			"SELECT pg_notify('leak', translate(ssn, '0123456789', 'abcdefghij')) FROM customers WHERE id = 1",
			"WITH x AS (SELECT reverse(email) AS e FROM customers WHERE id = 1) UPDATE customers SET name = (SELECT e FROM x) WHERE id = 2",
		} {
			out, err := env.psql(t, alice, "", "-A", "-t", "-c", sql)
			require.Error(t, err, "%s\n%s", sql, out)
			assert.Contains(t, out, "builtin:masked-data-copy", sql)
			leaks(t, out)
		}
		// Nothing was copied.
		out, err := env.psql(t, alice, "", "-A", "-t", "-c", "SELECT name FROM customers WHERE id IN (1, 2) ORDER BY id")
		require.NoError(t, err, out)
		assert.Contains(t, out, "Ada Lovelace")
	})

	t.Run("a masked table's definition is not for whom it is masked", func(t *testing.T) {
		// Renamed, its masking rule would name nothing; a rule of another
		// table would copy its values out.
		for sql, rule := range map[string]string{
			"ALTER TABLE customers RENAME COLUMN ssn TO tax_id":                                                             "builtin:masked-schema-change",
			"ALTER TABLE customers RENAME TO customers_v2":                                                                  "builtin:masked-schema-change",
			"ALTER TABLE customers ALTER COLUMN ssn TYPE text USING reverse(ssn)":                                           "builtin:masked-schema-change",
			"CREATE TRIGGER t AFTER INSERT ON customers FOR EACH ROW EXECUTE FUNCTION suppress_redundant_updates_trigger()": "builtin:masked-schema-change",
			"CREATE TEMP TABLE t (x int); CREATE TEMP TABLE leak (v text); CREATE RULE r AS ON INSERT TO t DO ALSO INSERT INTO leak SELECT translate(ssn, '0123456789', 'abcdefghij') FROM customers": "builtin:masked-data-copy",
			`CREATE TEMP TABLE v (x text); CREATE RULE "_RETURN" AS ON SELECT TO v DO INSTEAD SELECT translate(ssn, '0123456789', 'abcdefghij') AS x FROM customers`:                                  "builtin:masked-data-copy",
			"CREATE TEMP TABLE o (x int); CREATE POLICY p ON o USING ((SELECT translate(ssn, '0123456789', 'abcdefghij') FROM customers WHERE id = 1)::int > 0)":                                      "builtin:masked-data-copy",
			"CREATE TABLE p (LIKE customers) PARTITION BY RANGE (id); ALTER TABLE p ATTACH PARTITION customers DEFAULT":                                                                               "builtin:masked-schema-change",
			"ALTER SCHEMA public RENAME TO x": "builtin:masked-schema-change",
		} {
			out, err := env.psql(t, alice, "", "-A", "-t", "-c", sql)
			require.Error(t, err, "%s\n%s", sql, out)
			assert.Contains(t, out, rule, sql)
		}
		// A rule of tables without masked columns is no copy.
		out, err := env.psql(t, alice, "", "-A", "-t", "-c",
			"CREATE TEMP TABLE t2 (x int); CREATE TEMP TABLE log2 (x int); CREATE RULE r2 AS ON INSERT TO t2 DO ALSO INSERT INTO log2 VALUES (NEW.x)")
		require.NoError(t, err, out)

		// A DBA renames the column outside Sluice: the mask follows the
		// column itself (its table's OID and attribute number), under its
		// new name too, where masking by name would silently stop.
		direct := func(q string) {
			out, err := timedCommand(t, "psql", env.directDSN(t), "-v", "ON_ERROR_STOP=1", "-c", q).CombinedOutput()
			require.NoError(t, err, string(out))
		}
		out, err = env.psql(t, alice, "", "-A", "-t", "-c", "SELECT ssn FROM customers WHERE id = 1")
		require.NoError(t, err, out)
		direct("ALTER TABLE customers RENAME COLUMN ssn TO tax_id")
		restored := false
		defer func() {
			if !restored {
				direct("ALTER TABLE customers RENAME COLUMN tax_id TO ssn")
			}
		}()
		time.Sleep(1500 * time.Millisecond) // past the catalog's maximum age
		for _, sql := range []string{
			"SELECT tax_id FROM customers WHERE id = 1",
			"SELECT translate(tax_id, '0123456789', 'abcdefghij') FROM customers WHERE id = 1",
			"SELECT x FROM (SELECT reverse(tax_id) AS x FROM customers WHERE id = 1) s",
		} {
			out, err := env.psql(t, alice, "", "-A", "-t", "-c", sql)
			require.NoError(t, err, "%s\n%s", sql, out)
			leaks(t, out)
			assert.Contains(t, out, "****", sql)
		}
		direct("ALTER TABLE customers RENAME COLUMN tax_id TO ssn")
		restored = true
		time.Sleep(1500 * time.Millisecond)
		out, err = env.psql(t, alice, "", "-A", "-t", "-c", "SELECT translate(ssn, '0123456789', 'abcdefghij') FROM customers WHERE id = 1")
		require.NoError(t, err, out)
		leaks(t, out)
		assert.Contains(t, out, "****")
	})

	t.Run("what masking must leave alone", func(t *testing.T) {
		out, err := env.psql(t, alice, "", "-A", "-t", "-c",
			"SELECT name, upper(name), count(*) OVER () FROM (SELECT name FROM customers WHERE id = 1) s")
		require.NoError(t, err, out)
		assert.Contains(t, out, "Ada Lovelace|ADA LOVELACE|1")
		out, err = env.psql(t, alice, "", "-A", "-t", "-c", "SELECT count(*) FROM customers WHERE ssn LIKE '1%'")
		require.NoError(t, err, out)
		assert.NotContains(t, out, "****")
		out, err = env.psql(t, alice, "", "-A", "-t", "-c", "UPDATE customers SET name = upper(name) WHERE id = 3")
		require.NoError(t, err, out)
	})
}

// TestDescriptionsCachedByTheDriver: drivers that cache statement
// descriptions (JDBC, psycopg 3, Npgsql) bind and execute a prepared
// statement without describing it in this session. The worker asks for the
// description itself, masks as usual, and keeps its question and the
// answer to itself.
func TestDescriptionsCachedByTheDriver(t *testing.T) {
	env := startPG(t)
	alice := env.Token("--sub", "alice", "--groups", "engineers")
	ctx := context.Background()
	conn, err := pgconn.Connect(ctx, env.dsn(alice))
	require.NoError(t, err)
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "PREPARE one AS SELECT 1").ReadAll()
	require.NoError(t, err)
	_, err = conn.Exec(ctx, "PREPARE pii AS SELECT name, email, translate(ssn, '0123456789', 'abcdefghij') FROM customers WHERE id = $1").ReadAll()
	require.NoError(t, err)
	fe := conn.Frontend()
	// run sends messages and a Sync, and reads the rows.
	run := func(msgs ...pgproto3.FrontendMessage) [][]string {
		t.Helper()
		a := exchange(t, fe, append(msgs, &pgproto3.Sync{})...)
		require.False(t, a.described, "a row description nobody asked for reached the client")
		require.Empty(t, a.errs)
		return a.rows
	}
	// Bind + Execute of statements SQL PREPARE made: no Describe.
	assert.Equal(t, [][]string{{"1"}}, run(&pgproto3.Bind{PreparedStatement: "one"}, &pgproto3.Execute{}))
	for i := 0; i < 2; i++ {
		rows := run(&pgproto3.Bind{PreparedStatement: "pii", Parameters: [][]byte{[]byte("1")}, ResultFormatCodes: []int16{0, 1, 0}}, &pgproto3.Execute{})
		assert.Equal(t, [][]string{{"Ada Lovelace", "****", "****"}}, rows)
	}
	// A statement made by Parse, never described.
	run(&pgproto3.Parse{Name: "p2", Query: "SELECT email, name FROM (SELECT email, name FROM customers) s WHERE name = $1"})
	rows := run(&pgproto3.Bind{PreparedStatement: "p2", Parameters: [][]byte{[]byte("Ada Lovelace")}}, &pgproto3.Execute{})
	assert.Equal(t, [][]string{{"****", "Ada Lovelace"}}, rows)
	// The session goes on.
	assert.Equal(t, [][]string{{"2"}}, run(&pgproto3.Parse{Query: "SELECT 2"}, &pgproto3.Bind{}, &pgproto3.Execute{}))
}
