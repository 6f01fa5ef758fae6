package telemetry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
)

// Health is the readiness of the services one process runs. A service is
// ready once it has said so (Ready) and every check it registered passes
// (its NATS connection is up, say). The zero value is not useful: use
// NewHealth.
type Health struct {
	mu       sync.Mutex
	services map[string]*serviceHealth
}

type serviceHealth struct {
	ready, served bool
	checks        map[string]func() error
}

// NewHealth returns a Health that expects nothing yet.
func NewHealth() *Health { return &Health{services: map[string]*serviceHealth{}} }

func (h *Health) service(name string) *serviceHealth {
	s := h.services[name]
	if s == nil {
		s = &serviceHealth{}
		h.services[name] = s
	}
	return s
}

// Expect adds a service that must become ready before the process is.
func (h *Health) Expect(name string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.service(name)
}

// Ready marks a service ready to serve.
func (h *Health) Ready(name string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.service(name)
	s.ready, s.served = true, true
}

// Restarting marks a service that stopped serving and starts again.
func (h *Health) Restarting(name string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.service(name).ready = false
}

// IsReady reports whether a service says it serves now (its checks
// aside).
func (h *Health) IsReady(name string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.service(name).ready
}

// Served reports whether a service was ever ready.
func (h *Health) Served(name string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.service(name).served
}

// Check sets a condition (named key; a later one of the same key replaces
// it) that a service stays ready under. It must answer fast.
func (h *Health) Check(name, key string, check func() error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.service(name)
	if s.checks == nil {
		s.checks = map[string]func() error{}
	}
	s.checks[key] = check
}

// Status is what keeps each service from being ready ("" once ready).
func (h *Health) Status() (ready bool, services map[string]string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ready, services = true, map[string]string{}
	for name, s := range h.services {
		status := "ready"
		if !s.ready {
			status = "starting"
		} else {
			for _, c := range s.checks {
				if err := c(); err != nil {
					status = err.Error()
					break
				}
			}
		}
		if status != "ready" {
			ready = false
		}
		services[name] = status
	}
	if len(h.services) == 0 {
		ready = false
	}
	return ready, services
}

// Handler serves /metrics (Prometheus text format), /healthz (the process
// answers) and /readyz (every service it runs is ready to serve; 503 with
// what is not, otherwise).
func Handler(h *Health) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", MetricsHandler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		ready, services := h.Status()
		status, code := "ready", http.StatusOK
		if !ready {
			status, code = "not ready", http.StatusServiceUnavailable
		}
		writeJSON(w, code, map[string]any{"status": status, "services": services})
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"endpoints": []string{"/healthz", "/metrics", "/readyz"}})
	})
	return mux
}

// MetricsHandler serves the registry in Prometheus's text format.
func MetricsHandler() http.Handler { return promhttp.HandlerFor(Registry, promhttp.HandlerOpts{}) }

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// Listen opens the admin port, so that a port already in use fails the
// process at start rather than later.
func Listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin port (--admin-addr %s): %w", addr, err)
	}
	return ln, nil
}

// Serve runs the admin server on ln until ctx is done.
func Serve(ctx context.Context, ln net.Listener, h *Health, log zerolog.Logger) error {
	srv := &http.Server{Handler: Handler(h), ReadHeaderTimeout: 5 * time.Second, WriteTimeout: 30 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Info().Str("addr", ln.Addr().String()).Msg("admin server listening (/metrics, /healthz, /readyz)")
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
