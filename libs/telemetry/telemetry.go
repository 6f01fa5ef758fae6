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
	"regexp"
	"sort"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Registry holds every metric of the process.
var Registry = prometheus.NewRegistry()

// Factory registers a new metric in Registry.
var Factory = promauto.With(named{Registry})

// names are the metrics registered through Factory.
var (
	namesMu sync.Mutex
	names   = map[string]bool{}
)

// Names lists the metrics registered through Factory (those of every
// package linked into the program), whether or not they were counted yet.
func Names() []string {
	namesMu.Lock()
	defer namesMu.Unlock()
	out := make([]string, 0, len(names))
	for n := range names {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// named remembers the name of each metric it registers.
type named struct{ prometheus.Registerer }

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

func (r named) Register(c prometheus.Collector) error {
	descs := make(chan *prometheus.Desc, 8)
	go func() { c.Describe(descs); close(descs) }()
	namesMu.Lock()
	for d := range descs {
		if m := fqName.FindStringSubmatch(d.String()); m != nil {
			names[m[1]] = true
		}
	}
	namesMu.Unlock()
	return r.Registerer.Register(c)
}

func (r named) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

// Version is the build's version, exported as sluice_build_info.
var Version = "dev"

func init() {
	named{Registry}.MustRegister(
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
