package sqlclass

import (
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
	assert.Equal(t, &Copy{Table: "customers", Format: "text", Delimiter: '\t'}, c)
	c, err = ParseCopy("COPY public.customers (email, name) TO STDOUT WITH (FORMAT csv, HEADER)")
	require.NoError(t, err)
	assert.Equal(t, &Copy{Table: "public.customers", Columns: []string{"email", "name"}, Format: "csv", Delimiter: ','}, c)
	c, err = ParseCopy("COPY (SELECT ssn FROM customers) TO STDOUT (FORMAT binary)")
	require.NoError(t, err)
	assert.True(t, c.Query)
	assert.Equal(t, "binary", c.Format)
	c, err = ParseCopy("COPY customers TO STDOUT DELIMITER '|'")
	require.NoError(t, err)
	assert.Equal(t, byte('|'), c.Delimiter)
	_, err = ParseCopy("COPY customers FROM STDIN")
	assert.Error(t, err)
}

func TestTargets(t *testing.T) {
	tests := map[string][][]string{
		"SELECT upper(email), c.ssn, count(*) OVER () FROM customers c WHERE email LIKE 'x'": {{"email"}, {"c.ssn"}, nil},
		"SELECT *, (SELECT ssn FROM customers LIMIT 1) FROM orders":                          {{"*"}, {"ssn"}},
		"SELECT 1 UNION SELECT 2": nil,
		"UPDATE t SET a = 1":      nil,
	}
	for q, want := range tests {
		r, err := Classify(q)
		require.NoError(t, err, q)
		assert.Equal(t, want, r.Statements[0].Targets, q)
	}
}
