package policy

import (
	"fmt"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/ext"
	"google.golang.org/protobuf/types/known/timestamppb"

	approvalsv1 "sluice.dev/sluice/proto/sluice/approvals/v1"
	commonv1 "sluice.dev/sluice/proto/sluice/common/v1"
	policyv1 "sluice.dev/sluice/proto/sluice/policy/v1"
)

// Variable names.
const (
	VarPrincipal = "principal"
	VarTarget    = "target"
	VarProtocol  = "protocol"
	VarSQL       = "sql"
	VarSSH       = "ssh"
	VarK8s       = "k8s"
	VarMCP       = "mcp"
	VarGrants    = "grants"
	VarNow       = "now"
)

// costLimit bounds one rule's evaluation; a rule that exceeds it denies.
const costLimit = 100_000

func newEnv() (*cel.Env, error) {
	env, err := cel.NewEnv(
		cel.Types(&commonv1.Principal{}, &commonv1.Target{}, &policyv1.SQLInput{}, &policyv1.SSHInput{},
			&policyv1.K8SCommand{}, &policyv1.MCPInput{}, &approvalsv1.Grant{}, &timestamppb.Timestamp{}),
		cel.Variable(VarPrincipal, cel.ObjectType("sluice.common.v1.Principal")),
		cel.Variable(VarTarget, cel.ObjectType("sluice.common.v1.Target")),
		cel.Variable(VarProtocol, cel.StringType),
		cel.Variable(VarSQL, cel.ObjectType("sluice.policy.v1.SQLInput")),
		cel.Variable(VarSSH, cel.ObjectType("sluice.policy.v1.SSHInput")),
		cel.Variable(VarK8s, cel.ObjectType("sluice.policy.v1.K8sCommand")),
		cel.Variable(VarMCP, cel.ObjectType("sluice.policy.v1.MCPInput")),
		cel.Variable(VarGrants, cel.ListType(cel.ObjectType("sluice.approvals.v1.Grant"))),
		cel.Variable(VarNow, cel.TimestampType),
		ext.Strings(),
		ext.Sets(),
		ext.Lists(),
	)
	if err != nil {
		return nil, fmt.Errorf("policy environment: %w", err)
	}
	return env, nil
}
