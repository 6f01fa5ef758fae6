package sqlclass

import (
	"slices"
	"strconv"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Value lineage: where the values a statement returns, or writes, come
// from. A source is "rel.col" (a column of a relation as the statement
// names it: "customers.ssn", "public.customers.ssn"), "rel.*" (any column
// of it: a star, a whole-row reference, renamed columns), or Unknown.
//
// The resolver follows every output column through subqueries, CTEs
// (recursive ones included), set operations, VALUES, lateral joins and
// builtin functions back to base relations, so that renaming a column
// never hides its origin. What it cannot follow is Unknown, and counts as
// derived from anything: a call of a function that is not PostgreSQL's own
// (its body may read any table), a table function's columns, a reference
// it cannot resolve. Over-approximation is the rule: an unqualified column
// may come from every relation in scope.

// Unknown is the source of a value whose origin cannot be followed.
const Unknown = "?"

// lineage is the value lineage of one top-level statement.
type lineage struct {
	// targets: sources of each output column, in order; nil when the
	// statement returns no rows or its columns cannot be lined up (a star
	// over a base table).
	targets [][]string
	// sources: every source of every output value (the fallback when the
	// columns do not line up).
	sources []string
	// copies: sources of values the statement writes into tables, views,
	// notifications, or passes to functions whose effects are unknown.
	copies []string
	// inputs: every source any expression of the statement reads, WHERE
	// clauses included (an error can echo a value computed there).
	inputs []string
}

// output is one output column of a relation or query.
type output struct {
	name string
	src  []string
}

// relation is a FROM item in scope.
type relation struct {
	name string   // the name that qualifies its columns (alias or relation name)
	base string   // a base relation as written ("customers", "public.customers"); "" if derived
	outs []output // a derived relation's columns (subquery, CTE, VALUES)
	// opaque relations have columns the resolver cannot name (functions,
	// renamed base columns, XMLTABLE): any column derives from any.
	opaque bool
	any    []string
}

// star is the sources of any column of r.
func (r *relation) star() []string {
	switch {
	case r.opaque:
		return r.any
	case r.base != "":
		return []string{r.base + ".*"}
	}
	var out []string
	for _, o := range r.outs {
		out = append(out, o.src...)
	}
	return out
}

// column is the sources of column col of r, and whether r has it.
func (r *relation) column(col string) ([]string, bool) {
	switch {
	case r.opaque:
		return r.any, true
	case r.base != "":
		return []string{r.base + "." + col}, true
	}
	for _, o := range r.outs {
		if o.name == col {
			return o.src, true
		}
	}
	return nil, false
}

type scope struct {
	rels  []*relation
	ctes  map[string]*relation
	outer *scope
	// merged: a join in this FROM merges columns (USING, NATURAL), so an
	// unqualified star does not list its relations' columns one after
	// the other.
	merged bool
	// windows are the sources of the named windows of the SELECT
	// (WINDOW w AS (ORDER BY ssn)): a function over w derives from them.
	windows map[string][]string
}

// window returns the sources of the named window name.
func (s *scope) window(name string) []string {
	for sc := s; sc != nil; sc = sc.outer {
		if src, ok := sc.windows[name]; ok {
			return src
		}
	}
	return nil
}

func (s *scope) cte(name string) *relation {
	for sc := s; sc != nil; sc = sc.outer {
		if r, ok := sc.ctes[name]; ok {
			return r
		}
	}
	return nil
}

// resolver computes lineage, gathering copies as it goes.
type resolver struct {
	copies []string
	inputs []string
	depth  int
	// steps counts the queries resolved: a statement that takes more
	// (nested WITH RECURSIVE resolved again and again) is opaque.
	steps int
}

// maxLineageSteps bounds the work of one statement's lineage.
const maxLineageSteps = 20000

const maxLineageDepth = 200

// statementLineage computes the lineage of one top-level statement.
func statementLineage(stmt *pg_query.Node) lineage {
	r := &resolver{}
	var l lineage
	l.targets, l.sources = r.statement(stmt, nil)
	l.copies = sortUnique(r.copies)
	l.inputs = sortUnique(append(r.inputs, l.sources...))
	l.sources = sortUnique(l.sources)
	for i := range l.targets {
		l.targets[i] = sortUnique(l.targets[i])
	}
	return l
}

// statement resolves a statement's outputs (nil when it returns none or
// they do not line up) and every source they may hold.
func (r *resolver) statement(n *pg_query.Node, outer *scope) ([][]string, []string) {
	if n == nil {
		return nil, nil
	}
	switch x := n.Node.(type) {
	case *pg_query.Node_SelectStmt:
		outs, ok := r.selectStmt(x.SelectStmt, outer)
		all := allSources(outs)
		if x.SelectStmt.GetIntoClause() != nil {
			r.copies = append(r.copies, all...)
		}
		return targetsOf(outs, ok), all
	case *pg_query.Node_InsertStmt:
		return r.insert(x.InsertStmt, outer)
	case *pg_query.Node_UpdateStmt:
		return r.update(x.UpdateStmt, outer)
	case *pg_query.Node_DeleteStmt:
		return r.delete(x.DeleteStmt, outer)
	case *pg_query.Node_MergeStmt:
		return r.merge(x.MergeStmt, outer)
	case *pg_query.Node_DeclareCursorStmt:
		return r.statement(x.DeclareCursorStmt.GetQuery(), outer)
	case *pg_query.Node_PrepareStmt:
		return r.statement(x.PrepareStmt.GetQuery(), outer)
	case *pg_query.Node_CopyStmt:
		c := x.CopyStmt
		if c.GetQuery() != nil {
			return r.statement(c.GetQuery(), outer)
		}
		if rv := c.GetRelation(); rv != nil && !c.GetIsFrom() {
			return nil, []string{rangeVarName(rv) + ".*"}
		}
		return nil, nil
	case *pg_query.Node_ExplainStmt:
		// Only EXPLAIN ANALYZE runs the statement; its output is a plan.
		inner := &resolver{depth: r.depth}
		inner.statement(x.ExplainStmt.GetQuery(), outer)
		if explainAnalyze(x.ExplainStmt.GetOptions()) {
			r.copies = append(r.copies, inner.copies...)
			r.inputs = append(r.inputs, inner.inputs...)
		}
		return nil, nil
	case *pg_query.Node_CreateTableAsStmt:
		_, all := r.statement(x.CreateTableAsStmt.GetQuery(), outer)
		r.copies = append(r.copies, all...)
		return nil, nil
	case *pg_query.Node_ViewStmt:
		// A view exposes what it selects under names of its own.
		_, all := r.statement(x.ViewStmt.GetQuery(), outer)
		r.copies = append(r.copies, all...)
		return nil, nil
	case *pg_query.Node_RuleStmt:
		// A rule runs its actions with every matching statement from now
		// on: what a write among them copies is copied then. The rows a
		// SELECT among them adds to a write's result are of unknown origin
		// to that write, and masked there; but an ON SELECT rule makes its
		// table a view, whose rows are what it selects.
		rs := x.RuleStmt
		rel := rangeVarName(rs.GetRelation())
		sc := &scope{outer: outer, rels: []*relation{{name: "new", base: rel}, {name: "old", base: rel}}}
		if q := rs.GetWhereClause(); q != nil {
			r.expr(q.ProtoReflect(), sc)
		}
		for _, a := range rs.GetActions() {
			_, all := r.statement(a, sc)
			if rs.GetEvent() == pg_query.CmdType_CMD_SELECT {
				r.copies = append(r.copies, all...)
			}
		}
		return nil, nil
	case *pg_query.Node_CreatePolicyStmt:
		// Row security runs its expressions on every later read of the
		// table: what they read can come out in an error of that read.
		p := x.CreatePolicyStmt
		r.policyQuals(p.GetTable(), outer, p.GetQual(), p.GetWithCheck())
		return nil, nil
	case *pg_query.Node_AlterPolicyStmt:
		p := x.AlterPolicyStmt
		r.policyQuals(p.GetTable(), outer, p.GetQual(), p.GetWithCheck())
		return nil, nil
	case *pg_query.Node_CallStmt:
		// A procedure keeps what it is given, like a function of unknown
		// effect.
		fc := x.CallStmt.GetFunccall()
		r.inputs = append(r.inputs, Unknown) // and may read anything
		for _, a := range fc.GetArgs() {
			r.copies = append(r.copies, r.expr(a.ProtoReflect(), &scope{outer: outer})...)
		}
		return nil, nil
	}
	// Other statements return no rows of data (DDL, settings,
	// transaction control).
	return nil, nil
}

// policyQuals counts what a row security policy's expressions read (the
// table's own columns aside) as copies.
func (r *resolver) policyQuals(table *pg_query.RangeVar, outer *scope, quals ...*pg_query.Node) {
	sc := &scope{outer: outer, rels: []*relation{{name: table.GetRelname(), base: rangeVarName(table)}}}
	for _, q := range quals {
		if q == nil {
			continue
		}
		for _, src := range r.expr(q.ProtoReflect(), sc) {
			if !strings.HasPrefix(src, rangeVarName(table)+".") {
				r.copies = append(r.copies, src)
			}
		}
	}
}

func targetsOf(outs []output, ok bool) [][]string {
	if !ok {
		return nil
	}
	t := make([][]string, len(outs))
	for i, o := range outs {
		t[i] = append([]string{}, o.src...)
	}
	return t
}

func allSources(outs []output) []string {
	var all []string
	for _, o := range outs {
		all = append(all, o.src...)
	}
	return all
}

// withCTEs opens a scope holding a WITH clause's CTEs.
func (r *resolver) withCTEs(w *pg_query.WithClause, outer *scope) *scope {
	s := &scope{outer: outer}
	if w == nil {
		return s
	}
	s.ctes = map[string]*relation{}
	if w.GetRecursive() {
		r.recursiveCTEs(w, s)
		return s
	}
	for _, n := range w.GetCtes() {
		c := n.GetCommonTableExpr()
		if c == nil {
			continue
		}
		// Each sees only those before it.
		outs, ok := r.query(c.GetCtequery(), s)
		s.ctes[c.GetCtename()] = cteRelation(c, outs, ok)
	}
	return s
}

func cteRelation(c *pg_query.CommonTableExpr, outs []output, ok bool) *relation {
	if !ok {
		return &relation{name: c.GetCtename(), opaque: true, any: allSources(outs)}
	}
	return &relation{name: c.GetCtename(), outs: rename(outs, c.GetAliascolnames())}
}

// recursiveCTEs resolves the CTEs of a WITH RECURSIVE, each of which may
// refer to any of them, itself and those after it included: each is
// resolved against placeholders holding what is known so far of all of
// them, until nothing new appears. One still growing then is opaque.
func (r *resolver) recursiveCTEs(w *pg_query.WithClause, s *scope) {
	var ctes []*pg_query.CommonTableExpr
	placeholders := map[string]*relation{}
	for _, n := range w.GetCtes() {
		if c := n.GetCommonTableExpr(); c != nil {
			ctes = append(ctes, c)
			ph := &relation{name: c.GetCtename(), opaque: true}
			placeholders[c.GetCtename()] = ph
			s.ctes[c.GetCtename()] = ph
		}
	}
	type result struct {
		outs []output
		ok   bool
	}
	results := make([]result, len(ctes))
	settled := false
	for pass := 0; pass < 4+len(ctes) && !settled; pass++ {
		settled = true
		for i, c := range ctes {
			outs, ok := r.query(c.GetCtequery(), s)
			results[i] = result{outs, ok}
			ph := placeholders[c.GetCtename()]
			if next := sortUnique(append(append([]string{}, ph.any...), allSources(outs)...)); !slices.Equal(next, ph.any) {
				ph.any, settled = next, false
			}
		}
	}
	for i, c := range ctes {
		rel := cteRelation(c, results[i].outs, results[i].ok && settled)
		if !settled {
			rel.any = placeholders[c.GetCtename()].any
		}
		s.ctes[c.GetCtename()] = rel
	}
}

// query resolves a query used as a relation (a subquery, a CTE body): a
// SELECT, or a data-modifying statement's RETURNING.
func (r *resolver) query(n *pg_query.Node, outer *scope) ([]output, bool) {
	if sel := n.GetSelectStmt(); sel != nil {
		return r.selectStmt(sel, outer)
	}
	targets, all := r.statement(n, outer)
	if targets == nil {
		return []output{{name: "?", src: append(all, Unknown)}}, false
	}
	outs := make([]output, len(targets))
	for i, t := range targets {
		outs[i] = output{src: t}
	}
	return outs, true
}

// selectStmt resolves a SELECT's output columns; ok is false when they do
// not line up (a star over a base or opaque relation).
func (r *resolver) selectStmt(sel *pg_query.SelectStmt, outer *scope) ([]output, bool) {
	if r.depth++; r.depth > maxLineageDepth || r.steps >= maxLineageSteps {
		r.depth--
		r.inputs = append(r.inputs, Unknown)
		return []output{{name: "?", src: []string{Unknown}}}, false
	}
	r.steps++
	defer func() { r.depth-- }()
	s := r.withCTEs(sel.GetWithClause(), outer)
	if sel.GetOp() != pg_query.SetOperation_SETOP_NONE {
		l, lok := r.selectStmt(sel.GetLarg(), s)
		rr, rok := r.selectStmt(sel.GetRarg(), s)
		if !lok || !rok || len(l) != len(rr) {
			return []output{{name: "?", src: append(allSources(l), allSources(rr)...)}}, false
		}
		outs := make([]output, len(l))
		for i := range l {
			outs[i] = output{name: l[i].name, src: append(append([]string{}, l[i].src...), rr[i].src...)}
		}
		return outs, true
	}
	if vl := sel.GetValuesLists(); len(vl) > 0 {
		var outs []output
		for _, row := range vl {
			items := row.GetList().GetItems()
			for i, item := range items {
				if i >= len(outs) {
					outs = append(outs, output{name: "column" + strconv.Itoa(i+1)})
				}
				outs[i].src = append(outs[i].src, r.expr(item.ProtoReflect(), s)...)
			}
		}
		return outs, true
	}
	for _, f := range sel.GetFromClause() {
		r.from(f, s)
	}
	// WHERE, GROUP BY, HAVING, ORDER BY, window definitions: their values
	// do not reach the output, but their function calls may copy.
	for _, n := range []*pg_query.Node{sel.GetWhereClause(), sel.GetHavingClause()} {
		if n != nil {
			r.expr(n.ProtoReflect(), s)
		}
	}
	for _, n := range sel.GetWindowClause() {
		if w := n.GetWindowDef(); w != nil && w.GetName() != "" {
			if s.windows == nil {
				s.windows = map[string][]string{}
			}
			// A window may refine an earlier one (w2 AS (w1 ROWS ...)).
			s.windows[w.GetName()] = append(r.expr(n.ProtoReflect(), s), s.window(w.GetRefname())...)
		}
	}
	for _, list := range [][]*pg_query.Node{sel.GetGroupClause(), sel.GetSortClause(), sel.GetDistinctClause()} {
		for _, n := range list {
			if n != nil {
				r.expr(n.ProtoReflect(), s)
			}
		}
	}
	return r.targetList(sel.GetTargetList(), s)
}

// targetList resolves output expressions, expanding stars where the
// relations' columns are known.
func (r *resolver) targetList(list []*pg_query.Node, s *scope) ([]output, bool) {
	var outs []output
	ok := true
	for _, n := range list {
		rt := n.GetResTarget()
		if rt == nil {
			continue
		}
		val := rt.GetVal()
		if cr := val.GetColumnRef(); cr != nil && isStar(cr) {
			parts := refParts(cr)
			var rels []*relation
			if len(parts) == 1 && s.merged {
				// Merged join columns come first, once: which output is
				// which column is not known here.
				var all []string
				for _, rel := range s.rels {
					all = append(all, rel.star()...)
				}
				outs = append(outs, output{name: "*", src: all})
				ok = false
				continue
			}
			if len(parts) == 1 {
				rels = s.rels
			} else if rel := s.find(parts[len(parts)-2]); rel != nil {
				rels = []*relation{rel}
			} else {
				outs = append(outs, output{name: "?", src: []string{Unknown}})
				ok = false
				continue
			}
			for _, rel := range rels {
				if rel.base != "" || rel.opaque {
					outs = append(outs, output{name: "*", src: rel.star()})
					ok = false
					continue
				}
				outs = append(outs, rel.outs...)
			}
			continue
		}
		src := r.expr(val.ProtoReflect(), s)
		if ind := val.GetAIndirection(); ind != nil && expandsStar(ind) {
			// (expr).* is as many columns as the value has fields.
			outs = append(outs, output{name: "*", src: src})
			ok = false
			continue
		}
		outs = append(outs, output{name: targetName(rt), src: src})
	}
	return outs, ok
}

// expandsStar reports whether an indirection ends in .* (a composite
// value's fields, as columns).
func expandsStar(ind *pg_query.A_Indirection) bool {
	for _, n := range ind.GetIndirection() {
		if n.GetAStar() != nil {
			return true
		}
	}
	return false
}

// targetName is the name PostgreSQL gives an output column.
func targetName(rt *pg_query.ResTarget) string {
	if rt.GetName() != "" {
		return rt.GetName()
	}
	val := rt.GetVal()
	if cr := val.GetColumnRef(); cr != nil {
		parts := refParts(cr)
		return parts[len(parts)-1]
	}
	if fc := val.GetFuncCall(); fc != nil {
		if names := fc.GetFuncname(); len(names) > 0 {
			return names[len(names)-1].GetString_().GetSval()
		}
	}
	return "?column?"
}

// from adds a FROM item to s.
func (r *resolver) from(n *pg_query.Node, s *scope) {
	switch x := n.Node.(type) {
	case *pg_query.Node_RangeVar:
		s.rels = append(s.rels, r.rangeVar(x.RangeVar, s))
	case *pg_query.Node_RangeSubselect:
		rs := x.RangeSubselect
		outs, ok := r.query(rs.GetSubquery(), s)
		name := rs.GetAlias().GetAliasname()
		if !ok {
			s.rels = append(s.rels, &relation{name: name, opaque: true, any: allSources(outs)})
			return
		}
		s.rels = append(s.rels, &relation{name: name, outs: rename(outs, rs.GetAlias().GetColnames())})
	case *pg_query.Node_RangeFunction:
		rf := x.RangeFunction
		var any []string
		name := rf.GetAlias().GetAliasname()
		for _, f := range rf.GetFunctions() {
			items := f.GetList().GetItems()
			if len(items) > 0 {
				any = append(any, r.expr(items[0].ProtoReflect(), s)...)
				if name == "" {
					if fc := items[0].GetFuncCall(); fc != nil {
						if fn := fc.GetFuncname(); len(fn) > 0 {
							name = fn[len(fn)-1].GetString_().GetSval()
						}
					}
				}
			}
		}
		s.rels = append(s.rels, &relation{name: name, opaque: true, any: any})
	case *pg_query.Node_JoinExpr:
		j := x.JoinExpr
		before := len(s.rels)
		r.from(j.GetLarg(), s)
		r.from(j.GetRarg(), s)
		if len(j.GetUsingClause()) > 0 || j.GetIsNatural() {
			s.merged = true
		}
		if j.GetQuals() != nil {
			r.expr(j.GetQuals().ProtoReflect(), s)
		}
		if a := j.GetAlias(); a != nil {
			var any []string
			for _, rel := range s.rels[before:] {
				any = append(any, rel.star()...)
			}
			s.rels = append(s.rels, &relation{name: a.GetAliasname(), opaque: true, any: any})
		}
	case *pg_query.Node_RangeTableSample:
		if rv := x.RangeTableSample.GetRelation(); rv != nil {
			r.from(rv, s)
		}
	default:
		// XMLTABLE, JSON_TABLE and whatever else: columns of unknown
		// origin, derived from everything their expressions read.
		any := r.expr(n.ProtoReflect(), s)
		s.rels = append(s.rels, &relation{name: aliasOf(n), opaque: true, any: append(any, Unknown)})
	}
}

func aliasOf(n *pg_query.Node) string {
	m := n.ProtoReflect()
	fd := m.WhichOneof(nodeOneof)
	if fd == nil {
		return ""
	}
	inner := m.Get(fd).Message()
	if afd := inner.Descriptor().Fields().ByName("alias"); afd != nil && afd.Kind() == protoreflect.MessageKind {
		if a, ok := inner.Get(afd).Message().Interface().(*pg_query.Alias); ok {
			return a.GetAliasname()
		}
	}
	return ""
}

// rangeVar resolves a relation named in FROM: a CTE in scope, or a base
// table or view.
func (r *resolver) rangeVar(rv *pg_query.RangeVar, s *scope) *relation {
	name := rv.GetAlias().GetAliasname()
	if rv.GetSchemaname() == "" {
		if c := s.cte(rv.GetRelname()); c != nil {
			if name == "" {
				name = rv.GetRelname()
			}
			if c.opaque {
				return &relation{name: name, opaque: true, any: c.any}
			}
			return &relation{name: name, outs: rename(c.outs, rv.GetAlias().GetColnames())}
		}
	}
	if name == "" {
		name = rv.GetRelname()
	}
	base := rangeVarName(rv)
	if len(rv.GetAlias().GetColnames()) > 0 {
		// Columns renamed positionally: which is which is unknown here.
		return &relation{name: name, opaque: true, any: []string{base + ".*"}}
	}
	return &relation{name: name, base: base}
}

// rangeVarName spells a relation as the statement names it.
func rangeVarName(rv *pg_query.RangeVar) string {
	if rv.GetSchemaname() != "" {
		return rv.GetSchemaname() + "." + rv.GetRelname()
	}
	return rv.GetRelname()
}

func rename(outs []output, colnames []*pg_query.Node) []output {
	if len(colnames) == 0 {
		return outs
	}
	res := append([]output{}, outs...)
	for i, c := range colnames {
		if i < len(res) {
			res[i].name = c.GetString_().GetSval()
		}
	}
	return res
}

// find returns the relation named name, innermost scope first.
func (s *scope) find(name string) *relation {
	for sc := s; sc != nil; sc = sc.outer {
		for i := len(sc.rels) - 1; i >= 0; i-- {
			rel := sc.rels[i]
			if rel.name == name || (rel.base != "" && rel.base == name) {
				return rel
			}
		}
	}
	return nil
}

// expr collects the sources of an expression: column references resolved
// in s, subqueries, and function calls (a function that is not
// PostgreSQL's own adds Unknown, and its arguments are copies).
func (r *resolver) expr(m protoreflect.Message, s *scope) []string {
	var out []string
	r.walkExpr(m, s, &out, 0)
	return out
}

func (r *resolver) walkExpr(m protoreflect.Message, s *scope, out *[]string, depth int) {
	if depth > 500 || !m.IsValid() {
		return
	}
	switch x := m.Interface().(type) {
	case *pg_query.ColumnRef:
		src := s.resolve(x)
		*out = append(*out, src...)
		r.inputs = append(r.inputs, src...)
		return
	case *pg_query.SubLink:
		if x.GetTestexpr() != nil {
			r.walkExpr(x.GetTestexpr().ProtoReflect(), s, out, depth+1)
		}
		outs, _ := r.query(x.GetSubselect(), s)
		*out = append(*out, allSources(outs)...)
		return
	case *pg_query.SelectStmt:
		outs, _ := r.selectStmt(x, s)
		*out = append(*out, allSources(outs)...)
		return
	case *pg_query.FuncCall:
		var args []string
		for _, fd := range []string{"args", "agg_order", "agg_filter", "over"} {
			f := x.ProtoReflect().Descriptor().Fields().ByName(protoreflect.Name(fd))
			r.walkField(x.ProtoReflect(), f, s, &args, depth+1)
		}
		if w := x.GetOver(); w != nil {
			// OVER w names the window; OVER (w ...) refines it.
			for _, name := range []string{w.GetName(), w.GetRefname()} {
				if name != "" {
					args = append(args, s.window(name)...)
				}
			}
		}
		*out = append(*out, args...)
		if !readOnlyFunction(funcParts(x), len(x.GetArgs())) {
			// Its body is unknown: it may read anything, and it may keep
			// what it is given.
			*out = append(*out, Unknown)
			r.inputs = append(r.inputs, Unknown)
			r.copies = append(r.copies, args...)
		}
		return
	}
	m.Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		r.walkField(m, fd, s, out, depth+1)
		return true
	})
}

