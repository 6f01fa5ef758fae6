package sqlclass

import (
	pg_query "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"
)

func (w *walker) selectStmt(s *pg_query.SelectStmt) {
	w.a.escalate(KindRead)
	mark := w.with(s.WithClause)
	w.fields(s.ProtoReflect(), "with_clause")
	w.ctes = w.ctes[:mark]
}

// dml records what every data-modifying statement shares: kind write, and
// cte_write when it sits inside a WITH.
func (w *walker) dml() {
	w.a.escalate(KindWrite)
	if w.inCTE > 0 {
		w.a.add(FlagCTEWrite)
	}
}

// writeTarget records the target of INSERT/UPDATE/DELETE/MERGE. Writing
// pg_settings is SET by another name (an UPDATE rule calls set_config), and
// which setting depends on a literal, so it gets every setting flag.
func (w *walker) writeTarget(rv *pg_query.RangeVar) {
	w.writeRel(rv)
	if rv != nil && rv.Relname == "pg_settings" && (rv.Schemaname == "" || rv.Schemaname == "pg_catalog") {
		w.a.add(unknownSettingFlags...)
		w.a.escalate(KindPrivilege)
	}
}

func (w *walker) insertStmt(s *pg_query.InsertStmt) {
	w.writeStmt(s.WithClause, s.Relation, s.ProtoReflect())
}

func (w *walker) updateStmt(s *pg_query.UpdateStmt) {
	w.writeStmt(s.WithClause, s.Relation, s.ProtoReflect())
	w.bounded(s.Relation, s.WhereClause)
}

func (w *walker) deleteStmt(s *pg_query.DeleteStmt) {
	w.writeStmt(s.WithClause, s.Relation, s.ProtoReflect())
	w.bounded(s.Relation, s.WhereClause)
}

func (w *walker) mergeStmt(s *pg_query.MergeStmt) {
	w.writeStmt(s.WithClause, s.Relation, s.ProtoReflect())
}

// writeStmt walks an INSERT, UPDATE, DELETE or MERGE: its CTEs are in scope for the
// rest of the statement, its relation is written, everything else is read.
func (w *walker) writeStmt(with *pg_query.WithClause, target *pg_query.RangeVar, m protoreflect.Message) {
	w.dml()
	mark := w.with(with)
	w.writeTarget(target)
	w.fields(m, "with_clause", "relation")
	w.ctes = w.ctes[:mark]
}

// bounded applies the unbounded rule (see doc.go) to an UPDATE or DELETE.
func (w *walker) bounded(target *pg_query.RangeVar, where *pg_query.Node) {
	if target == nil {
		return
	}
	if target.Alias != nil {
		// pg_query's fingerprint ignores aliases, and the rule below
		// depends on them.
		w.a.add(FlagLiteralSensitive)
	}
	if where == nil {
		w.a.add(FlagUnbounded)
		return
	}
	b := bounds{quals: targetQualifiers(target)}
	if !b.expr(where) {
		w.a.add(FlagUnbounded)
	}
	if b.aliasSeen {
		// An aliased FROM item in a subquery may shadow the target, and
		// pg_query's fingerprint ignores aliases.
		w.a.add(FlagLiteralSensitive)
	}
}

// bounds evaluates the unbounded rule for one target.
type bounds struct {
	quals     [][]string
	aliasSeen bool
}

// targetQualifiers lists the qualifiers by which a column of the target can
// be named: its alias, its name, schema.name.
func targetQualifiers(rv *pg_query.RangeVar) [][]string {
	q := [][]string{{rv.Relname}}
	if rv.Schemaname != "" {
		q = append(q, []string{rv.Schemaname, rv.Relname})
	}
	if rv.Alias != nil && rv.Alias.Aliasname != "" {
		q = append(q, []string{rv.Alias.Aliasname})
	}
	return q
}

