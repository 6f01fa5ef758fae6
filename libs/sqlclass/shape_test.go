package sqlclass

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"sluice.dev/sluice/libs/sqlshape"
)

// Statements whose literals sit in every kind of place the grammar has for
// them, beside the corpus.
var literalPlaces = []string{
	"SELECT abalance AS c12 FROM pgbench_accounts WHERE aid = 345",
	"SELECT -5, - 6, +7, 1 - 2",
	"SELECT INTERVAL '1' DAY, DATE '2020-01-01', int4 '5', timestamp(3) '2020-01-01'",
	"SELECT 'a'\n'b'",
	"SELECT 1::numeric(10,2), 'x'::varchar(20), 'customers'::regclass, 'now'::timestamptz",
	"SELECT * FROM t LIMIT 5 OFFSET 10",
	"SELECT * FROM t FETCH FIRST 5 ROWS ONLY",
	"SELECT * FROM t ORDER BY 1, 2 DESC",
	"SELECT a FROM t GROUP BY 1 HAVING count(*) > 3",
	"SET search_path = 'public'",
	"SET statement_timeout = 5",
	"SET LOCAL work_mem = '64MB'",
	"SET TIME ZONE 'UTC'",
	"SELECT set_config('role', 'postgres', false)",
	"SELECT pg_read_file('/etc/passwd', 0, 100)",
	"SELECT nextval('orders_id_seq'), currval('orders_id_seq')",
	"SELECT table_to_xml('customers', true, true, '')",
	"SELECT * FROM dblink('host=x', 'SELECT 1') AS t(a int)",
	"COPY t FROM '/tmp/x.csv' WITH (FORMAT 'csv', DELIMITER ',')",
	"COPY (SELECT 1) TO PROGRAM 'cat'",
	"CREATE TABLE t2 (a varchar(10) DEFAULT 'x', b numeric(5, 2) CHECK (b > 0))",
	"CREATE SEQUENCE s INCREMENT 5 START 10 CACHE 20",
	"CREATE FUNCTION f() RETURNS int AS 'SELECT 1' LANGUAGE sql",
	"DO 'BEGIN PERFORM 1; END'",
	"ALTER ROLE bob PASSWORD 'secret' VALID UNTIL '2030-01-01'",
	"COMMENT ON TABLE t IS 'a table'",
	"FETCH FORWARD 5 FROM c",
	"DECLARE c CURSOR FOR SELECT * FROM t WHERE a = 1",
	"PREPARE p (int) AS SELECT * FROM t WHERE a = $1 AND b = 2",
	"EXECUTE p(5)",
	"INSERT INTO t (a, b) VALUES (1, 'x'), (2, 'y') ON CONFLICT (a) DO UPDATE SET b = 'z'",
	"UPDATE t SET a = a + 1 WHERE b IN (1, 2, 3) RETURNING a",
	"DELETE FROM t WHERE created < now() - interval '7 days'",
	"SELECT lo_import('/etc/passwd'), lo_export(1234, '/tmp/x')",
	"SELECT pg_terminate_backend(1234)",
	"VACUUM (PARALLEL 2) t",
	"LOCK TABLE t IN ACCESS EXCLUSIVE MODE NOWAIT",
	"SELECT $2, 3, 'x'",
	"SELECT * FROM t WHERE a BETWEEN 1 AND 5 AND b LIKE 'x%' ESCAPE '!'",
	"SELECT substring('abc' FROM 2 FOR 1), trim(BOTH 'x' FROM 'xax'), overlay('abc' PLACING 'x' FROM 2)",
	"SELECT * FROM generate_series(1, 10) g TABLESAMPLE SYSTEM (10) REPEATABLE (42)",
	"SELECT xmlelement(name foo, 'x'), json_object('a': 1)",
	"SELECT ARRAY[1, 2][1], (ARRAY[1, 2])[1:2]",
	"SELECT 1 FROM t WHERE a = ANY('{1,2}'::int[])",
	"BEGIN ISOLATION LEVEL SERIALIZABLE; SELECT 1; COMMIT",
	"SELECT 1; SELECT 'x' AS y FROM t WHERE id = 2",
}