func (r *resolver) walkField(m protoreflect.Message, fd protoreflect.FieldDescriptor, s *scope, out *[]string, depth int) {
	if fd == nil || fd.Kind() != protoreflect.MessageKind || !m.Has(fd) {
		return
	}
	v := m.Get(fd)
	if fd.IsList() {
		l := v.List()
		for i := range l.Len() {
			r.walkExpr(l.Get(i).Message(), s, out, depth)
		}
		return
	}
	r.walkExpr(v.Message(), s, out, depth)
}

// resolve finds the sources of a column reference.
func (s *scope) resolve(cr *pg_query.ColumnRef) []string {
	parts := refParts(cr)
	if len(parts) == 0 {
		return []string{Unknown}
	}
	col := parts[len(parts)-1]
	if len(parts) >= 2 {
		relName := parts[len(parts)-2]
		if len(parts) >= 3 {
			// schema.table.col: the relation as written, or its name.
			if rel := s.find(parts[len(parts)-3] + "." + relName); rel != nil {
				return refIn(rel, col)
			}
		}
		if rel := s.find(relName); rel != nil {
			return refIn(rel, col)
		}
		return []string{Unknown}
	}
	if col == "*" {
		var out []string
		for sc := s; sc != nil; sc = sc.outer {
			for _, rel := range sc.rels {
				out = append(out, rel.star()...)
			}
		}
		return out
	}
	// An unqualified name: a column of any relation in scope (the
	// resolver does not know base tables' columns), or a whole row.
	var out []string
	found := false
	for sc := s; sc != nil; sc = sc.outer {
		for _, rel := range sc.rels {
			if src, ok := rel.column(col); ok {
				out = append(out, src...)
				found = true
			}
			if rel.name == col {
				out = append(out, rel.star()...)
				found = true
			}
		}
	}
	if !found {
		return []string{Unknown}
	}
	return out
}

