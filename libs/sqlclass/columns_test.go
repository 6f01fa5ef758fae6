package sqlclass

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestColumns(t *testing.T) {
	tests := map[string][]string{
		"SELECT upper(email), c.ssn, count(*) FROM customers c":      {"c.ssn", "email"},
		"SELECT c FROM customers c":                                  {"c"},
		"SELECT row_to_json(c.*) FROM customers c":                   {"c.*"},
		`SELECT "Email" FROM t WHERE id = 1`:                         {"Email", "id"},
		"WITH x AS (SELECT ssn AS s FROM customers) SELECT s FROM x": {"s", "ssn"},
		"SELECT 1": nil,
	}
	for q, want := range tests {
		r, err := Classify(q)
		require.NoError(t, err, q)
		assert.Equal(t, want, r.Statements[0].Columns, q)
	}
}

func TestParseCopy(t *testing.T) {
	c, err := ParseCopy("COPY customers TO STDOUT")
	require.NoError(t, err)
	assert.Equal(t, &Copy{Table: "customers", Format: "text", Delimiter: '\t', Quote: '"', Escape: '"', Null: `\N`}, c)
	c, err = ParseCopy("COPY public.customers (email, name) TO STDOUT WITH (FORMAT csv, HEADER)")
	require.NoError(t, err)
	assert.Equal(t, &Copy{Table: "public.customers", Columns: []string{"email", "name"}, Format: "csv", Delimiter: ',', Header: true, Quote: '"', Escape: '"'}, c)
	for q, want := range map[string]bool{"COPY t TO STDOUT (FORMAT csv, HEADER false)": false, "COPY t TO STDOUT CSV HEADER": true,
		"COPY t TO STDOUT (HEADER match)": true, "COPY t TO STDOUT (HEADER 0)": false} {
		c, err = ParseCopy(q)
		require.NoError(t, err, q)
		assert.Equal(t, want, c.Header, q)
	}
	c, err = ParseCopy("COPY (SELECT ssn FROM customers) TO STDOUT (FORMAT binary)")
	require.NoError(t, err)
	assert.True(t, c.Query)
	assert.Equal(t, "binary", c.Format)
	c, err = ParseCopy("COPY customers TO STDOUT DELIMITER '|'")
	require.NoError(t, err)
	assert.Equal(t, byte('|'), c.Delimiter)
	c, err = ParseCopy(`COPY t TO STDOUT WITH (FORMAT csv, QUOTE '|', ESCAPE '\', NULL 'none', FORCE_QUOTE *, ENCODING 'LATIN1')`)
	require.NoError(t, err)
	assert.Equal(t, []any{byte('|'), byte('\\'), "none", []string{"encoding"}}, []any{c.Quote, c.Escape, c.Null, c.Other})
	c, err = ParseCopy(`COPY t TO STDOUT CSV QUOTE AS '|'`)
	require.NoError(t, err)
	assert.Equal(t, []any{byte('|'), byte('|'), ""}, []any{c.Quote, c.Escape, c.Null}, "the escape is the quote unless set")
	_, err = ParseCopy("COPY customers FROM STDIN")
	assert.Error(t, err)
}

