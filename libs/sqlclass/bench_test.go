package sqlclass

import (
	"testing"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

var benchCases = []struct{ name, sql string }{
	{"select_join", "SELECT c.name, o.total FROM customers c JOIN orders o ON o.customer_id = c.id WHERE c.region = 'eu'"},
	{"update_where", "UPDATE accounts SET balance = balance - 10, updated_at = now() WHERE id = 42"},
	{"three_statements", "BEGIN; UPDATE accounts SET balance = 0 WHERE id = 1; COMMIT"},
}

func BenchmarkClassify(b *testing.B) {
	for _, c := range benchCases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Classify(c.sql); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkParserOnly measures what Classify spends in pg_query (Parse
// plus Fingerprint), to show the cost of the walk on top of it.
func BenchmarkParserOnly(b *testing.B) {
	for _, c := range benchCases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := pg_query.Parse(c.sql); err != nil {
					b.Fatal(err)
				}
				if _, err := pg_query.Fingerprint(c.sql); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
