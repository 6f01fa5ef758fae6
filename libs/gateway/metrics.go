package gateway

import (
	"github.com/prometheus/client_golang/prometheus"

	"sluice.dev/sluice/libs/telemetry"
)

// What the workers count, by protocol. The metrics are the process's (one
// registration, whatever the number of kernels); a kernel resolves its
// protocol's children once, in New.
var (
	sessionsStarted = telemetry.Factory.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_sessions_started_total",
		Help: "Sessions opened (authenticated and registered by the worker), by protocol.",
	}, []string{"protocol"})
	sessionsActive = telemetry.Factory.NewGaugeVec(prometheus.GaugeOpts{
		Name: "sluice_sessions_active",
		Help: "Sessions open now, by protocol.",
	}, []string{"protocol"})
	decisions = telemetry.Factory.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_decisions_total",
		Help: "Policy decisions the workers enforced (from their cache or the policy service), by protocol, action and rule.",
	}, []string{"protocol", "action", "rule"})
	authFailures = telemetry.Factory.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_auth_failures_total",
		Help: "Connections refused before a session started (token, certificate or target refused), by protocol and reason code.",
	}, []string{"protocol", "code"})
	holds = telemetry.Factory.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_holds_total",
		Help: "Commands held for approval, by protocol and outcome: approved (ran), denied, withdrawn, expired, " +
			"refused (no request could be opened, or the approval could not be used) or left (the client stopped waiting).",
	}, []string{"protocol", "outcome"})
	fenced = telemetry.Factory.NewGaugeVec(prometheus.GaugeOpts{
		Name: "sluice_worker_fenced",
		Help: "1 while the worker is fenced: it could not write its presence for too long (cut off from NATS), so it ended its sessions and records and runs nothing; by protocol.",
	}, []string{"protocol"})
)

// Outcomes of a held command (sluice_holds_total).
const (
	holdApproved = iota
	holdDenied
	holdWithdrawn
	holdExpired
	holdRefused
	holdLeft
	holdOutcomes
)

var holdOutcomeNames = [holdOutcomes]string{"approved", "denied", "withdrawn", "expired", "refused", "left"}

// kernelMetrics are a kernel's children of the metrics, its protocol's.
type kernelMetrics struct {
	started      prometheus.Counter
	active       prometheus.Gauge
	decisions    *prometheus.CounterVec // curried: action, rule
	authFailures *prometheus.CounterVec // curried: code
	holds        [holdOutcomes]prometheus.Counter
	fenced       prometheus.Gauge
}

func newKernelMetrics(protocol string) kernelMetrics {
	by := prometheus.Labels{"protocol": protocol}
	m := kernelMetrics{
		started:      sessionsStarted.WithLabelValues(protocol),
		active:       sessionsActive.WithLabelValues(protocol),
		decisions:    decisions.MustCurryWith(by),
		authFailures: authFailures.MustCurryWith(by),
		fenced:       fenced.WithLabelValues(protocol),
	}
	for i, name := range holdOutcomeNames {
		m.holds[i] = holds.WithLabelValues(protocol, name)
	}
	return m
}
