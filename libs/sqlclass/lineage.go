package sqlclass

import (
	pg_query "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// outputLineage returns the column references of each output expression of
// a plain top-level SELECT (see Statement.Targets).
func outputLineage(stmt *pg_query.Node) [][]string {
	sel := stmt.GetSelectStmt()
	if sel == nil || sel.GetOp() != pg_query.SetOperation_SETOP_NONE || len(sel.GetTargetList()) == 0 {
		return nil
	}
	out := make([][]string, 0, len(sel.GetTargetList()))
	for _, t := range sel.GetTargetList() {
		rt := t.GetResTarget()
		if rt == nil {
			return nil
		}
		refs := []string{}
		collectRefs(rt.GetVal().ProtoReflect(), &refs, 0)
		out = append(out, sortUnique(refs))
	}
	return out
}

// collectRefs gathers every ColumnRef below m (subqueries included).
func collectRefs(m protoreflect.Message, refs *[]string, depth int) {
	if depth > 500 || !m.IsValid() {
		return
	}
	if cr, ok := m.Interface().(*pg_query.ColumnRef); ok {
		if name := columnRefName(cr); name != "" {
			*refs = append(*refs, name)
		}
		return
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Kind() != protoreflect.MessageKind {
			return true
		}
		if fd.IsList() {
			l := v.List()
			for i := range l.Len() {
				collectRefs(l.Get(i).Message(), refs, depth+1)
			}
		} else {
			collectRefs(v.Message(), refs, depth+1)
		}
		return true
	})
}
