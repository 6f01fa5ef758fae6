package pgmask

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
	policyv1 "sluice.dev/sluice/proto/sluice/policy/v1"
)

// ColKey identifies a table column as RowDescription does: the table's OID
// and the column's attribute number.
type ColKey struct {
	Table  uint32
	Attnum int16
}

// Catalog maps the mask rules' "table.column" names to the target's table
// OIDs and attribute numbers, resolved on a target connection before it
// serves a session (the policy or the schema may have changed since the
// last time), so that masking follows the column whatever the query calls
// it. A nil Catalog resolves nothing: only the rules' own names count.
type Catalog struct {
	// byName: rule column name ("customers.email", "public.customers.email")
	// to the columns it names.
	byName map[string][]ColKey
	// tables: table name, plain and schema-qualified, to its live columns
	// in attnum order (for COPY).
	tables map[string][]string
	// spellings: every name of a masked column ("customers.ssn" and
	// "public.customers.ssn"), for matching lineage sources.
	spellings map[ColKey][]string
	// views: the columns of views (and materialized views) whose
	// definition reads a masked column, directly or through other views,
	// by the masked column. Lineage cannot see inside a view, so all of a
	// view's columns count as derived from what it reads.
	views map[ColKey][]viewCol
	// stats are the columns of the statistics catalogs (pg_statistic,
	// pg_statistic_ext_data, pg_stats, pg_stats_ext, pg_stats_ext_exprs):
	// samples of every table's values. Under any
	// masked column they count as masked, and so do the views over them
	// (pg_stats, and a user's view of pg_stats).
	stats []ColKey
	// asked are the rule column names it was resolved for.
	asked map[string]bool
}

// Covers reports whether the catalog was resolved for every column the
// decision masks. A plan on a catalog that does not cover its decision
// would pass the columns it was never told of: a decision made under a
// policy the worker's view has not received yet names them.
func (c *Catalog) Covers(d *policyv1.Decision) bool {
	for _, r := range d.GetMasks() {
		for _, col := range r.GetColumns() {
			if c == nil || !c.asked[strings.ToLower(strings.TrimSpace(col))] {
				return false
			}
		}
	}
	return true
}

// WithDecisionColumns is cols (from MaskColumns) with every column the
// decision masks that cols lacks added at the end; cols itself when it
// lacks none.
func WithDecisionColumns(cols []string, d *policyv1.Decision) []string {
	out := cols
	for _, r := range d.GetMasks() {
		for _, col := range r.GetColumns() {
			col = strings.ToLower(strings.TrimSpace(col))
			if !slices.Contains(out, col) {
				if len(out) == len(cols) {
					out = slices.Clone(cols)
				}
				out = append(out, col)
			}
		}
	}
	return out
}

// viewCol is a column of a view that derives from a masked column.
type viewCol struct {
	key   ColKey
	names []string // "v.col", "schema.v.col"
}

// Table returns the live columns of a table in attnum order, by its plain
// or schema-qualified name (compared in lower case, as the rules' names
// are): what a COPY without a column list sends, field by field. Only the
// tables (and views) a mask rule names are known, and a plain name that
// more than one schema holds has none: its layout would be a guess.
func (c *Catalog) Table(name string) []string {
	if c == nil {
		return nil
	}
	return c.tables[strings.ToLower(name)]
}