// expr reports whether a WHERE expression bounds the target rows: AND is
// bounded if any operand is, OR only if every operand is, and any other
// expression if it refers to a target column.
func (b *bounds) expr(n *pg_query.Node) bool {
	if be, ok := n.Node.(*pg_query.Node_BoolExpr); ok {
		switch be.BoolExpr.Boolop {
		case pg_query.BoolExprType_AND_EXPR:
			for _, a := range be.BoolExpr.Args {
				if b.expr(a) {
					return true
				}
			}
			return false
		case pg_query.BoolExprType_OR_EXPR:
			for _, a := range be.BoolExpr.Args {
				if !b.expr(a) {
					return false
				}
			}
			return len(be.BoolExpr.Args) > 0
		}
	}
	return b.refsTarget(n)
}

// refsTarget reports whether expression n contains a column reference that
// can resolve to the target: WHERE CURRENT OF, an unqualified column outside
// any subquery, or a column qualified by the target's alias or name at any
// depth (a correlated subquery) unless a FROM item of that subquery takes the
// same name.
func (b *bounds) refsTarget(n *pg_query.Node) bool {
	found := false
	var walk func(m protoreflect.Message, quals [][]string, sub bool)
	walk = func(m protoreflect.Message, quals [][]string, sub bool) {
		if found {
			return
		}
		switch x := m.Interface().(type) {
		case *pg_query.CurrentOfExpr:
			found = true
			return
		case *pg_query.ColumnRef:
			if columnOfTarget(x.Fields, quals, sub) {
				found = true
			}
			return
		case *pg_query.SelectStmt:
			sub = true
			var aliased bool
			quals, aliased = unshadowed(quals, x.FromClause)
			b.aliasSeen = b.aliasSeen || aliased
		}
		rangeMessages(m, func(c protoreflect.Message) { walk(c, quals, sub) })
	}
	walk(n.ProtoReflect(), b.quals, false)
	return found
}

// unshadowed drops the qualifiers that a FROM list hides: a FROM item whose
// visible name (alias, else table name) equals a qualifier's last part. It
// also reports whether any FROM item has an alias.
func unshadowed(quals [][]string, from []*pg_query.Node) ([][]string, bool) {
	var names []string
	aliased := false
	var collect func(n *pg_query.Node)
	collect = func(n *pg_query.Node) {
		switch v := n.GetNode().(type) {
		case *pg_query.Node_RangeVar:
			if v.RangeVar.Alias != nil {
				aliased = true
				names = append(names, v.RangeVar.Alias.Aliasname)
			} else {
				names = append(names, v.RangeVar.Relname)
			}
		case *pg_query.Node_RangeSubselect:
			if v.RangeSubselect.Alias != nil {
				aliased = true
				names = append(names, v.RangeSubselect.Alias.Aliasname)
			}
		case *pg_query.Node_RangeFunction:
			if v.RangeFunction.Alias != nil {
				aliased = true
				names = append(names, v.RangeFunction.Alias.Aliasname)
			}
		case *pg_query.Node_JoinExpr:
			if v.JoinExpr.Alias != nil {
				aliased = true
				names = append(names, v.JoinExpr.Alias.Aliasname)
			}
			collect(v.JoinExpr.Larg)
			collect(v.JoinExpr.Rarg)
		}
	}
	for _, f := range from {
		collect(f)
	}
	if len(names) == 0 {
		return quals, aliased
	}
	out := make([][]string, 0, len(quals))
	for _, q := range quals {
		hidden := false
		for _, n := range names {
			if q[len(q)-1] == n {
				hidden = true
			}
		}
		if !hidden {
			out = append(out, q)
		}
	}
	return out, aliased
}

func columnOfTarget(fields []*pg_query.Node, quals [][]string, inSubquery bool) bool {
	names := make([]string, 0, len(fields))
	for _, f := range fields {
		switch v := f.Node.(type) {
		case *pg_query.Node_String_:
			names = append(names, v.String_.Sval)
		case *pg_query.Node_AStar:
			names = append(names, "*")
		}
	}
	if len(names) == 1 {
		return !inSubquery && names[0] != "*"
	}
	if len(names) < 2 {
		return false
	}
	qual := names[:len(names)-1]
	if len(qual) == 3 { // db.schema.table.col
		qual = qual[1:]
	}
	for _, q := range quals {
		if equalStrings(q, qual) {
			return true
		}
	}
	return false
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