func TestTargets(t *testing.T) {
	ssn := []string{"customers.ssn"}
	tests := map[string][][]string{
		"SELECT upper(email), c.ssn, count(*) OVER () FROM customers c WHERE email LIKE 'x'": {{"customers.email"}, ssn, {}},
		"SELECT 1 UNION SELECT 2": {{}},
		"UPDATE t SET a = 1":      nil,
		// Renaming never hides an origin: derived tables, CTEs (with and
		// without column lists), nesting, set operations, VALUES.
		"SELECT name FROM (SELECT translate(ssn, '0123456789', 'abcdefghij') AS name FROM customers) s": {ssn},
		"WITH s AS (SELECT translate(ssn, '0', 'a') AS name FROM customers) SELECT name FROM s":         {ssn},
		"WITH s(name) AS (SELECT ssn FROM customers) SELECT s.name FROM s":                              {ssn},
		"SELECT name FROM (SELECT ssn FROM customers) AS s(name)":                                       {ssn},
		"SELECT a FROM (SELECT b AS a FROM (SELECT ssn AS b FROM customers) x) y":                       {ssn},
		"SELECT name FROM customers UNION SELECT ssn FROM customers":                                    {{"customers.name", "customers.ssn"}},
		"SELECT x FROM (SELECT name AS x FROM customers UNION ALL SELECT ssn FROM customers) u":         {{"customers.name", "customers.ssn"}},
		"SELECT column1 FROM (VALUES ((SELECT ssn FROM customers LIMIT 1))) v":                          {ssn},
		"SELECT (SELECT translate(ssn, '1', '2') FROM customers LIMIT 1) AS name":                       {ssn},
		// Lateral joins and table functions.
		"SELECT x.v FROM customers c, LATERAL (SELECT upper(c.ssn) AS v) x":                     {ssn},
		"SELECT u FROM customers c, unnest(ARRAY[c.ssn]) AS u":                                  {{"customers.ssn", "customers.u"}}, // u might be a column of customers
		"SELECT t.a FROM customers c CROSS JOIN LATERAL jsonb_to_record(to_jsonb(c)) t(a text)": {{"customers.*", "customers.c"}},
		// A recursive CTE.
		"WITH RECURSIVE r(n, v) AS (SELECT 1, ssn FROM customers UNION ALL SELECT n + 1, v FROM r WHERE n < 2) SELECT v FROM r": {ssn},
		// Stars over known columns expand; whole rows are whole.
		"SELECT * FROM (SELECT id, translate(ssn, '1', '2') AS name FROM customers) s": {{"customers.id"}, ssn},
		"SELECT row_to_json(c) FROM customers c":                                       {{"customers.*", "customers.c"}},
		"SELECT c FROM customers c":                                                    {{"customers.*", "customers.c"}},
		"SELECT public.customers.email FROM public.customers":                          {{"public.customers.email"}},
		// A function that is not PostgreSQL's own may return anything.
		"SELECT my_fn(id) FROM customers": {{"?", "customers.id"}},
		// Outputs of RETURNING, cursors, prepared statements, COPY.
		"UPDATE customers SET name = 'x' WHERE id = 1 RETURNING translate(ssn, '1', '2') AS name": {ssn},
		"DECLARE cur CURSOR FOR SELECT translate(ssn, '1', '2') AS name FROM customers":           {ssn},
		"PREPARE p AS SELECT name FROM (SELECT ssn AS name FROM customers) s":                     {ssn},
		"COPY (SELECT translate(ssn, '1', '2') AS name FROM customers) TO STDOUT":                 {ssn},
		"SELECT j.name FROM (customers c JOIN orders o ON o.customer_id = c.id) AS j WHERE true":  {{"customers.*", "orders.*"}},
	}
	for q, want := range tests {
		r, err := Classify(q)
		require.NoError(t, err, q)
		got := r.Statements[0].Targets
		for i := range got {
			if got[i] == nil {
				got[i] = []string{}
			}
		}
		for i := range want {
			if want[i] == nil {
				want[i] = []string{}
			}
		}
		assert.Equal(t, want, got, q)
	}
	// A star over a base table cannot be lined up: the sources say what
	// every column may hold.
	r, err := Classify("SELECT * FROM customers")
	require.NoError(t, err)
	assert.Nil(t, r.Statements[0].Targets)
	assert.Equal(t, []string{"customers.*"}, r.Statements[0].Sources)
}

