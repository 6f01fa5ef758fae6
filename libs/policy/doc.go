// Package policy is Sluice's policy engine: rules are CEL expressions over
// typed inputs, compiled once per policy revision and evaluated per command.
//
// Variables a rule sees:
//
//	principal  sluice.common.v1.Principal   subject, email, groups, issuer, machine
//	target     sluice.common.v1.Target      name, kind, labels
//	protocol   string                       postgres, ssh, kubernetes, mcp
//	sql        sluice.policy.v1.SQLInput    one statement: kind, command, reads, writes, tables, functions, flags, setting, statements
//	ssh        sluice.policy.v1.SSHInput    request_type, command, argv, program, subsystem
//	k8s        sluice.policy.v1.K8sCommand  verb, api_group, resource, subresource, namespace, name, command
//	grants     list(sluice.approvals.v1.Grant) active just-in-time grants of the principal on the target
//	now        google.protobuf.Timestamp
//
// Actions: allow, deny, review (hold for approval by approver groups, with a
// quorum) and mask. Deny wins over review, review over allow; when no rule
// matches the verdict is deny; when any rule fails to evaluate (an error, a
// cost-limit overrun) the verdict is deny and names that rule. Mask rules
// are independent: every matching mask rule applies.
//
// Rules are type-checked at compile time, and every error names the rule,
// the line and the column in the applied file.
package policy
