// Package policy is Sluice's policy engine: rules are CEL expressions over
// typed inputs, compiled once per policy revision and evaluated per command.
//
// Variables a rule sees:
//
//	principal  sluice.common.v1.Principal   subject, email, groups, issuer, machine
//	target     sluice.common.v1.Target      name, kind, labels
//	protocol   string                       postgres, ssh, kubernetes, mcp
//	sql        sluice.policy.v1.SQLInput    one statement: kind, command, reads, writes, tables, functions, flags, setting, statements
//	ssh        sluice.policy.v1.SSHInput    one SSH request (below)
//	k8s        sluice.policy.v1.K8sCommand  verb, api_group, resource, subresource, namespace, name, command, container
//	mcp        sluice.policy.v1.MCPInput    a call through the MCP endpoint: tool, arguments (a map), client
//	grants     list(sluice.approvals.v1.Grant) active just-in-time grants of the principal on the target
//	now        google.protobuf.Timestamp
//
// ssh is an SSH request: request_type (exec, shell, subsystem, env,
// port_forward, remote_forward, agent_forward, x11) and command, its
// argument as the client sent it. For exec, command is the command line and
// the rest is libs/shellclass's classification of it (its doc.go gives the
// exact rules):
//
//	programs   every program the line runs anywhere (pipes, lists, $(...),
//	           <(...), functions, wrappers such as sudo, env, xargs, nested
//	           shells such as bash -c), by the name as written and by base
//	           name ("/bin/rm" and "rm"), sorted and unique
//	commands   each simple command: program, name, argv, dynamic, sudo, env,
//	           via (the wrappers that run it, outermost first)
//	flags      pipeline, list, control, subshell, substitution, expansion,
//	           dynamic, sudo, shell, interpreter, pipe_to_shell,
//	           redirect_write, redirect_read, background, function_def,
//	           network, destructive
//	writes     files that redirections write; reads: files they read
//	env        variables the line assigns; functions: functions it defines
//	program    base name of the program, and argv its words, only when the
//	           line is exactly one simple command with no flag and no
//	           assignment (`ssh.program == "ls"` never allows
//	           `ls; rm -rf /`); argv[0] keeps the path as written
//	parse_error  never true in a decision: the policy service denies an
//	           exec command it cannot classify (or an empty one) before any
//	           rule runs, with rule builtin:unparseable-command
//
// A line whose flags include dynamic runs something its text does not show
// ($CMD, eval, curl | sh, PATH=..., arithmetic on a variable): a rule that
// allows by programs should also require that dynamic is absent. For
// subsystem, subsystem is its name (sftp); for env, command is NAME=value,
// env is [NAME] and argv is [NAME, value]; the other requests carry only
// request_type and command (host:port for the forwards, empty for
// agent_forward and x11).
//
// A call through the MCP endpoint is ruled on as the command it runs:
// run_sql as SQL (protocol "postgres", sql set), run_command as an SSH exec
// (protocol "ssh"), so every SQL and SSH rule applies to it unchanged; mcp
// says which tool was called and with which arguments (mcp.tool is empty
// for native clients). A call that runs nothing on a target (list_targets,
// asked once per target) has protocol "mcp" and only mcp set.
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
