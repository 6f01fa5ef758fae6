package policy

import (
	"context"
	"fmt"
	"time"

	"github.com/google/cel-go/common/types"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	approvalsv1 "sluice.dev/sluice/proto/sluice/approvals/v1"
	commonv1 "sluice.dev/sluice/proto/sluice/common/v1"
	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
	policyv1 "sluice.dev/sluice/proto/sluice/policy/v1"
)

// Input is what a command is ruled on. Nil messages are treated as empty.
type Input struct {
	Principal *commonv1.Principal
	Target    *commonv1.Target
	Protocol  string
	SQL       *policyv1.SQLInput
	SSH       *policyv1.SSHInput
	K8s       *policyv1.K8SCommand
	MCP       *policyv1.MCPInput
	Grants    []*approvalsv1.Grant
	Now       time.Time
}

// Verdict is the outcome for one input.
type Verdict struct {
	Action    string
	Rule      string
	Reason    string
	Approvers []string
	Quorum    uint32
}

// NoMatch is the rule name reported when no rule matched.
const NoMatch = "no-matching-rule"

// activation gives the variables every rule of one evaluation reads.
func (in Input) activation() map[string]any {
	now := in.Now
	if now.IsZero() {
		now = time.Now()
	}
	grants := in.Grants
	if grants == nil {
		grants = []*approvalsv1.Grant{}
	}
	return map[string]any{
		VarPrincipal: orEmpty(in.Principal),
		VarTarget:    orEmpty(in.Target),
		VarProtocol:  in.Protocol,
		VarSQL:       orEmpty(in.SQL),
		VarSSH:       orEmpty(in.SSH),
		VarK8s:       orEmpty(in.K8s),
		VarMCP:       mcpOrEmpty(in.MCP),
		VarGrants:    grants,
		VarNow:       timestamppb.New(now),
	}
}

// mcpOrEmpty gives rules an empty argument map rather than a missing one,
// so that `mcp.arguments.max_rows` on a call without arguments is a missing
// key (an error, which denies) the same way on every path.
func mcpOrEmpty(m *policyv1.MCPInput) *policyv1.MCPInput {
	if m == nil {
		return &policyv1.MCPInput{Arguments: &structpb.Struct{}}
	}
	if m.Arguments == nil {
		c := proto.Clone(m).(*policyv1.MCPInput)
		c.Arguments = &structpb.Struct{}
		return c
	}
	return m
}

func orEmpty[T any, P interface{ *T }](p P) P {
	if p == nil {
		return new(T)
	}
	return p
}

// Evaluate rules on in: deny rules first, then review, then allow.
func (s *Set) Evaluate(ctx context.Context, in Input) Verdict {
	act := in.activation()
	for _, rules := range [...][]rule{s.deny, s.review, s.allow} {
		for _, r := range rules {
			if r.skips(in.Protocol) {
				continue
			}
			match, err := r.eval(ctx, act)
			if err != nil {
				return failed(r, err)
			}
			if match {
				return verdict(r)
			}
		}
	}
	return Verdict{Action: Deny, Rule: NoMatch, Reason: "no rule allows this"}
}

// Masks returns the mask rules that apply to in, by rule name. A mask rule
// that fails to evaluate applies (masking more is the safe failure).
func (s *Set) Masks(ctx context.Context, in Input) []*controlv1.MaskRule {
	if len(s.mask) == 0 {
		return nil
	}
	act := in.activation()
	var out []*controlv1.MaskRule
	for _, r := range s.mask {
		if r.skips(in.Protocol) {
			continue
		}
		match, err := r.eval(ctx, act)
		if err != nil || match {
			out = append(out, r.src.GetMask())
		}
	}
	return out
}

func (r rule) eval(ctx context.Context, act map[string]any) (bool, error) {
	val, _, err := r.prg.ContextEval(ctx, act)
	if err != nil {
		return false, err
	}
	b, ok := val.(types.Bool)
	if !ok {
		return false, fmt.Errorf("result is %s, not bool", val.Type())
	}
	return bool(b), nil
}

func verdict(r rule) Verdict {
	reason := r.src.GetReason()
	if reason == "" {
		reason = "matched rule " + r.src.GetName()
	}
	return Verdict{Action: r.src.GetAction(), Rule: r.src.GetName(), Reason: reason, Approvers: r.src.GetApprovers(), Quorum: max(r.src.GetQuorum(), 1)}
}

func failed(r rule, err error) Verdict {
	return Verdict{Action: Deny, Rule: r.src.GetName(), Reason: fmt.Sprintf("rule %s could not be evaluated (%v); denied", r.src.GetName(), err)}
}

// Severity orders actions: deny > review > allow.
func Severity(action string) int {
	switch action {
	case Allow:
		return 0
	case Review:
		return 1
	default:
		return 2
	}
}