func refIn(rel *relation, col string) []string {
	if col == "*" {
		return rel.star()
	}
	if src, ok := rel.column(col); ok {
		return src
	}
	return []string{Unknown}
}

func refParts(cr *pg_query.ColumnRef) []string {
	parts := make([]string, 0, len(cr.GetFields()))
	for _, f := range cr.GetFields() {
		switch v := f.GetNode().(type) {
		case *pg_query.Node_String_:
			parts = append(parts, v.String_.GetSval())
		case *pg_query.Node_AStar:
			parts = append(parts, "*")
		}
	}
	return parts
}

func isStar(cr *pg_query.ColumnRef) bool {
	p := refParts(cr)
	return len(p) > 0 && p[len(p)-1] == "*"
}

// insert: the values inserted are copies; RETURNING is the output.
func (r *resolver) insert(x *pg_query.InsertStmt, outer *scope) ([][]string, []string) {
	s := r.withCTEs(x.GetWithClause(), outer)
	if x.GetSelectStmt() != nil {
		outs, _ := r.query(x.GetSelectStmt(), s)
		r.copies = append(r.copies, allSources(outs)...)
	}
	target := r.rangeVar(x.GetRelation(), &scope{})
	ts := &scope{rels: []*relation{target}, outer: s}
	if oc := x.GetOnConflictClause(); oc != nil {
		ts.rels = append(ts.rels, &relation{name: "excluded", opaque: true, any: r.copies})
		for _, t := range oc.GetTargetList() {
			r.copies = append(r.copies, r.expr(t.ProtoReflect(), ts)...)
		}
		if oc.GetWhereClause() != nil {
			r.expr(oc.GetWhereClause().ProtoReflect(), ts)
		}
	}
	return r.returning(x.GetReturningList(), ts)
}

