package policy

import (
	"github.com/prometheus/client_golang/prometheus"

	"sluice.dev/sluice/libs/telemetry"
)

// What the policy service counts (every instance of the process).
var (
	policyRevision = telemetry.Factory.NewGauge(prometheus.GaugeOpts{
		Name: "sluice_policy_revision",
		Help: "Revision of the compiled policy in force (0: none, every request is denied).",
	})
	policyEvaluations = telemetry.Factory.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_policy_evaluations_total",
		Help: "Decisions the policy service made (for workers and sluice policy test), by action and rule.",
	}, []string{"action", "rule"})
	policyRuleMemo = telemetry.Factory.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_policy_rule_memo_total",
		Help: "SQL statements the policy ruled on, by whether the verdict came from the memo (remembered=true: no rule ran, as a statement equal in all the rules read was ruled on before).",
	}, []string{"remembered"})
	policyEvaluationSeconds = telemetry.Factory.NewHistogram(prometheus.HistogramOpts{
		Name:    "sluice_policy_evaluation_seconds",
		Help:    "Time to classify a command and evaluate the policy on it (not counting a wait for the grants view).",
		Buckets: prometheus.ExponentialBuckets(0.00001, 2, 16),
	})
)
