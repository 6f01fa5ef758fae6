package pgworker

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
)

// colKey identifies a table column as RowDescription does.
type colKey struct {
	table  uint32
	attnum int16
}

// catalog maps the mask rules' "table.column" names to the target's table
// OIDs and attribute numbers, resolved once per session at login, so that
// masking follows the column whatever the query calls it.
type catalog struct {
	// byName: rule column name ("customers.email", "public.customers.email")
	// to the columns it names.
	byName map[string][]colKey
	// tables: table name, plain and schema-qualified, to its live columns
	// in attnum order (for COPY).
	tables map[string][]string
	// tableCols: every column name of a table that has a masked column.
	tableCols map[string]bool
	// allCols: every column name of every user table and view, so that a
	// reference to something else (an alias, a derived table's column) is
	// recognised as unknown.
	allCols map[string]bool
}

// maskColumns lists the distinct "table.column" names in mask rules.
func maskColumns(rules []*controlv1.Rule) []string {
	seen := map[string]bool{}
	var out []string
	for _, r := range rules {
		for _, c := range r.GetMask().GetColumns() {
			c = strings.ToLower(strings.TrimSpace(c))
			if !seen[c] {
				seen[c] = true
				out = append(out, c)
			}
		}
	}
	return out
}

// resolveCatalog looks the masked columns up on the target.
func resolveCatalog(ctx context.Context, pc *pgconn.PgConn, columns []string) (*catalog, error) {
	cat := &catalog{byName: map[string][]colKey{}, tables: map[string][]string{}, tableCols: map[string]bool{}, allCols: map[string]bool{}}
	if len(columns) == 0 {
		return cat, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	all, err := pc.Exec(ctx, `SELECT DISTINCT a.attname FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r','p','v','m','f') AND a.attnum > 0 AND NOT a.attisdropped
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'`).ReadAll()
	if err != nil {
		return nil, fmt.Errorf("resolve column names: %w", err)
	}
	for _, r := range all {
		for _, row := range r.Rows {
			cat.allCols[string(row[0])] = true
		}
	}
	rels := map[string]bool{}
	for _, c := range columns {
		parts := strings.Split(c, ".")
		if len(parts) < 2 {
			continue
		}
		rels[parts[len(parts)-2]] = true
	}
	var lits []string
	for r := range rels {
		lits = append(lits, "'"+strings.ReplaceAll(r, "'", "''")+"'")
	}
	if len(lits) == 0 {
		return cat, nil
	}
	sql := `SELECT c.oid, n.nspname, c.relname, a.attnum, a.attname
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid
WHERE c.relname IN (` + strings.Join(lits, ",") + `) AND c.relkind IN ('r','p','v','m','f')
  AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY c.oid, a.attnum`
	res := pc.Exec(ctx, sql)
	rows, err := res.ReadAll()
	if err != nil {
		return nil, fmt.Errorf("resolve masked columns: %w", err)
	}
	wanted := map[string]bool{}
	for _, c := range columns {
		wanted[c] = true
	}
	plainOwner := map[string]uint64{} // a plain table name is usable only if one schema has it
	for _, r := range rows {
		for _, row := range r.Rows {
			oid, _ := strconv.ParseUint(string(row[0]), 10, 32)
			attnum, _ := strconv.ParseInt(string(row[3]), 10, 16)
			schema, table, col := string(row[1]), string(row[2]), string(row[4])
			k := colKey{table: uint32(oid), attnum: int16(attnum)}
			switch owner, seen := plainOwner[table]; {
			case !seen:
				plainOwner[table] = oid
				cat.tables[table] = append(cat.tables[table], col)
			case owner == oid:
				cat.tables[table] = append(cat.tables[table], col)
			default:
				delete(cat.tables, table)
				plainOwner[table] = 0
			}
			cat.tables[schema+"."+table] = append(cat.tables[schema+"."+table], col)
			cat.tableCols[col] = true
			for _, name := range []string{table + "." + col, schema + "." + table + "." + col} {
				if wanted[name] {
					cat.byName[name] = append(cat.byName[name], k)
				}
			}
		}
	}
	return cat, nil
}
