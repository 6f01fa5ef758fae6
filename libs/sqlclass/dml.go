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
	// Only matched rows are updated or deleted: the ON condition bounds
	// them as a WHERE would. Columns of a source of explicit rows (VALUES,
	// a SELECT of constants or parameters) anchor a comparison.
	destructive := false
	for _, c := range s.MergeWhenClauses {
		mw := c.GetMergeWhenClause()
		if mw.GetMatchKind() == pg_query.MergeMatchKind_MERGE_WHEN_MATCHED &&
			(mw.GetCommandType() == pg_query.CmdType_CMD_UPDATE || mw.GetCommandType() == pg_query.CmdType_CMD_DELETE) {
			destructive = true
		}
	}
	if !destructive || s.Relation == nil {
		return
	}
	if s.Relation.Alias != nil {
		w.a.add(FlagLiteralSensitive)
	}
	b := bounds{quals: targetQualifiers(s.Relation)}
	if src := s.SourceRelation.GetRangeSubselect(); src != nil && explicitRows(src.GetSubquery().GetSelectStmt()) && src.GetAlias() != nil {
		b.anchors = [][]string{{src.GetAlias().GetAliasname()}}
	}
	if s.JoinCondition == nil || !b.expr(s.JoinCondition) {
		w.a.add(FlagUnbounded)
	}
}

// explicitRows reports whether a query lists its rows: VALUES, or a SELECT
// with no FROM (constants and parameters).
func explicitRows(sel *pg_query.SelectStmt) bool {
	if sel == nil || sel.GetOp() != pg_query.SetOperation_SETOP_NONE {
		return false
	}
	return len(sel.GetValuesLists()) > 0 || len(sel.GetFromClause()) == 0
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
	quals [][]string
	// anchors qualify columns that count as constants (a MERGE source of
	// explicit rows).
	anchors   [][]string
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
// bounded if any operand is, OR only if every operand is, NOT never, and
// any other expression as leaf says.
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
		case pg_query.BoolExprType_NOT_EXPR:
			// The complement of a bound is no bound.
			return false
		}
	}
	return b.leaf(n)
}

// boundingOps are the comparisons that select a part of the target when
// one side is a target column and the other an anchored value; the others
// (<>, NOT LIKE, IS DISTINCT FROM, ...) select all but a part.
var boundingOps = map[string]bool{"=": true, "<": true, ">": true, "<=": true, ">=": true,
	"~~": true, "~~*": true, "~": true, "~*": true, "@>": true, "<@": true, "&&": true, "@@": true}

// leaf reports whether a predicate that is not AND/OR/NOT bounds the
// target rows: WHERE CURRENT OF does; a comparison does when one side
// refers to the target and the other does not but holds a constant or a
// parameter (id = 1, email = lower($1), created < now() - '1 day'); any
// other predicate (EXISTS, a function) when it refers to the target and
// holds a constant or parameter. So a self-comparison (id = id,
// lower(a) = lower(a), id = id + 0), a comparison of columns (t.id = u.id)
// and a predicate with no constant (flag, id IS NULL) do not bound.
func (b *bounds) leaf(n *pg_query.Node) bool {
	switch x := n.Node.(type) {
	case *pg_query.Node_CurrentOfExpr:
		return true
	case *pg_query.Node_AExpr:
		e := x.AExpr
		switch e.GetKind() {
		case pg_query.A_Expr_Kind_AEXPR_OP, pg_query.A_Expr_Kind_AEXPR_OP_ANY, pg_query.A_Expr_Kind_AEXPR_IN,
			pg_query.A_Expr_Kind_AEXPR_LIKE, pg_query.A_Expr_Kind_AEXPR_ILIKE, pg_query.A_Expr_Kind_AEXPR_SIMILAR:
			if !boundingOps[opName(e)] {
				return false
			}
		case pg_query.A_Expr_Kind_AEXPR_BETWEEN, pg_query.A_Expr_Kind_AEXPR_BETWEEN_SYM, pg_query.A_Expr_Kind_AEXPR_NOT_DISTINCT:
		default:
			return false
		}
		if e.GetLexpr() == nil || e.GetRexpr() == nil {
			return false
		}
		l, r := e.GetLexpr(), e.GetRexpr()
		return (b.refsTarget(l) && !b.refsTarget(r) && b.anchored(r)) || (b.refsTarget(r) && !b.refsTarget(l) && b.anchored(l))
	case *pg_query.Node_SubLink:
		sl := x.SubLink
		if sl.GetSubLinkType() == pg_query.SubLinkType_EXISTS_SUBLINK {
			// EXISTS (SELECT ... WHERE u.id = t.id AND u.state = 'x'): the
			// subquery must be correlated with the target and filter by a
			// constant or parameter (not merely select one).
			where := sl.GetSubselect().GetSelectStmt().GetWhereClause()
			return where != nil && b.refsTarget(n) && b.anchored(where)
		}
		if sl.GetSubLinkType() == pg_query.SubLinkType_ANY_SUBLINK && sl.GetTestexpr() != nil {
			// x IN (SELECT ...), x = ANY (SELECT ...)
			if !boundingOps[subLinkOp(sl)] {
				return false
			}
			return b.refsTarget(sl.GetTestexpr()) && !b.refsTarget(sl.GetSubselect()) && b.anchored(sl.GetSubselect())
		}
	case *pg_query.Node_BoolExpr, *pg_query.Node_NullTest, *pg_query.Node_BooleanTest, *pg_query.Node_ColumnRef:
		return false
	}
	return b.refsTarget(n) && b.anchored(n)
}

func opName(e *pg_query.A_Expr) string {
	names := e.GetName()
	if len(names) == 0 {
		return ""
	}
	return names[len(names)-1].GetString_().GetSval()
}

func subLinkOp(sl *pg_query.SubLink) string {
	names := sl.GetOperName()
	if len(names) == 0 {
		return "=" // IN
	}
	return names[len(names)-1].GetString_().GetSval()
}

// anchored reports whether an expression holds a constant or a parameter
// (at any depth), or a column of an anchor.
func (b *bounds) anchored(n *pg_query.Node) bool {
	found := false
	var walk func(m protoreflect.Message)
	walk = func(m protoreflect.Message) {
		if found {
			return
		}
		switch x := m.Interface().(type) {
		case *pg_query.A_Const:
			found = !x.GetIsnull()
			return
		case *pg_query.ParamRef:
			found = true
			return
		case *pg_query.ColumnRef:
			found = len(b.anchors) > 0 && columnOfTarget(x.Fields, b.anchors, true)
			return
		}
		rangeMessages(m, walk)
	}
	walk(n.ProtoReflect())
	return found
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
