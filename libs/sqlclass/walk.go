package sqlclass

import (
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// deepTree is the depth, counted the way pg_query's fingerprint counts it
// (one level per node, one more per list), from which a statement is marked
// literal_sensitive: the fingerprint ignores everything at depth 100 and
// below, so two statements that differ only down there share a
// QueryFingerprint. The margin covers the places where the protobuf tree
// and the C tree differ.
const deepTree = 80

// walker visits a parse tree and records what it finds in an acc. It walks
// every message field generically (protoreflect), and handles the node types
// that matter (statements, RangeVar, FuncCall, ...) by type switch.
type walker struct {
	a     *acc
	ctes  []string // CTE names in scope, innermost last
	inCTE int      // > 0 while inside the body of a CTE
	depth int
}

var nodeOneof = (&pg_query.Node{}).ProtoReflect().Descriptor().Oneofs().ByName("node")

// node unwraps a Node and visits what it holds.
func (w *walker) node(n *pg_query.Node) {
	if n == nil {
		return
	}
	switch x := n.Node.(type) {
	case *pg_query.Node_ColumnRef:
		w.columnRef(x.ColumnRef)
		return
	case *pg_query.Node_String_, *pg_query.Node_Integer, *pg_query.Node_AConst,
		*pg_query.Node_ParamRef, *pg_query.Node_AStar,
		*pg_query.Node_Float, *pg_query.Node_Boolean, *pg_query.Node_BitString:
		return // leaves: no tables, no calls
	case *pg_query.Node_RangeVar:
		w.readRel(x.RangeVar)
		return
	case *pg_query.Node_FuncCall:
		w.funcCall(x.FuncCall)
		return
	}
	m := n.ProtoReflect()
	if fd := m.WhichOneof(nodeOneof); fd != nil {
		w.visit(m.Get(fd).Message().Interface())
	}
}

// down moves d levels deeper into the tree.
func (w *walker) down(d int) {
	w.depth += d
	if w.depth >= deepTree {
		w.a.add(FlagLiteralSensitive)
	}
}

// visit dispatches one message.
func (w *walker) visit(m proto.Message) {
	switch x := m.(type) {
	case *pg_query.Node:
		w.node(x)
	case *pg_query.RangeVar:
		w.readRel(x)
	case *pg_query.FuncCall:
		w.funcCall(x)
	case *pg_query.TypeCast:
		w.typeCast(x)
	case *pg_query.IntoClause:
		w.into(x)
	case *pg_query.AlterTableCmd:
		if x.Subtype == pg_query.AlterTableType_AT_ChangeOwner {
			w.a.add(FlagRoleManagement) // as AlterOwnerStmt
			w.a.escalate(KindPrivilege)
		}
		w.fields(x.ProtoReflect())
	case *pg_query.LockingClause:
		// FOR UPDATE OF t names FROM items, not new tables.
		w.a.add(FlagLock)
	default:
		if !w.stmt(m, false) {
			w.fields(m.ProtoReflect())
		}
	}
}

// fields visits every message-typed field of m except those named in skip.
func (w *walker) fields(m protoreflect.Message, skip ...protoreflect.Name) {
	w.down(1)
	defer w.down(-1)
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Kind() != protoreflect.MessageKind {
			return true
		}
		for _, s := range skip {
			if fd.Name() == s {
				return true
			}
		}
		if fd.IsList() {
			w.down(1)
			l := v.List()
			for i := range l.Len() {
				w.visit(l.Get(i).Message().Interface())
			}
			w.down(-1)
		} else {
			w.visit(v.Message().Interface())
		}
		return true
	})
}

// rangeMessages calls f for every message held by a field of m.
func rangeMessages(m protoreflect.Message, f func(protoreflect.Message)) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Kind() != protoreflect.MessageKind {
			return true
		}
		if fd.IsList() {
			l := v.List()
			for i := range l.Len() {
				f(l.Get(i).Message())
			}
		} else {
			f(v.Message())
		}
		return true
	})
}

// readRel records a table reference in a reading position. An unqualified
// name that matches a CTE in scope is the CTE, not a table.
func (w *walker) readRel(rv *pg_query.RangeVar) {
	if rv == nil {
		return
	}
	if rv.Schemaname == "" && rv.Catalogname == "" && w.isCTE(rv.Relname) {
		return
	}
	w.noteRelName(rv)
	w.a.reads = append(w.a.reads, relName(rv))
}

// writeRel records a table that the statement writes or redefines. Write
// targets are never resolved against CTE names (PostgreSQL does not either).
func (w *walker) writeRel(rv *pg_query.RangeVar) {
	if rv == nil {
		return
	}
	w.noteRelName(rv)
	w.a.writes = append(w.a.writes, relName(rv))
	if rv.Relpersistence == "t" {
		w.a.temps = append(w.a.temps, relName(rv))
	}
}