// The shape classified from the statement's own parse is the shape's own
// classification wherever the shape's text parses: the same classes, so the
// policy service's check that a decision holds for every statement of the
// shape gives what classifying the shape's text gives. Where the shape's
// text does not parse, the tree with parameters stands for statements that
// differ only in those constants' values.
func TestShapeFromTheSameParse(t *testing.T) {
	stmts := append([]string(nil), literalPlaces...)
	for _, e := range loadCorpus(t) {
		stmts = append(stmts, e.SQL)
	}
	var fast, fallback, textDoesNotParse int
	for _, sql := range stmts {
		shape, lits, ok := sqlshape.ShapeLiterals(sql)
		if !ok || shape == sql {
			continue
		}
		want, werr := ClassifyParts(sql, Lineage)
		res, got, err := ClassifyWithShape(sql, Lineage, lits.Offsets, lits.From)
		if werr != nil {
			require.Error(t, err, sql)
			continue
		}
		require.NoError(t, err, sql)
		assert.Equal(t, want, res, "the statement's own classification: %s", sql)
		if got == nil {
			fallback++
			continue
		}
		fast++
		byText, serr := ClassifyParts(shape, 0)
		if serr != nil {
			textDoesNotParse++
			t.Logf("shape's text does not parse: %s", shape)
			continue
		}
		require.Len(t, got.Statements, len(byText.Statements), shape)
		for i := range got.Statements {
			g, b := got.Statements[i], byText.Statements[i]
			g.Text, b.Text = "", ""
			assert.Equal(t, b, g, "statement %d of %q (shape %q)", i, sql, shape)
		}
	}
	t.Logf("%d shapes from the same parse (%d whose text does not parse), %d classified from their text", fast, textDoesNotParse, fallback)
	assert.Greater(t, fast, 100)
	assert.Greater(t, fallback, 5)
}

// Where a literal is not a constant a parameter could replace, there is no
// shape from the same parse.
func TestShapeFromTheSameParseGivesUp(t *testing.T) {
	for _, sql := range []string{
		"SELECT -5",       // the constant starts at the sign
		"SELECT 'a'\n'b'", // two literals, one constant
		"COPY t FROM '/tmp/x.csv'",
		"CREATE SEQUENCE s INCREMENT 5",
		"FETCH FORWARD 5 FROM c",
		"CREATE FUNCTION f() RETURNS int AS 'SELECT 1' LANGUAGE sql",
	} {
		_, lits, ok := sqlshape.ShapeLiterals(sql)
		require.True(t, ok, sql)
		_, shape, err := ClassifyWithShape(sql, 0, lits.Offsets, lits.From)
		require.NoError(t, err, sql)
		assert.Nil(t, shape, sql)
	}
	const setRole = "SELECT set_config('role', 'postgres', false)"
	_, lits, _ := sqlshape.ShapeLiterals(setRole)
	res, shape, err := ClassifyWithShape(setRole, 0, lits.Offsets, lits.From)
	require.NoError(t, err)
	require.NotNil(t, shape)
	assert.Equal(t, "role", res.Statements[0].Setting)
	assert.Empty(t, shape.Statements[0].Setting, "the literal names the setting; its parameter does not")
}

// FuzzShapeFromTheSameParse checks TestShapeFromTheSameParse's property on
// any input: where the shape's text parses, the shape from the statement's
// own parse has its classes.
func FuzzShapeFromTheSameParse(f *testing.F) {
	for _, s := range literalPlaces {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, sql string) {
		shape, lits, ok := sqlshape.ShapeLiterals(sql)
		if !ok || shape == sql {
			return
		}
		_, got, err := ClassifyWithShape(sql, 0, lits.Offsets, lits.From)
		if err != nil || got == nil {
			return
		}
		byText, err := ClassifyParts(shape, 0)
		if err != nil {
			return
		}
		if len(got.Statements) != len(byText.Statements) {
			t.Fatalf("%q: %d statements from the same parse, %d from the shape %q", sql, len(got.Statements), len(byText.Statements), shape)
		}
		for i := range got.Statements {
			g, b := got.Statements[i], byText.Statements[i]
			g.Text, b.Text = "", ""
			if !assert.ObjectsAreEqual(b, g) {
				t.Fatalf("%q, statement %d: from the same parse %+v, from the shape %q %+v", sql, i, g, shape, b)
			}
		}
	})
}
