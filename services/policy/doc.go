// Package policy is the policy service: it answers
// sluice.api.policy.decision.evaluate (queue group "policy") for every
// command a worker intercepts.
//
// For SQL it classifies the statement string with libs/sqlclass (the real
// PostgreSQL grammar), rules on each statement with the compiled policy
// (libs/policy) and returns the strictest verdict, naming the rule, the
// reason and the policy revision, plus the mask rules that apply and how a
// worker may cache the decision (per statement shape, revision and
// principal). It recompiles when a new policy is applied, once per revision.
//
// For SSH it classifies an exec request's command line with libs/shellclass
// (the shell grammar: every program a line runs, through pipes, lists,
// substitutions, wrappers and nested shells, and its flags) and rules on the
// whole classification; other requests (shell, subsystem, env, port and
// remote forwards, agent and X11 forwarding) are ruled on by type and
// argument. An SSH decision may be cached by the exact request type and
// command unless a rule reads the time.
//
// Fail closed: no policy, an unparseable statement or exec command line, an
// empty exec command, or a rule that errors each yield deny.
package policy