// update: the values set are copies.
func (r *resolver) update(x *pg_query.UpdateStmt, outer *scope) ([][]string, []string) {
	s := r.withCTEs(x.GetWithClause(), outer)
	s.rels = append(s.rels, r.rangeVar(x.GetRelation(), &scope{}))
	for _, f := range x.GetFromClause() {
		r.from(f, s)
	}
	for _, t := range x.GetTargetList() {
		if rt := t.GetResTarget(); rt != nil && rt.GetVal() != nil {
			r.copies = append(r.copies, r.expr(rt.GetVal().ProtoReflect(), s)...)
		}
	}
	if x.GetWhereClause() != nil {
		r.expr(x.GetWhereClause().ProtoReflect(), s)
	}
	return r.returning(x.GetReturningList(), s)
}

func (r *resolver) delete(x *pg_query.DeleteStmt, outer *scope) ([][]string, []string) {
	s := r.withCTEs(x.GetWithClause(), outer)
	s.rels = append(s.rels, r.rangeVar(x.GetRelation(), &scope{}))
	for _, f := range x.GetUsingClause() {
		r.from(f, s)
	}
	if x.GetWhereClause() != nil {
		r.expr(x.GetWhereClause().ProtoReflect(), s)
	}
	return r.returning(x.GetReturningList(), s)
}

