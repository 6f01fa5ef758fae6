package recorder

import (
	"github.com/prometheus/client_golang/prometheus"

	"sluice.dev/sluice/libs/telemetry"
)

// What the recorder counts (every recorder of the process).
var (
	recorderEvents = telemetry.Factory.NewCounter(prometheus.CounterOpts{
		Name: "sluice_recorder_events_total",
		Help: "Session events chained into AUDIT.",
	})
	recorderBatchSize = telemetry.Factory.NewHistogram(prometheus.HistogramOpts{
		Name:    "sluice_recorder_batch_size",
		Help:    "Session events per AUDIT record the recorder stores (a session's consecutive events gathered in one flush), acknowledged together.",
		Buckets: telemetry.Sizes,
	})
	recorderLag = telemetry.Factory.NewHistogram(prometheus.HistogramOpts{
		Name:    "sluice_recorder_lag_seconds",
		Help:    "Time from a session event's batch being stored in SESSIONS (its publish time) to the event's chained record being stored in AUDIT.",
		Buckets: telemetry.Seconds,
	})
	recorderChains = telemetry.Factory.NewGauge(prometheus.GaugeOpts{
		Name: "sluice_recorder_chains",
		Help: "Session chain heads the recorder keeps in memory.",
	})
	recorderFailures = telemetry.Factory.NewCounter(prometheus.CounterOpts{
		Name: "sluice_recorder_failures_total",
		Help: "AUDIT records the recorder failed to store (refused, unacknowledged or unencodable); their events come again.",
	})
	recorderIndexDeferred = telemetry.Factory.NewGauge(prometheus.GaugeOpts{
		Name: "sluice_recorder_index_deferred_events",
		Help: "Session events whose sessions-index write the bucket refused, kept to be written again (every second).",
	})
	recorderSessionsLost = telemetry.Factory.NewCounter(prometheus.CounterOpts{
		Name: "sluice_recorder_sessions_lost_total",
		Help: "Sessions whose worker was gone without ending them, whose chains the recorder closed with a lost record.",
	})
	recorderAfterLost = telemetry.Factory.NewCounter(prometheus.CounterOpts{
		Name: "sluice_recorder_events_after_lost_total",
		Help: "Session events that came after their session's chain was closed as lost (other than the session's end), not recorded; never expected.",
	})
	auditStreamBytes = telemetry.Factory.NewGauge(prometheus.GaugeOpts{
		Name: "sluice_audit_stream_bytes",
		Help: "Bytes stored in the AUDIT stream.",
	})
	auditStreamMessages = telemetry.Factory.NewGauge(prometheus.GaugeOpts{
		Name: "sluice_audit_stream_messages",
		Help: "Messages (records and checkpoints) stored in the AUDIT stream.",
	})
	auditStreamMaxBytes = telemetry.Factory.NewGauge(prometheus.GaugeOpts{
		Name: "sluice_audit_stream_max_bytes",
		Help: "The AUDIT stream's configured maximum size in bytes (0: unlimited).",
	})
)
