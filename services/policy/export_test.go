package policy

// The metrics, for the tests.
var (
	RevisionMetric    = policyRevision
	EvaluationsMetric = policyEvaluations
	RuleMemoMetric    = policyRuleMemo
)
