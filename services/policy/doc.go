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
// Fail closed: no policy, an unparseable statement, or a rule that errors
// each yield deny.
package policy