// merge: the values of its UPDATE and INSERT actions are copies.
func (r *resolver) merge(x *pg_query.MergeStmt, outer *scope) ([][]string, []string) {
	s := r.withCTEs(x.GetWithClause(), outer)
	s.rels = append(s.rels, r.rangeVar(x.GetRelation(), &scope{}))
	if x.GetSourceRelation() != nil {
		r.from(x.GetSourceRelation(), s)
	}
	if x.GetJoinCondition() != nil {
		r.expr(x.GetJoinCondition().ProtoReflect(), s)
	}
	for _, w := range x.GetMergeWhenClauses() {
		mw := w.GetMergeWhenClause()
		for _, t := range mw.GetTargetList() {
			if rt := t.GetResTarget(); rt != nil && rt.GetVal() != nil {
				r.copies = append(r.copies, r.expr(rt.GetVal().ProtoReflect(), s)...)
			}
		}
		for _, v := range mw.GetValues() {
			r.copies = append(r.copies, r.expr(v.ProtoReflect(), s)...)
		}
		if mw.GetCondition() != nil {
			r.expr(mw.GetCondition().ProtoReflect(), s)
		}
	}
	return r.returning(x.GetReturningList(), s)
}

func (r *resolver) returning(list []*pg_query.Node, s *scope) ([][]string, []string) {
	if len(list) == 0 {
		return nil, nil
	}
	outs, ok := r.targetList(list, s)
	return targetsOf(outs, ok), allSources(outs)
}