func TestCopies(t *testing.T) {
	tests := map[string][]string{
		"UPDATE customers SET name = ssn WHERE id = 1":                     {"customers.ssn"},
		"UPDATE t SET x = c.email FROM customers c WHERE c.id = t.id":      {"customers.email"},
		"INSERT INTO notes (body) SELECT ssn FROM customers":               {"customers.ssn"},
		"INSERT INTO notes VALUES ((SELECT email FROM customers LIMIT 1))": {"customers.email"},
		"SELECT pg_notify('ch', translate(ssn, '1', '2')) FROM customers":  {"customers.ssn"},
		"NOTIFY ch, 'literal'":                                                                        nil,
		"SELECT log_it(email) FROM customers":                                                         {"customers.email"},
		"CREATE TABLE t AS SELECT ssn FROM customers":                                                 {"customers.ssn"},
		"SELECT ssn INTO t FROM customers":                                                            {"customers.ssn"},
		"CREATE VIEW v AS SELECT translate(ssn, '1', '2') AS name FROM customers":                     {"customers.ssn"},
		"MERGE INTO t USING customers c ON t.id = c.id WHEN MATCHED THEN UPDATE SET v = c.ssn":        {"customers.ssn"},
		"MERGE INTO t USING customers c ON t.id = c.id WHEN NOT MATCHED THEN INSERT VALUES (c.email)": {"customers.email"},
		"WITH x AS (SELECT ssn FROM customers) INSERT INTO t SELECT * FROM x":                         {"customers.ssn"},
		"INSERT INTO t SELECT * FROM customers":                                                       {"customers.*"},
		"CALL keep(( SELECT ssn FROM customers LIMIT 1 ))":                                            {"customers.ssn"},
		"EXPLAIN ANALYZE INSERT INTO t SELECT ssn FROM customers":                                     {"customers.ssn"},
		// Filtering on a masked column copies nothing; neither does
		// EXPLAIN without ANALYZE, nor a builtin function.
		"UPDATE t SET x = 1 WHERE id = (SELECT id FROM customers WHERE ssn = '1')": nil,
		"EXPLAIN INSERT INTO t SELECT ssn FROM customers":                          nil,
		"SELECT upper(ssn) FROM customers":                                         nil,
		"UPDATE t SET updated_at = now() WHERE id = 1":                             nil,
	}
	for q, want := range tests {
		r, err := Classify(q)
		require.NoError(t, err, q)
		assert.Equal(t, want, r.Statements[0].Copies, q)
	}
}

// What once lined masked values up with unmasked columns' names: a star
// over a join that merges columns (USING, NATURAL) renamed by position, a
// composite's fields expanded by a star, a WITH RECURSIVE item read by one
// before it.
func TestLineageFollowsMergedAndForwardColumns(t *testing.T) {
	for _, q := range []string{
		"SELECT c2 FROM (SELECT * FROM (SELECT id FROM customers) a JOIN (SELECT id, translate(ssn, '0123456789', 'abcdefghij') AS s FROM customers) b USING (id)) AS x(c1, c2)",
		"SELECT rank() OVER w FROM customers WINDOW w AS (ORDER BY ssn)",
		"SELECT rank() OVER w2 FROM customers WINDOW w1 AS (ORDER BY ssn), w2 AS (w1 ROWS UNBOUNDED PRECEDING)",
		"SELECT rank() OVER (w ROWS UNBOUNDED PRECEDING) FROM customers WINDOW w AS (PARTITION BY email ORDER BY ssn)",
		"SELECT c2 FROM (SELECT * FROM (SELECT id FROM customers) a NATURAL JOIN (SELECT id, translate(ssn, '0', 'a') AS s FROM customers) b) AS x(c1, c2)",
		"WITH x(c1, c2) AS (SELECT * FROM (SELECT id FROM customers) a JOIN (SELECT id, translate(ssn, '0', 'a') AS s FROM customers) b USING (id)) SELECT c2 FROM x",
		"SELECT c3 FROM (SELECT *, (ROW(1, 2)).* FROM (SELECT id FROM customers) a JOIN (SELECT id, translate(ssn, '0', 'a') AS s FROM customers) b USING (id)) AS x(c1, c2, c3)",
		"WITH RECURSIVE a AS (SELECT v FROM b), b AS (SELECT translate(ssn, '0123456789', 'abcdefghij') AS v FROM customers) SELECT v FROM a",
		"WITH RECURSIVE a AS (SELECT v FROM b), b AS (SELECT v FROM c), c AS (SELECT translate(ssn, '0', 'a') AS v FROM customers) SELECT v FROM a",
	} {
		r, err := Classify(q)
		require.NoError(t, err, q)
		st := r.Statements[0]
		require.NotEmpty(t, st.Targets, q)
		assert.Contains(t, st.Targets[0], "customers.ssn", q)
	}
	// A star over a merging join is not lined up; over a plain one it is.
	r, err := Classify("SELECT * FROM (SELECT id FROM customers) a JOIN (SELECT id, ssn FROM customers) b USING (id)")
	require.NoError(t, err)
	assert.Nil(t, r.Statements[0].Targets)
	r, err = Classify("SELECT * FROM (SELECT id FROM customers) a JOIN (SELECT id, ssn FROM customers) b ON a.id = b.id")
	require.NoError(t, err)
	assert.Equal(t, [][]string{{"customers.id"}, {"customers.id"}, {"customers.ssn"}}, r.Statements[0].Targets)
}

