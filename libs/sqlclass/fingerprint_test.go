package sqlclass

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func classify(t *testing.T, sql string) *Result {
	t.Helper()
	r, err := Classify(sql)
	require.NoError(t, err, sql)
	return r
}

func TestFingerprintIgnoresLiterals(t *testing.T) {
	pairs := [][2]string{
		{"SELECT * FROM customers WHERE id = 1", "SELECT * FROM customers WHERE id = 99"},
		{"SELECT * FROM customers WHERE name = 'alice'", "SELECT * FROM customers WHERE name = 'bob'"},
		{"UPDATE accounts SET balance = 10 WHERE id = 5", "UPDATE accounts SET balance = 0 WHERE id = 123"},
		{"select * from Customers where id=1", "SELECT *\n  FROM customers /* comment */ WHERE id = 2 -- x"},
		{"SELECT 1; DELETE FROM t WHERE id = 1", "SELECT 2; DELETE FROM t WHERE id = 3"},
		{"INSERT INTO t VALUES (1, 'a')", "INSERT INTO t VALUES (2, 'b')"},
		{"SELECT * FROM t WHERE ts > '2020-01-01'::timestamptz", "SELECT * FROM t WHERE ts > '1999-01-01'::timestamptz"},
		{"SET ROLE alice", "SET ROLE bob"},
		{"SELECT pg_read_file('/etc/passwd')", "SELECT pg_read_file('/etc/hosts')"},
		{"DELETE FROM t WHERE 1 = 1", "DELETE FROM t WHERE 2 = 2"},
	}
	for _, p := range pairs {
		a, b := classify(t, p[0]), classify(t, p[1])
		require.Equal(t, a.QueryFingerprint, b.QueryFingerprint, "QueryFingerprint %q vs %q", p[0], p[1])
		require.Equal(t, a.Fingerprint, b.Fingerprint, "Fingerprint %q vs %q", p[0], p[1])
	}
}

func TestFingerprintSeesShape(t *testing.T) {
	pairs := [][2]string{
		{"SELECT * FROM customers WHERE id = 1", "SELECT * FROM orders WHERE id = 1"},
		{"SELECT * FROM customers WHERE id = 1", "SELECT * FROM customers WHERE cid = 1"},
		{"SELECT * FROM customers WHERE id = 1", "SELECT * FROM customers WHERE id <> 1"},
		{"SELECT * FROM customers WHERE id = 1", "SELECT * FROM customers"},
		{"SELECT * FROM customers", "SELECT * FROM public.customers"},
		{"SELECT lower(x) FROM t", "SELECT upper(x) FROM t"},
		{"DELETE FROM t WHERE id = 1", "UPDATE t SET a = 1 WHERE id = 1"},
		{"SELECT 1", "SELECT 1; SELECT 1"},
		{"SET ROLE alice", "SET search_path = alice"},
		{"UPDATE t SET a = 1 WHERE id = 1", "UPDATE t SET b = 1 WHERE id = 1"},
	}
	for _, p := range pairs {
		a, b := classify(t, p[0]), classify(t, p[1])
		require.NotEqual(t, a.QueryFingerprint, b.QueryFingerprint, "QueryFingerprint %q vs %q", p[0], p[1])
		require.NotEqual(t, a.Fingerprint, b.Fingerprint, "Fingerprint %q vs %q", p[0], p[1])
	}
}

// TestFingerprintBlindSpots lists statement pairs that pg_query's
// fingerprint cannot tell apart although their classification differs. A
// decision cached by QueryFingerprint would be replayed for the dangerous
// one; Fingerprint must differ, and both must be literal_sensitive.
func TestFingerprintBlindSpots(t *testing.T) {
	deep := func(n int, inner string) string {
		return "SELECT " + strings.Repeat("lower(", n) + inner + strings.Repeat(")", n)
	}
	pairs := [][2]string{
		{"BEGIN READ ONLY", "BEGIN READ WRITE"},
		{"BEGIN", "BEGIN READ WRITE"},
		{"SET TRANSACTION READ ONLY", "SET TRANSACTION READ WRITE"},
		{"SET default_transaction_read_only = on", "SET default_transaction_read_only = off"},
		{"SELECT set_config('application_name', 'x', false)", "SELECT set_config('role', 'postgres', false)"},
		{"SELECT set_config('application_name', 'x', false)", "SELECT set_config('search_path', 'evil', false)"},
		{"SELECT * FROM orders_2024", "SELECT * FROM orders_1999"},
		{"SELECT * FROM t01", "SELECT * FROM t99"},
		{"EXECUTE harmless", "EXECUTE wipe"},
		{"DEALLOCATE a", "DEALLOCATE b"},
		{"FETCH ALL FROM a", "FETCH ALL FROM b"},
		{"CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'", "CREATE FUNCTION f() RETURNS int LANGUAGE c AS '/tmp/x.so', 'f'"},
		{"UPDATE t AS a SET x = 1 FROM u AS b WHERE b.id = 5", "UPDATE t AS b SET x = 1 FROM u AS a WHERE b.id = 5"},
		{"CREATE TEMP TABLE a AS SELECT 1", "CREATE TEMP TABLE b AS SELECT 1"},
		{"DO $$ BEGIN NULL; END $$", "DO LANGUAGE plpython3u $$ import os $$"},
		{"DELETE FROM t WHERE EXISTS (SELECT 1 FROM u AS v WHERE t.x = 1)", "DELETE FROM t WHERE EXISTS (SELECT 1 FROM u AS t WHERE t.x = 1)"},
		{deep(120, "pg_sleep(1)"), deep(120, "pg_read_file('/etc/passwd')")},
	}
	for _, p := range pairs {
		a, b := classify(t, p[0]), classify(t, p[1])
		require.Equal(t, a.QueryFingerprint, b.QueryFingerprint, "expected a pg_query blind spot: %q vs %q", p[0], p[1])
		require.False(t, reflect.DeepEqual(stripText(a), stripText(b)), "classifications should differ: %q vs %q", p[0], p[1])
		require.NotEqual(t, a.Fingerprint, b.Fingerprint, "Fingerprint must differ: %q vs %q", p[0], p[1])
		require.True(t, a.HasFlag(FlagLiteralSensitive), "%q must be literal_sensitive", p[0])
		require.True(t, b.HasFlag(FlagLiteralSensitive), "%q must be literal_sensitive", p[1])
	}
}

