package api

import (
	"github.com/prometheus/client_golang/prometheus"

	"sluice.dev/sluice/libs/telemetry"
)

// What the HTTP API counts (every API server of the process).
var (
	apiRequests = telemetry.Factory.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_api_requests_total",
		Help: "HTTP API requests by route and status.",
	}, []string{"route", "status"})
	apiAuthFailures = telemetry.Factory.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_api_auth_failures_total",
		Help: "Refused bearer tokens by reason code.",
	}, []string{"code"})
	apiRequestSeconds = telemetry.Factory.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "sluice_api_request_seconds",
		Help:    "HTTP API latency by route.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
	}, []string{"route"})
)