// A rule copies what its actions read wherever they write; code Sluice
// cannot see into counts as reading anything.
func TestRulesCopyAndUnknownCodeIsAnInput(t *testing.T) {
	r, err := Classify("CREATE RULE r AS ON INSERT TO t DO ALSO INSERT INTO leak SELECT translate(ssn, '0123456789', 'abcdefghij') FROM customers")
	require.NoError(t, err)
	assert.Contains(t, r.Statements[0].Copies, "customers.ssn")
	r, err = Classify("CREATE RULE r AS ON UPDATE TO t DO ALSO (UPDATE leak SET v = (SELECT email FROM customers LIMIT 1); NOTIFY ch)")
	require.NoError(t, err)
	assert.Contains(t, r.Statements[0].Copies, "customers.email")
	r, err = Classify("CREATE RULE r AS ON INSERT TO t DO ALSO SELECT ssn FROM customers")
	require.NoError(t, err)
	assert.Empty(t, r.Statements[0].Copies, "the rows a rule's SELECT adds are masked where they come out")
	// NEW and OLD are the rule's table.
	r, err = Classify("CREATE RULE r AS ON INSERT TO t DO ALSO INSERT INTO log VALUES (NEW.x)")
	require.NoError(t, err)
	assert.Equal(t, []string{"t.x"}, r.Statements[0].Copies)
	// An ON SELECT rule makes its table a view of what it selects.
	r, err = Classify(`CREATE RULE "_RETURN" AS ON SELECT TO v DO INSTEAD SELECT translate(ssn, '0', 'a') AS x FROM customers`)
	require.NoError(t, err)
	assert.Contains(t, r.Statements[0].Copies, "customers.ssn")
	// Row security's expressions run on every later read of the table.
	r, err = Classify("CREATE POLICY p ON o USING ((SELECT name FROM customers WHERE id = 1)::int > 0)")
	require.NoError(t, err)
	assert.Contains(t, r.Statements[0].Copies, "customers.name")
	r, err = Classify("ALTER POLICY p ON o WITH CHECK ((SELECT ssn FROM customers LIMIT 1) <> '')")
	require.NoError(t, err)
	assert.Contains(t, r.Statements[0].Copies, "customers.ssn")
	r, err = Classify("CREATE POLICY p ON o USING (owner = current_user)")
	require.NoError(t, err)
	assert.Empty(t, r.Statements[0].Copies)
	for _, q := range []string{"SELECT 1 WHERE app_fn(1)", "SELECT 1 FROM app_fn() x", "CALL proc(1)"} {
		r, err = Classify(q)
		require.NoError(t, err, q)
		assert.Contains(t, r.Statements[0].Inputs, Unknown, q)
	}
}

// Nested WITH RECURSIVE chains are resolved again and again until nothing
// new appears: past a bound of work the statement is opaque, not slow.
func TestLineageWorkIsBounded(t *testing.T) {
	q := "SELECT translate(ssn, '0', 'a') AS v FROM customers"
	for level := 0; level < 4; level++ {
		var ctes []string
		for i := 0; i < 12; i++ {
			from := fmt.Sprintf("c%d", i+1)
			if i == 11 {
				from = "(" + q + ") z"
			}
			ctes = append(ctes, fmt.Sprintf("c%d AS (SELECT v FROM %s)", i, from))
		}
		q = "WITH RECURSIVE " + strings.Join(ctes, ", ") + " SELECT v FROM c0"
	}
	r, err := Classify(q)
	require.NoError(t, err)
	require.NotEmpty(t, r.Statements[0].Targets)
	assert.True(t, slices.Contains(r.Statements[0].Targets[0], "customers.ssn") || slices.Contains(r.Statements[0].Targets[0], Unknown))
}
