package recording

import (
	"github.com/prometheus/client_golang/prometheus"

	"sluice.dev/sluice/libs/telemetry"
)

// What the workers' recorders count (every recorder of the process).
var (
	recordWait = telemetry.Factory.NewHistogram(prometheus.HistogramOpts{
		Name:    "sluice_record_wait_seconds",
		Help:    "How long a command waited for its write-ahead record (and every event before it) to be stored in SESSIONS.",
		Buckets: telemetry.Seconds,
	})
	recordFailures = telemetry.Factory.NewCounter(prometheus.CounterOpts{
		Name: "sluice_record_failures_total",
		Help: "Session events that could not be made durable: events of a batch the stream refused or never acknowledged, " +
			"events that could not be encoded, and waits for a record that timed out. Their sessions stop running commands.",
	})
)
