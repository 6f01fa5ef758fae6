package exporter

import (
	"github.com/prometheus/client_golang/prometheus"

	"sluice.dev/sluice/libs/telemetry"
)

// What the exporter counts, by sink (syslog, hec).
var (
	exportRecords = telemetry.Factory.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_export_records_total",
		Help: "Events delivered to the sink (and accepted by it), by sink.",
	}, []string{"sink"})
	exportFailures = telemetry.Factory.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_export_failures_total",
		Help: "Deliveries of a batch the sink did not accept (the batch is retried until it does), by sink.",
	}, []string{"sink"})
)