// TestDeepTreesAreLiteralSensitive checks the depth threshold against
// pg_query's fingerprint cut-off for several kinds of nesting: whenever two
// statements that differ only in their innermost call share a
// QueryFingerprint, both must be literal_sensitive.
func TestDeepTreesAreLiteralSensitive(t *testing.T) {
	shapes := map[string]func(n int, inner string) string{
		"calls": func(n int, inner string) string {
			return "SELECT " + strings.Repeat("lower(", n) + inner + strings.Repeat(")", n)
		},
		"subqueries": func(n int, inner string) string {
			s := "SELECT " + inner
			for i := range n {
				s = fmt.Sprintf("SELECT * FROM (%s) s%d", s, i)
			}
			return s
		},
		"scalar_subqueries": func(n int, inner string) string {
			return strings.Repeat("SELECT (", n) + "SELECT " + inner + strings.Repeat(")", n)
		},
		"ctes": func(n int, inner string) string {
			s := "SELECT " + inner
			for range n {
				s = "WITH c AS (" + s + ") SELECT * FROM c"
			}
			return s
		},
		"explain_analyze": func(n int, inner string) string {
			return "EXPLAIN ANALYZE " + strings.Repeat("SELECT (", n) + "SELECT " + inner + strings.Repeat(")", n)
		},
		"insert_values": func(n int, inner string) string {
			return "INSERT INTO t VALUES (" + strings.Repeat("coalesce(", n) + inner + strings.Repeat(")", n) + ")"
		},
		"update_where_sublinks": func(n int, inner string) string {
			return "UPDATE t SET a = 1 WHERE id IN (" + strings.Repeat("SELECT id FROM u WHERE id IN (", n) +
				"SELECT " + inner + strings.Repeat(")", n) + ")"
		},
		"and_or": func(n int, inner string) string {
			return "SELECT 1 FROM t WHERE " + strings.Repeat("a = 1 AND (b = 2 OR (", n) + inner + " IS NULL" + strings.Repeat("))", n)
		},
		"case": func(n int, inner string) string {
			return "SELECT " + strings.Repeat("CASE WHEN x THEN ", n) + inner + strings.Repeat(" END", n)
		},
		"arrays": func(n int, inner string) string {
			return "SELECT " + strings.Repeat("ARRAY[", n) + inner + strings.Repeat("]", n)
		},
		"joins": func(n int, inner string) string {
			s := "SELECT * FROM ta JOIN tb ON " + inner + " IS NULL"
			for i := range n {
				s += " JOIN " + letters(i) + " ON true"
			}
			return s
		},
	}
	for name, shape := range shapes {
		collided := false
		for n := 1; n <= 110; n++ {
			a := classify(t, shape(n, "pg_sleep(1)"))
			b := classify(t, shape(n, "pg_read_file('x')"))
			if a.QueryFingerprint != b.QueryFingerprint {
				continue
			}
			collided = true
			require.True(t, a.HasFlag(FlagLiteralSensitive) && b.HasFlag(FlagLiteralSensitive),
				"%s depth %d: QueryFingerprint collides but not literal_sensitive", name, n)
			require.NotEqual(t, a.Fingerprint, b.Fingerprint, "%s depth %d", name, n)
		}
		require.True(t, collided, "%s: expected pg_query's depth cut-off to show up by depth 110", name)
	}
}

func stripText(r *Result) []Statement {
	out := make([]Statement, len(r.Statements))
	for i, s := range r.Statements {
		s.Text = ""
		out[i] = s
	}
	return out
}

// letters names the i-th table without digits (pg_query's fingerprint
// would fold digit runs).
func letters(i int) string {
	s := "j"
	for {
		s += string(rune('a' + i%26))
		i /= 26
		if i == 0 {
			return s
		}
	}
}