// noteRelName marks names that pg_query's fingerprint does not tell apart:
// it drops runs of two or more digits from table names (t01 = t99) and
// ignores the names of temporary tables.
func (w *walker) noteRelName(rv *pg_query.RangeVar) {
	if rv.Relpersistence == "t" || hasDigitRun(rv.Relname) {
		w.a.add(FlagLiteralSensitive)
	}
}

func hasDigitRun(s string) bool {
	for i := 1; i < len(s); i++ {
		if isDigit(s[i]) && isDigit(s[i-1]) {
			return true
		}
	}
	return false
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func (w *walker) isCTE(name string) bool {
	for i := len(w.ctes) - 1; i >= 0; i-- {
		if w.ctes[i] == name {
			return true
		}
	}
	return false
}

// with walks the CTEs of a WITH clause and leaves their names in scope for
// the rest of the statement; the caller restores w.ctes to the returned
// length when the statement ends. Without RECURSIVE a CTE sees only the
// CTEs before it; with RECURSIVE it sees all of them, itself included.
func (w *walker) with(wc *pg_query.WithClause) int {
	mark := len(w.ctes)
	if wc == nil {
		return mark
	}
	if wc.Recursive {
		for _, c := range wc.Ctes {
			if cte := c.GetCommonTableExpr(); cte != nil {
				w.ctes = append(w.ctes, cte.Ctename)
			}
		}
	}
	// Called before the owning statement's fields: the WITH clause is one
	// level below the statement, its CTEs two more (a list).
	w.down(3)
	defer w.down(-3)
	for _, c := range wc.Ctes {
		cte := c.GetCommonTableExpr()
		if cte == nil {
			w.node(c)
			continue
		}
		w.inCTE++
		w.fields(cte.ProtoReflect())
		w.inCTE--
		if !wc.Recursive {
			w.ctes = append(w.ctes, cte.Ctename)
		}
	}
	return mark
}

// relName normalises a RangeVar: "schema.table" or "table", the database
// qualifier dropped.
func relName(rv *pg_query.RangeVar) string {
	if rv.Schemaname != "" {
		return rv.Schemaname + "." + rv.Relname
	}
	return rv.Relname
}

// qualifiedName normalises a list of String nodes naming an object (DROP
// TABLE a.b.c): the last two parts joined by a dot.
func qualifiedName(ns []*pg_query.Node) string {
	parts := make([]string, 0, len(ns))
	for _, n := range ns {
		if s, ok := n.Node.(*pg_query.Node_String_); ok {
			parts = append(parts, s.String_.Sval)
		}
	}
	if len(parts) > 2 {
		parts = parts[len(parts)-2:]
	}
	return strings.Join(parts, ".")
}

// into handles SELECT INTO and CREATE TABLE AS targets.
func (w *walker) into(ic *pg_query.IntoClause) {
	w.a.add(FlagSelectInto)
	w.a.escalate(KindWrite)
	w.writeRel(ic.Rel)
	w.fields(ic.ProtoReflect(), "rel")
}

// regTypes are the OID alias types whose input function looks a name up:
// 'customers'::regclass names a table with a literal.
var regTypes = map[string]bool{
	"regclass": true, "regproc": true, "regprocedure": true, "regoper": true,
	"regoperator": true, "regtype": true, "regnamespace": true, "regrole": true,
	"regconfig": true, "regdictionary": true, "regcollation": true,
}

func (w *walker) typeCast(tc *pg_query.TypeCast) {
	if tc.TypeName != nil && len(tc.TypeName.Names) > 0 {
		last := tc.TypeName.Names[len(tc.TypeName.Names)-1]
		if s, ok := last.Node.(*pg_query.Node_String_); ok && regTypes[strings.ToLower(s.String_.Sval)] {
			w.a.add(FlagLiteralSensitive)
		}
	}
	w.fields(tc.ProtoReflect())
}

func lower(s string) string { return strings.ToLower(s) }

// columnRef records a column reference for lineage.
func (w *walker) columnRef(cr *pg_query.ColumnRef) {
	if name := columnRefName(cr); name != "" {
		w.a.columns = append(w.a.columns, name)
	}
}

// columnRefName spells a column reference as written: "c", "t.c", "t.*".
func columnRefName(cr *pg_query.ColumnRef) string {
	parts := make([]string, 0, len(cr.GetFields()))
	for _, f := range cr.GetFields() {
		switch v := f.GetNode().(type) {
		case *pg_query.Node_String_:
			parts = append(parts, v.String_.GetSval())
		case *pg_query.Node_AStar:
			parts = append(parts, "*")
		}
	}
	return strings.Join(parts, ".")
}
