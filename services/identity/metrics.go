package identity

import (
	"github.com/prometheus/client_golang/prometheus"

	"sluice.dev/sluice/libs/telemetry"
)

// verifications counts the tokens the identity service judged.
var verifications = telemetry.Factory.NewCounterVec(prometheus.CounterOpts{
	Name: "sluice_identity_verifications_total",
	Help: "Token verifications answered, by result: ok, or the error code answered (token_expired, untrusted_issuer, ...).",
}, []string{"result"})