// MaskColumns lists the distinct "table.column" names in mask rules, in
// lower case: the columns ResolveCatalog looks up on a target.
func MaskColumns(rules []*controlv1.Rule) []string {
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

// ResolveCatalog looks the masked columns (from MaskColumns) up on the
// target, and the views that read them. It runs two queries on pc, which
// must be idle, and takes at most 10 seconds; an error means masking cannot
// be planned on this connection, which must then not be used.
func ResolveCatalog(ctx context.Context, pc *pgconn.PgConn, columns []string) (*Catalog, error) {
	return ResolveCatalogAfter(ctx, pc, columns, nil)
}

// ResolveCatalogAfter is ResolveCatalog given the target's previous
// resolution: a masked column keeps its mask by what it is (its table's
// OID and its attribute number), not only by its name. A column, table or
// schema renamed since (by a migration, a DBA) stays masked under every
// name it had and has, where masking by name would silently stop.
func ResolveCatalogAfter(ctx context.Context, pc *pgconn.PgConn, columns []string, prev *Catalog) (*Catalog, error) {
	cat := &Catalog{byName: map[string][]ColKey{}, tables: map[string][]string{},
		spellings: map[ColKey][]string{}, views: map[ColKey][]viewCol{}, asked: map[string]bool{}}
	for _, c := range columns {
		cat.asked[c] = true
	}
	if len(columns) == 0 {
		return cat, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
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
	// The tables masked before, whatever they are called now.
	oids := []string{"0"}
	if prev != nil {
		seen := map[uint32]bool{}
		for _, keys := range prev.byName {
			for _, k := range keys {
				if !seen[k.Table] {
					seen[k.Table] = true
					oids = append(oids, strconv.FormatUint(uint64(k.Table), 10))
				}
			}
		}
	}
	sql := `SELECT c.oid, n.nspname, c.relname, a.attnum, a.attname, a.attgenerated <> ''
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid
WHERE (c.relname IN (` + strings.Join(lits, ",") + `) OR c.oid IN (` + strings.Join(oids, ",") + `)) AND c.relkind IN ('r','p','v','m','f')
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
			k := ColKey{Table: uint32(oid), Attnum: int16(attnum)}
			// A table's layout is what COPY without a column list writes:
			// generated columns are not in it.
			layout := string(row[5]) != "t"
			switch owner, seen := plainOwner[table]; {
			case !seen:
				plainOwner[table] = oid
				if layout {
					cat.tables[table] = append(cat.tables[table], col)
				}
			case owner == oid:
				if layout {
					cat.tables[table] = append(cat.tables[table], col)
				}
			default:
				delete(cat.tables, table)
				plainOwner[table] = 0
			}
			if layout {
				cat.tables[schema+"."+table] = append(cat.tables[schema+"."+table], col)
			}
			names := []string{table + "." + col, schema + "." + table + "." + col}
			for _, name := range names {
				if wanted[name] {
					cat.byName[name] = append(cat.byName[name], k)
					cat.spellings[k] = names
				}
			}
		}
	}
	// A column masked before that its name no longer finds keeps its mask
	// where it still is, under its new names too.
	if prev != nil {
		present := map[ColKey][]string{}
		for _, r := range rows {
			for _, row := range r.Rows {
				oid, _ := strconv.ParseUint(string(row[0]), 10, 32)
				attnum, _ := strconv.ParseInt(string(row[3]), 10, 16)
				schema, table, col := string(row[1]), string(row[2]), string(row[4])
				present[ColKey{Table: uint32(oid), Attnum: int16(attnum)}] = []string{table + "." + col, schema + "." + table + "." + col}
			}
		}
		for _, c := range columns {
			if len(cat.byName[c]) > 0 {
				continue
			}
			for _, k := range prev.byName[c] {
				if now, ok := present[k]; ok {
					cat.byName[c] = append(cat.byName[c], k)
					cat.spellings[k] = sortedUnique(append(append([]string{}, prev.spellings[k]...), now...))
				}
			}
		}
	}
	if err := cat.resolveStatistics(ctx, pc); err != nil {
		return nil, err
	}
	if err := cat.resolveViews(ctx, pc); err != nil {
		return nil, err
	}
	return cat, nil
}

// resolveStatistics finds the columns of the statistics catalogs and of
// the system views over them (whose dependencies PostgreSQL does not
// record), to be followed into a user's views over them as masked columns
// are.
func (cat *Catalog) resolveStatistics(ctx context.Context, pc *pgconn.PgConn) error {
	res, err := pc.Exec(ctx, `SELECT a.attrelid, a.attnum, c.relname, a.attname
FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
WHERE a.attrelid IN ('pg_catalog.pg_statistic'::regclass, 'pg_catalog.pg_statistic_ext_data'::regclass,
    'pg_catalog.pg_stats'::regclass, 'pg_catalog.pg_stats_ext'::regclass, 'pg_catalog.pg_stats_ext_exprs'::regclass)
  AND a.attnum > 0 AND NOT a.attisdropped`).ReadAll()
	if err != nil {
		return fmt.Errorf("resolve the statistics catalogs: %w", err)
	}
	for _, r := range res {
		for _, row := range r.Rows {
			rel, _ := strconv.ParseUint(string(row[0]), 10, 32)
			att, _ := strconv.ParseInt(string(row[1]), 10, 16)
			k := ColKey{Table: uint32(rel), Attnum: int16(att)}
			cat.stats = append(cat.stats, k)
			cat.spellings[k] = []string{string(row[2]) + "." + string(row[3]), "pg_catalog." + string(row[2]) + "." + string(row[3])}
		}
	}
	return nil
}

// resolveViews finds the views that read masked columns, directly or
// through other views (PostgreSQL records what a view's rule depends on),
// and every column of each; and the same columns of the partitions, child
// tables and parents of a masked column's table, which give its rows too.
func (cat *Catalog) resolveViews(ctx context.Context, pc *pgconn.PgConn) error {
	if len(cat.spellings) == 0 {
		return nil
	}
	var rels, atts []string
	for k := range cat.spellings {
		rels = append(rels, strconv.FormatUint(uint64(k.Table), 10))
		atts = append(atts, strconv.Itoa(int(k.Attnum)))
	}
	sql := `WITH RECURSIVE tainted(root_rel, root_att, relid, attnum) AS (
  SELECT r, a, r, a FROM unnest(ARRAY[` + strings.Join(rels, ",") + `]::oid[], ARRAY[` + strings.Join(atts, ",") + `]::int2[]) AS m(r, a)
  UNION
  SELECT t.root_rel, t.root_att, e.relid, e.attnum
  FROM tainted t
  CROSS JOIN LATERAL (
    -- every column of a view whose rule reads the column
    SELECT rw.ev_class AS relid, va.attnum
    FROM pg_catalog.pg_depend d
    JOIN pg_catalog.pg_rewrite rw ON rw.oid = d.objid AND rw.ev_class <> t.relid
    JOIN pg_catalog.pg_attribute va ON va.attrelid = rw.ev_class AND va.attnum > 0 AND NOT va.attisdropped
    WHERE d.refclassid = 'pg_catalog.pg_class'::regclass AND d.refobjid = t.relid
      AND (d.refobjsubid = t.attnum OR d.refobjsubid = 0) AND d.classid = 'pg_catalog.pg_rewrite'::regclass
    UNION ALL
    -- the column of the same name in a partition or child table, and in
    -- the parent that gives its rows
    SELECT o.relid, oa.attnum
    FROM pg_catalog.pg_attribute pa
    JOIN (SELECT inhrelid AS relid FROM pg_catalog.pg_inherits WHERE inhparent = t.relid
          UNION ALL SELECT inhparent FROM pg_catalog.pg_inherits WHERE inhrelid = t.relid) o ON true
    JOIN pg_catalog.pg_attribute oa ON oa.attrelid = o.relid AND oa.attname = pa.attname AND NOT oa.attisdropped
    WHERE pa.attrelid = t.relid AND pa.attnum = t.attnum
  ) e
)
SELECT t.root_rel, t.root_att, t.relid, t.attnum, n.nspname, c.relname, a.attname
FROM tainted t
JOIN pg_catalog.pg_class c ON c.oid = t.relid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_attribute a ON a.attrelid = t.relid AND a.attnum = t.attnum
WHERE t.relid <> t.root_rel`
	res, err := pc.Exec(ctx, sql).ReadAll()
	if err != nil {
		return fmt.Errorf("resolve views over masked columns: %w", err)
	}
	for _, r := range res {
		for _, row := range r.Rows {
			rootRel, _ := strconv.ParseUint(string(row[0]), 10, 32)
			rootAtt, _ := strconv.ParseInt(string(row[1]), 10, 16)
			rel, _ := strconv.ParseUint(string(row[2]), 10, 32)
			att, _ := strconv.ParseInt(string(row[3]), 10, 16)
			schema, view, col := string(row[4]), string(row[5]), string(row[6])
			root := ColKey{Table: uint32(rootRel), Attnum: int16(rootAtt)}
			cat.views[root] = append(cat.views[root], viewCol{key: ColKey{Table: uint32(rel), Attnum: int16(att)},
				names: []string{view + "." + col, schema + "." + view + "." + col}})
		}
	}
	return nil
}

func sortedUnique(s []string) []string {
	slices.Sort(s)
	return slices.Compact(s)
}
