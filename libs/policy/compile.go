package policy

import (
	"fmt"
	"slices"
	"strings"

	"github.com/google/cel-go/cel"
	celast "github.com/google/cel-go/common/ast"

	"sluice.dev/sluice/libs/masking"
	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
)

// Actions.
const (
	Allow  = "allow"
	Deny   = "deny"
	Review = "review"
	Mask   = "mask"
)

// CompileError is one problem in one rule, located in the applied file.
type CompileError struct {
	Rule    string
	Line    int
	Column  int
	Message string
}

func (e CompileError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("rule %q, line %d, column %d: %s", e.Rule, e.Line, e.Column, e.Message)
	}
	return fmt.Sprintf("rule %q: %s", e.Rule, e.Message)
}

// CompileErrors lists every problem found.
type CompileErrors []CompileError

func (e CompileErrors) Error() string {
	msgs := make([]string, len(e))
	for i, c := range e {
		msgs[i] = c.Error()
	}
	return strings.Join(msgs, "; ")
}

type rule struct {
	src        *controlv1.Rule
	prg        cel.Program
	usesNow    bool
	usesGrants bool
}

// Set is a compiled policy: safe for concurrent use.
type Set struct {
	Revision uint64
	deny     []rule
	review   []rule
	allow    []rule
	mask     []rule
	// UsesNow, UsesGrants and UsesText say whether any rule depends on the
	// time, on grants or on the raw statement text (sql.text), which limits
	// how decisions may be cached.
	UsesNow, UsesGrants, UsesText bool
}

// Compile type-checks and compiles rules. Every error is reported, each
// naming its rule and location.
func Compile(rules []*controlv1.Rule, revision uint64) (*Set, error) {
	env, err := newEnv()
	if err != nil {
		return nil, err
	}
	set := &Set{Revision: revision}
	var errs CompileErrors
	seen := map[string]bool{}
	for _, r := range rules {
		bad := func(line, col int, format string, args ...any) {
			errs = append(errs, CompileError{Rule: r.GetName(), Line: line, Column: col, Message: fmt.Sprintf(format, args...)})
		}
		line, col := int(r.GetLine()), int(r.GetColumn())
		switch {
		case r.GetName() == "":
			bad(line, col, "a rule needs a name")
			continue
		case seen[r.GetName()]:
			bad(line, col, "duplicate rule name")
			continue
		}
		seen[r.GetName()] = true
		if !slices.Contains([]string{Allow, Deny, Review, Mask}, r.GetAction()) {
			bad(line, col, "action must be allow, deny, review or mask, not %q", r.GetAction())
			continue
		}
		if r.GetAction() == Review && len(r.GetApprovers()) == 0 {
			bad(line, col, "a review rule needs approvers")
		}
		if r.GetAction() == Mask {
			if err := checkMask(r.GetMask()); err != nil {
				bad(line, col, "%v", err)
			}
		}
		when := r.GetWhen()
		if strings.TrimSpace(when) == "" {
			bad(line, col, "a rule needs a `when` expression")
			continue
		}
		ast, iss := env.Compile(when)
		if iss != nil && iss.Err() != nil {
			for _, e := range iss.Errors() {
				l, c := line, col
				if e.Location != nil && e.Location.Line() > 0 {
					if e.Location.Line() == 1 {
						c = col + e.Location.Column()
					} else {
						c = e.Location.Column() + 1
					}
					l = line + e.Location.Line() - 1
				}
				bad(l, c, "%s", e.Message)
			}
			continue
		}
		if ast.OutputType() != cel.BoolType {
			bad(line, col, "the expression must be a bool, not %s", ast.OutputType())
			continue
		}
		prg, err := env.Program(ast, cel.CostLimit(costLimit), cel.InterruptCheckFrequency(100))
		if err != nil {
			bad(line, col, "%v", err)
			continue
		}
		cr := rule{src: r, prg: prg}
		for _, ref := range ast.NativeRep().ReferenceMap() {
			switch ref.Name {
			case VarNow:
				cr.usesNow = true
			case VarGrants:
				cr.usesGrants = true
			}
		}
		set.UsesText = set.UsesText || selects(ast.NativeRep().Expr(), VarSQL, "text")
		set.UsesNow = set.UsesNow || cr.usesNow
		set.UsesGrants = set.UsesGrants || cr.usesGrants
		switch r.GetAction() {
		case Deny:
			set.deny = append(set.deny, cr)
		case Review:
			set.review = append(set.review, cr)
		case Allow:
			set.allow = append(set.allow, cr)
		case Mask:
			set.mask = append(set.mask, cr)
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return set, nil
}

// selects reports whether expr reads field of variable v anywhere.
func selects(expr celast.Expr, v, field string) bool {
	found := false
	celast.PostOrderVisit(expr, celast.NewExprVisitor(func(e celast.Expr) {
		if e.Kind() != celast.SelectKind {
			return
		}
		sel := e.AsSelect()
		if sel.FieldName() == field && sel.Operand().Kind() == celast.IdentKind && sel.Operand().AsIdent() == v {
			found = true
		}
	}))
	return found
}

// checkMask validates a mask section: known detectors and action, and
// columns written table.column or schema.table.column.
func checkMask(m *controlv1.MaskRule) error {
	if m == nil {
		return fmt.Errorf("a mask rule needs a mask section")
	}
	if len(m.GetColumns()) == 0 && len(m.GetDetectors()) == 0 {
		return fmt.Errorf("a mask section needs columns or detectors")
	}
	for _, c := range m.GetColumns() {
		if n := strings.Count(c, "."); n < 1 || n > 2 || strings.HasPrefix(c, ".") || strings.HasSuffix(c, ".") {
			return fmt.Errorf("mask column %q must be table.column or schema.table.column", c)
		}
	}
	switch m.GetDerived() {
	case "", "mask", "refuse":
	default:
		return fmt.Errorf("mask derived must be mask or refuse, not %q", m.GetDerived())
	}
	dets := m.GetDetectors()
	if len(dets) == 0 {
		dets = nil
	}
	key := make([]byte, masking.MinTokenKey)
	if _, err := masking.New(masking.Config{Detectors: dets, Action: masking.Action{Kind: m.GetAction(), Keep: int(m.GetKeep())}, TokenKey: key}); err != nil {
		return err
	}
	return nil
}
