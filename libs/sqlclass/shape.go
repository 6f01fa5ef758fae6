package sqlclass

import (
	pg_query "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// ClassifyWithShape classifies sql as ClassifyParts does and, from the same
// parse, its shape: sql with the literals that start at offsets replaced by
// the parameters $from, $from+1, ... in order (libs/sqlshape's template).
// The shape's classification has no lineage and no fingerprints.
//
// shape is nil when the parse does not hold each of those literals as a
// constant (A_Const) at its offset, in a place where the grammar's
// expressions take a parameter as well: a literal the grammar keeps as a
// string, a number or a field of its own (a COPY file name, a function
// body, a sequence option), two adjacent strings it joined, a negative
// number (its constant starts at the sign). The caller then classifies the
// shape's text, which is what the tree with parameters in place of those
// constants stands for.
func ClassifyWithShape(sql string, parts Parts, offsets []int, from int) (res, shape *Result, err error) {
	tree, err := parse(sql)
	if err != nil {
		return nil, nil, err
	}
	if res, err = classifyParts(sql, tree, parts); err != nil {
		return nil, nil, err
	}
	if len(offsets) == 0 || !parameterize(tree, offsets, from) {
		return res, nil, nil
	}
	// The statements' locations are the text's, so each statement's Text
	// is cut from sql; the classes do not depend on it.
	return res, classifyTree(sql, tree, false), nil
}

// parameterize replaces, in tree, each constant node that starts at one of
// offsets with the parameter numbered from its place in offsets, and
// reports whether every offset was one constant node's. A constant held
// other than as a Node (a field typed A_Const) fails it: no parameter can
// stand there.
func parameterize(tree *pg_query.ParseResult, offsets []int, from int) bool {
	params := make(map[int32]int32, len(offsets))
	for i, off := range offsets {
		params[int32(off)] = int32(from + i)
	}
	done := make(map[int32]bool, len(offsets))
	ok := true
	var visit func(m protoreflect.Message)
	visit = func(m protoreflect.Message) {
		switch n := m.Interface().(type) {
		case *pg_query.Node:
			if c := n.GetAConst(); c != nil {
				if p, found := params[c.Location]; found {
					if done[c.Location] {
						// Two constants from one literal: the grammar
						// made more of it than an expression.
						ok = false
						return
					}
					n.Node = &pg_query.Node_ParamRef{ParamRef: &pg_query.ParamRef{Number: p, Location: c.Location}}
					done[c.Location] = true
				}
				return
			}
		case *pg_query.A_Const:
			if _, found := params[n.Location]; found {
				ok = false
			}
			return
		}
		m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
			if fd.Kind() != protoreflect.MessageKind && fd.Kind() != protoreflect.GroupKind {
				return true
			}
			if fd.IsList() {
				l := v.List()
				for i := range l.Len() {
					visit(l.Get(i).Message())
				}
			} else if !fd.IsMap() {
				visit(v.Message())
			}
			return ok
		})
	}
	for _, raw := range tree.Stmts {
		if !ok {
			break
		}
		visit(raw.ProtoReflect())
	}
	return ok && len(done) == len(params)
}
