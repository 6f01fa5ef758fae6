package pgmask

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"sluice.dev/sluice/libs/pglocal"
	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
)

func TestResolveCatalogNothingMasked(t *testing.T) {
	// No masked column: the target is not asked (no connection needed).
	cat, err := ResolveCatalog(context.Background(), nil, nil)
	require.NoError(t, err)
	assert.Empty(t, cat.byName)
	cat, err = ResolveCatalog(context.Background(), nil, []string{"nodot"})
	require.NoError(t, err)
	assert.Empty(t, cat.tables)
}

// TestResolveCatalog resolves masked columns on a real PostgreSQL: by OID
// and attribute number, in every schema that has the table, through views
// of views, and tables by plain name only where one schema has them.
func TestResolveCatalog(t *testing.T) {
	if _, err := pglocal.FindBinDir(); err != nil {
		if os.Getenv("SLUICE_E2E_REQUIRED") == "1" {
			t.Fatal("PostgreSQL server binaries are required:", err)
		}
		t.Skip("no PostgreSQL server binaries")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "pgmask-test-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	srv, err := pglocal.Start(ctx, pglocal.Config{Dir: filepath.Join(dir, "data")})
	require.NoError(t, err)
	t.Cleanup(srv.Stop)
	require.NoError(t, srv.Exec(ctx, "postgres", `
CREATE TABLE customers (id int, gone text, email text, ssn text);
ALTER TABLE customers DROP COLUMN gone;
CREATE SCHEMA other;
CREATE TABLE other.customers (email text, id int);
CREATE TABLE orders (id int, note text, shout text GENERATED ALWAYS AS (upper(note)) STORED);
CREATE VIEW v AS SELECT id, upper(email) AS e FROM customers;
CREATE VIEW vv AS SELECT e AS shout, 1 AS one FROM v;
CREATE VIEW plain AS SELECT id FROM customers;
CREATE TABLE people (id int, ssn text) PARTITION BY RANGE (id);
CREATE TABLE people_low (x int, id int, ssn text);
ALTER TABLE people_low DROP COLUMN x;
ALTER TABLE people ATTACH PARTITION people_low FOR VALUES FROM (0) TO (100);
CREATE TABLE archive (id int, ssn text);
CREATE TABLE archive_2024 (note text) INHERITS (archive);
CREATE TABLE staff (id int, ssn text);
CREATE TABLE contractors (extra int) INHERITS (staff);
CREATE VIEW my_stats AS SELECT attname, histogram_bounds::text AS bounds FROM pg_stats;`))
	pc, err := pgconn.Connect(ctx, srv.SuperuserDSN("postgres"))
	require.NoError(t, err)
	defer pc.Close(ctx)

	rules := []*controlv1.Rule{{Name: "pii", Mask: &controlv1.MaskRule{Columns: []string{"customers.email", "public.customers.ssn", "orders.missing",
		"people.ssn", "archive.ssn", "contractors.ssn"}}}}
	cols := MaskColumns(rules)
	cat, err := ResolveCatalog(ctx, pc, cols)
	require.NoError(t, err)
	assert.Equal(t, byte('I'), pc.TxStatus(), "the connection is left idle")

	oid := func(rel string) uint32 {
		res, err := pc.Exec(ctx, "SELECT '"+rel+"'::regclass::oid").ReadAll()
		require.NoError(t, err)
		n, err := strconv.ParseUint(string(res[0].Rows[0][0]), 10, 32)
		require.NoError(t, err)
		return uint32(n)
	}
	pub, oth, v, vv := oid("public.customers"), oid("other.customers"), oid("v"), oid("vv")
	assert.ElementsMatch(t, []ColKey{{pub, 3}, {oth, 1}}, cat.byName["customers.email"], "every schema's customers.email, by attnum (dropped columns count)")
	assert.Equal(t, []ColKey{{pub, 4}}, cat.byName["public.customers.ssn"])
	assert.Empty(t, cat.byName["orders.missing"])

	assert.Nil(t, cat.Table("customers"), "two schemas have customers: the plain name is ambiguous")
	assert.Equal(t, []string{"id", "email", "ssn"}, cat.Table("public.customers"), "live columns in attnum order")
	assert.Equal(t, []string{"email", "id"}, cat.Table("Other.Customers"))
	assert.Equal(t, []string{"id", "note"}, cat.Table("orders"), "what COPY writes: no generated column")

	p := NewPlan(testMasker(t), decision(rules[0].GetMask()), cat)
	assert.Equal(t, "customers.email", p.whole[ColKey{pub, 3}])
	assert.Equal(t, "customers.email", p.whole[ColKey{oth, 1}])
	assert.Equal(t, "public.customers.ssn", p.whole[ColKey{pub, 4}])
	// Every column of a view that reads a masked column, through views.
	for _, k := range []ColKey{{v, 1}, {v, 2}, {vv, 1}, {vv, 2}} {
		assert.Contains(t, p.whole, k)
	}
	for _, name := range []string{"customers.ssn", "other.customers.email", "v.e", "public.v.id", "vv.one", "public.vv.shout"} {
		assert.True(t, p.MasksColumn(name), name)
	}
	assert.False(t, p.MasksColumn("plain.id"), "a view reading no masked column")
	assert.False(t, p.MasksColumn("customers.id"))
	assert.True(t, p.MasksRelation("vv"))
	assert.False(t, p.MasksRelation("plain"))

	// A partition or child table gives the masked column's rows, and so
	// does the parent of a masked child: the same column of each is masked.
	low, arch, staff := oid("people_low"), oid("archive_2024"), oid("staff")
	assert.Contains(t, p.whole, ColKey{low, 3}, "by name, not attnum (dropped columns count)")
	assert.Contains(t, p.whole, ColKey{arch, 2})
	assert.Contains(t, p.whole, ColKey{staff, 2}, "the parent of a masked child")
	assert.NotContains(t, p.whole, ColKey{low, 2}, "only the masked column")
	for _, name := range []string{"people_low.ssn", "archive_2024.ssn", "staff.ssn"} {
		assert.True(t, p.MasksColumn(name), name)
	}
	assert.False(t, p.MasksColumn("people_low.id"))

	// What the statistics sample, through pg_stats and a view of it.
	stats, mine := oid("pg_catalog.pg_stats"), oid("my_stats")
	assert.Contains(t, p.whole, ColKey{stats, 1})
	assert.Contains(t, p.whole, ColKey{mine, 2})
	assert.True(t, p.MasksColumn("my_stats.bounds"))
	assert.True(t, p.MasksColumn("pg_stats.most_common_vals"))
	none := NewPlan(testMasker(t), decision(&controlv1.MaskRule{Detectors: []string{"email"}}), cat)
	assert.NotContains(t, none.whole, ColKey{mine, 2}, "without masked columns nothing is derived")
}
