// Package claimmap derives groups from a verified token's claims with a CEL
// expression (the groups_expression of an identity provider in sluice.yaml),
// so that identities whose tokens carry no groups claim (client-credentials
// tokens from ORY Hydra, Auth0 machine-to-machine, a CI provider) can be
// given groups.
//
// The expression sees one variable, `claims` (a map of the token's claims),
// and returns a list of strings. It is compiled and type-checked when the
// configuration is applied; an expression that fails at evaluation refuses
// the token (fail closed), and its cost is bounded.
package claimmap

import (
	"context"
	"fmt"
	"reflect"
	"time"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/ext"
)

// Program is a compiled groups expression, safe for concurrent use.
type Program struct {
	prg cel.Program
}

const costLimit = 100000

var env = func() *cel.Env {
	e, err := cel.NewEnv(
		cel.Variable("claims", cel.MapType(cel.StringType, cel.DynType)),
		ext.Strings(), ext.Lists(), ext.Sets(),
	)
	if err != nil {
		panic(err)
	}
	return e
}()

// Compile type-checks expr: it must return list(string) (or a dynamic value
// that is one at run time).
func Compile(expr string) (*Program, error) {
	ast, iss := env.Compile(expr)
	if iss.Err() != nil {
		return nil, fmt.Errorf("groups_expression: %w", iss.Err())
	}
	out := ast.OutputType()
	if !out.IsAssignableType(cel.ListType(cel.StringType)) && out != cel.DynType {
		return nil, fmt.Errorf("groups_expression must return a list of strings, not %s", out)
	}
	prg, err := env.Program(ast, cel.CostLimit(costLimit), cel.InterruptCheckFrequency(100))
	if err != nil {
		return nil, fmt.Errorf("groups_expression: %w", err)
	}
	return &Program{prg: prg}, nil
}

// Groups evaluates the expression over claims, for at most 100 ms (the
// cost limit bounds it first; the deadline stops anything the estimate
// missed).
func (p *Program) Groups(claims map[string]any) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	v, _, err := p.prg.ContextEval(ctx, map[string]any{"claims": claims})
	if err != nil {
		return nil, fmt.Errorf("groups_expression: %w", err)
	}
	return toStrings(v)
}

func toStrings(v ref.Val) ([]string, error) {
	if v.Type() != types.ListType {
		return nil, fmt.Errorf("groups_expression returned %s, not a list", v.Type().TypeName())
	}
	raw, err := v.ConvertToNative(sliceOfAny)
	if err != nil {
		return nil, fmt.Errorf("groups_expression: %w", err)
	}
	var out []string
	for _, e := range raw.([]any) {
		s, ok := e.(string)
		if !ok {
			return nil, fmt.Errorf("groups_expression returned a list holding %T, not only strings", e)
		}
		if s != "" {
			out = append(out, s)
		}
	}
	return out, nil
}

var sliceOfAny = reflect.TypeOf([]any{})
