package policy

import (
	"fmt"
	"slices"
	"strings"

	"github.com/google/cel-go/cel"
	celast "github.com/google/cel-go/common/ast"
	"github.com/google/cel-go/common/operators"
	"github.com/google/cel-go/common/types"

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
	// protocols, when not nil, are the only protocols the rule can match:
	// its expression is a conjunction one of whose terms compares
	// `protocol` with constants. CEL's && is false when any term is false,
	// whatever the others give (errors included), so skipping the rule for
	// any other protocol gives the verdict evaluating it would.
	protocols []string
}

// skips reports whether the rule cannot match a command of protocol p.
func (r rule) skips(p string) bool {
	return r.protocols != nil && !slices.Contains(r.protocols, p)
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
	// UsesFingerprint says whether any rule reads sql.fingerprint, which
	// costs the classifier a parse of its own.
	UsesFingerprint bool
	// reads is what the rules may read of each variable; memo remembers
	// verdicts by it (Rule).
	reads map[string]*varReads
	memo  memo
}

// Compile type-checks and compiles rules. Every error is reported, each
// naming its rule and location.
func Compile(rules []*controlv1.Rule, revision uint64) (*Set, error) {
	env, err := newEnv()
	if err != nil {
		return nil, err
	}
	set := &Set{Revision: revision, reads: map[string]*varReads{}}
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
		cr := rule{src: r, prg: prg, protocols: onlyProtocols(ast.NativeRep().Expr())}
		for _, ref := range ast.NativeRep().ReferenceMap() {
			switch strings.TrimPrefix(ref.Name, ".") {
			case VarNow:
				cr.usesNow = true
			case VarGrants:
				cr.usesGrants = true
			}
		}
		for _, v := range memoVars {
			set.readsOf(v).add(ast.NativeRep().Expr(), v)
		}
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
	// A rule may read a field when it selects it or uses the whole message
	// (compares it, passes it to a function).
	sql := set.readsOf(VarSQL)
	set.UsesText = sql.whole || sql.fields["text"]
	set.UsesFingerprint = sql.whole || sql.fields["fingerprint"]
	return set, nil
}

// onlyProtocols gives the protocols a rule can match when its expression is
// a conjunction that starts with terms `protocol == "x"` or
// `protocol in ["x", "y"]` (the intersection of those leading terms), and
// nil otherwise. Only leading terms count: CEL evaluates && from the left and
// stops at the first false term, so for another protocol the rule gives false
// before any later term runs. A later term could end the evaluation first
// (the cost limit, a cancelled context), which denies, not false.
func onlyProtocols(e celast.Expr) []string {
	var out []string
	for _, term := range conjuncts(e, nil) {
		p := protocolTerm(term)
		if p == nil {
			break
		}
		if out == nil {
			out = p
		} else {
			out = slices.DeleteFunc(out, func(x string) bool { return !slices.Contains(p, x) })
		}
	}
	return out
}

// conjuncts appends the terms of a tree of && calls to out, left to right.
func conjuncts(e celast.Expr, out []celast.Expr) []celast.Expr {
	if e.Kind() == celast.CallKind && e.AsCall().FunctionName() == operators.LogicalAnd {
		for _, a := range e.AsCall().Args() {
			out = conjuncts(a, out)
		}
		return out
	}
	return append(out, e)
}

// protocolTerm gives the protocols `protocol == "x"` or `protocol in [...]`
// (string constants only) allows, and nil for any other expression.
func protocolTerm(e celast.Expr) []string {
	if e.Kind() != celast.CallKind {
		return nil
	}
	call := e.AsCall()
	args := call.Args()
	if len(args) != 2 {
		return nil
	}
	switch call.FunctionName() {
	case operators.Equals:
		for i := range 2 {
			if isVar(args[i], VarProtocol) {
				if s, ok := stringConst(args[1-i]); ok {
					return []string{s}
				}
			}
		}
	case operators.In:
		if !isVar(args[0], VarProtocol) || args[1].Kind() != celast.ListKind {
			return nil
		}
		out := []string{}
		for _, el := range args[1].AsList().Elements() {
			s, ok := stringConst(el)
			if !ok {
				return nil
			}
			out = append(out, s)
		}
		return out
	}
	return nil
}

// isVar reports whether e is the variable name, written with or without the
// leading dot that names the root scope (`.sql`).
func isVar(e celast.Expr, name string) bool {
	return e.Kind() == celast.IdentKind && strings.TrimPrefix(e.AsIdent(), ".") == name
}

func stringConst(e celast.Expr) (string, bool) {
	if e.Kind() != celast.LiteralKind {
		return "", false
	}
	s, ok := e.AsLiteral().(types.String)
	return string(s), ok
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
