package bus

import (
	"errors"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"sluice.dev/sluice/libs/telemetry"
)

// What every NATS connection counts, by the component (NATS identity)
// that holds it. Asynchronous errors are counted here whatever the
// caller's OnError does with them: none is discarded unseen.
var (
	natsConnected   = telemetry.Factory.NewGaugeVec(prometheus.GaugeOpts{Name: "sluice_nats_connected", Help: "1 while the component's NATS connection is up."}, []string{"component"})
	natsDisconnects = telemetry.Factory.NewCounterVec(prometheus.CounterOpts{Name: "sluice_nats_disconnects_total", Help: "NATS connections lost."}, []string{"component"})
	natsReconnects  = telemetry.Factory.NewCounterVec(prometheus.CounterOpts{Name: "sluice_nats_reconnects_total", Help: "NATS connections re-established."}, []string{"component"})
	natsAsyncErrors = telemetry.Factory.NewCounterVec(prometheus.CounterOpts{Name: "sluice_nats_async_errors_total", Help: "Asynchronous NATS errors by kind (slow_consumer, permission, other)."}, []string{"component", "kind"})
	natsDropped     = telemetry.Factory.NewCounterVec(prometheus.CounterOpts{Name: "sluice_nats_dropped_messages_total", Help: "Messages a slow subscription dropped."}, []string{"component"})
)

// dropCounts remembers each subscription's dropped count already counted.
var dropCounts sync.Map // *nats.Subscription -> int

func countAsyncError(component string, sub *nats.Subscription, err error) {
	kind := "other"
	switch {
	case errors.Is(err, nats.ErrSlowConsumer):
		kind = "slow_consumer"
		if sub != nil {
			if n, derr := sub.Dropped(); derr == nil {
				prev, _ := dropCounts.Swap(sub, n)
				if p, ok := prev.(int); ok && n >= p {
					n -= p
				}
				natsDropped.WithLabelValues(component).Add(float64(n))
			}
		}
	case errors.Is(err, nats.ErrPermissionViolation):
		kind = "permission"
	}
	natsAsyncErrors.WithLabelValues(component, kind).Inc()
}
