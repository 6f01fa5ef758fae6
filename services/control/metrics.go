package control

import (
	"github.com/prometheus/client_golang/prometheus"

	"sluice.dev/sluice/libs/authn"
	"sluice.dev/sluice/libs/telemetry"
	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
)

// applies counts configuration applies (sluice apply), by result.
var applies = telemetry.Factory.NewCounterVec(prometheus.CounterOpts{
	Name: "sluice_control_applies_total",
	Help: "Configuration applies answered, by result: applied, dry_run, refused (not allowed, or the file is invalid) or error (the change could not be stored, or the caller could not be verified).",
}, []string{"result"})

// countApply counts an apply's answer.
func countApply(resp *controlv1.ApplyResponse, err error, dry bool) {
	result := "applied"
	switch {
	case err != nil || resp.GetError().GetCode() == "apply_failed" || resp.GetError().GetCode() == authn.CodeUnavailable:
		result = "error"
	case resp.GetError() != nil:
		result = "refused"
	case dry:
		result = "dry_run"
	}
	applies.WithLabelValues(result).Inc()
}
