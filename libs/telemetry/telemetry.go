// Package telemetry is what every Sluice process shows its operators: the
// Prometheus registry its services count into, their readiness, and the
// admin HTTP server that serves /metrics, /healthz and /readyz.
//
// Metrics are process-wide: a process that runs several services (sluice
// dev, sluice serve all) answers for all of them on one admin port, and
// each metric names what it counts (sessions by protocol, decisions by
// action and rule), not the instance that counted it.
package telemetry

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Registry holds every metric of the process.
var Registry = prometheus.NewRegistry()

// Factory registers a new metric in Registry.
var Factory = promauto.With(Registry)

// Version is the build's version, exported as sluice_build_info.
var Version = "dev"

func init() {
	Registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "sluice_build_info", Help: "Always 1; the version label names the build.",
			ConstLabels: prometheus.Labels{"version": Version},
		}, func() float64 { return 1 }),
	)
}

// Seconds are the latency buckets for waits measured in seconds, from a
// fraction of a millisecond to minutes (a held command waits for a human).
var Seconds = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900}

// Sizes are the buckets for batch sizes.
var Sizes = []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024}
