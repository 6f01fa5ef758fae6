package sqlshape

import (
	"testing"

	"github.com/stretchr/testify/assert"
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
