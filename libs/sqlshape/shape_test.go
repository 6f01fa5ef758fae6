package sqlshape

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestShape(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"SELECT abalance FROM pgbench_accounts WHERE aid = 12345;", "SELECT abalance FROM pgbench_accounts WHERE aid = $1;", true},
		{"SELECT * FROM t WHERE a = 'x''y' AND b = 1.5e3", "SELECT * FROM t WHERE a = $1 AND b = $2", true},
		{"SELECT * FROM t WHERE a = $1 AND b = 7", "SELECT * FROM t WHERE a = $1 AND b = $2", true},
		{"SELECT $2, 3", "SELECT $2, $3", true},
		{`SELECT "col 1", t2.x FROM "T" t2`, `SELECT "col 1", t2.x FROM "T" t2`, true},
		{"SELECT .5, 5., 1e-3", "SELECT $1, $2, $3", true},
		{"SELECT 'a\\' || 'b'", "SELECT $1 || $2", true},
		{"SELECT x::int FROM t LIMIT 10", "SELECT x::int FROM t LIMIT $1", true},
		{"SELECT t1.c1 FROM t1", "SELECT t1.c1 FROM t1", true},
		// Gives up:
		{"SELECT E'a\\'b'", "", false},
		{"SELECT U&'d\\0061'", "", false},
		{"SELECT $$x$$", "", false},
		{"SELECT $tag$x$tag$", "", false},
		{"SELECT 1 -- comment", "", false},
		{"SELECT /* x */ 1", "", false},
		{"SELECT 'unterminated", "", false},
		{"SELECT 0x1F", "", false},
		{"SELECT 1_000", "", false},
		{"SELECT 'é'", "", false},
		{"SELECT B'101'", "", false},
		{"SELECT \x00", "", false},
	}
	for _, tc := range tests {
		got, ok := Shape(tc.in)
		assert.Equal(t, tc.ok, ok, tc.in)
		if tc.ok {
			assert.Equal(t, tc.want, got, tc.in)
		}
	}
}

// ShapeLiterals says where each replaced literal was and which parameter
// took its place: putting the literals back into the shape gives the text.
func TestShapeLiterals(t *testing.T) {
	for _, in := range []string{
		"SELECT abalance AS c7 FROM pgbench_accounts WHERE aid = 12345;",
		"SELECT * FROM t WHERE a = 'x''y' AND b = 1.5e3 AND c = $4",
		"SELECT .5, 5., 1e-3, 'a\\' || 'b'",
		"SELECT t1.c1 FROM t1",
	} {
		shape, lits, ok := ShapeLiterals(in)
		require.True(t, ok, in)
		want, _ := Shape(in)
		assert.Equal(t, want, shape, in)
		rebuilt := shape
		for i := len(lits.Offsets) - 1; i >= 0; i-- {
			param := fmt.Sprintf("$%d", lits.From+i)
			at := strings.LastIndex(rebuilt, param)
			require.GreaterOrEqual(t, at, 0, in)
			end, ok := literalEnd(in, lits.Offsets[i])
			require.True(t, ok, in)
			rebuilt = rebuilt[:at] + in[lits.Offsets[i]:end] + rebuilt[at+len(param):]
		}
		assert.Equal(t, in, rebuilt)
	}
	_, lits, _ := ShapeLiterals("SELECT $2, 3, 'x'")
	assert.Equal(t, Literals{Offsets: []int{11, 14}, From: 3}, lits)
	_, _, ok := ShapeLiterals("SELECT 1 -- comment")
	assert.False(t, ok)
}

// literalEnd is where the literal starting at i ends.
func literalEnd(s string, i int) (int, bool) {
	if s[i] == '\'' {
		return skipString(s, i)
	}
	return skipNumber(s, i)
}

func FuzzShape(f *testing.F) {
	for _, s := range []string{"SELECT 1", "SELECT 'a''b'", `SELECT "x"`, "SELECT $1, 2", "a.b 1.e5 'x'"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out, ok := Shape(s)
		if !ok {
			return
		}
		// A shape has no string literal left and is stable.
		again, ok2 := Shape(out)
		if !ok2 || again != out {
			t.Fatalf("shape not idempotent: %q -> %q -> %q", s, out, again)
		}
	})
}

func BenchmarkShape(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		Shape("SELECT abalance FROM pgbench_accounts WHERE aid = 12345;")
	}
}
