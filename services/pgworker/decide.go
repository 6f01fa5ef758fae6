package pgworker

import (
	"context"

	"sluice.dev/sluice/libs/sqlshape"
	policyv1 "sluice.dev/sluice/proto/sluice/policy/v1"
)

// Built-in rules the worker applies itself.
const (
	ruleFunctionCall       = "builtin:function-call"
	ruleMaskedCopy         = "builtin:masked-data-copy"
	ruleInvalidEncoding    = "builtin:invalid-encoding"
	ruleUnfollowableNames  = "builtin:unfollowable-names"
	ruleMaskingUnavailable = "builtin:masking-unavailable"
	ruleMaskedSchema       = "builtin:masked-schema-change"
)

// decide rules on a SQL string for the session: from the kernel's cache
// when it may (by the exact text, else by the statement's shape), else from
// the policy service. Without an answer the verdict is deny.
func (s *session) decide(ctx context.Context, text string) (*policyv1.Decision, bool) {
	// Read first: a decision is stamped with the epoch it was asked in,
	// never a later one.
	s.decidedAt = s.w.k.Decisions.Generation()
	return s.w.k.Decide(ctx, &policyv1.EvaluateRequest{
		Principal: s.principal, Target: s.targetRef, SessionId: s.id,
		Command: &policyv1.EvaluateRequest_Sql{Sql: &policyv1.SQLCommand{Text: text}},
	}, s.pkey, text, sqlshape.Shape)
}

// readOnly reports whether every statement only reads, so that its result
// (rather than the statement) may wait for the record to be durable.
func readOnly(d *policyv1.Decision) bool {
	if len(d.GetStatements()) == 0 {
		return false
	}
	for _, st := range d.GetStatements() {
		if st.GetKind() != "read" {
			return false
		}
		for _, f := range st.GetFlags() {
			switch f {
			case "side_effect_function", "lock", "explain_analyze", "cte_write", "select_into", "dynamic_sql":
				return false
			}
		}
	}
	return true
}
