package approvals

import (
	"github.com/prometheus/client_golang/prometheus"

	"sluice.dev/sluice/libs/telemetry"
)

// What the approvals service counts. Opened and decided requests are
// counted by the replica that stored the change; the pending and active
// gauges are read from the replica's view (every replica reports the same
// numbers).
var (
	approvalsOpened = telemetry.Factory.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_approvals_opened_total",
		Help: "Approval requests opened, by protocol of the held command (grant for a request for a grant).",
	}, []string{"protocol"})
	approvalsDecided = telemetry.Factory.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_approvals_decided_total",
		Help: "Approval requests (held commands and grant requests) that left pending, by outcome: approved, denied, expired or withdrawn.",
	}, []string{"outcome"})
	approvalWait = telemetry.Factory.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "sluice_approval_wait_seconds",
		Help:    "Time from an approval request's creation to its outcome, by outcome.",
		Buckets: telemetry.Seconds,
	}, []string{"outcome"})
	approvalsPending = telemetry.Factory.NewGauge(prometheus.GaugeOpts{
		Name: "sluice_approvals_pending",
		Help: "Approval requests (held commands and grant requests) waiting for a decision now.",
	})
	grantsActive = telemetry.Factory.NewGauge(prometheus.GaugeOpts{
		Name: "sluice_grants_active",
		Help: "Grants in force now (approved, started and not ended or revoked).",
	})
)
