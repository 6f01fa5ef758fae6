package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"sluice.dev/sluice/libs/authn"
	"sluice.dev/sluice/libs/bus"
	commonv1 "sluice.dev/sluice/proto/sluice/common/v1"
)

// Config configures the API server.
type Config struct {
	// Addr to listen on; default 127.0.0.1:8080.
	Addr string
	// Listener, if set, is used instead of Addr.
	Listener net.Listener
	Conn     *bus.Conn
	// AdminGroups may apply configuration; default ["sluice-admins"].
	AdminGroups []string
	// AuditorGroups may read sessions and the audit log; default ["auditors"].
	AuditorGroups []string
	// Issuer and Audience are advertised to the CLI at /api/v1/config.
	Issuer, Audience, CLIClientID string
	// Mounts adds handlers under path prefixes (the dev issuer at /oidc).
	Mounts map[string]http.Handler
	Log    zerolog.Logger
}

// Server is the HTTP API.
type Server struct {
	cfg     Config
	authn   *authn.Client
	reg     *prometheus.Registry
	metrics metrics
	mux     *http.ServeMux
}

type metrics struct {
	requests *prometheus.CounterVec
	authFail *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

type ctxKey struct{}

// New builds the server.
func New(cfg Config) *Server {
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:8080"
	}
	if len(cfg.AdminGroups) == 0 {
		cfg.AdminGroups = []string{"sluice-admins"}
	}
	if len(cfg.AuditorGroups) == 0 {
		cfg.AuditorGroups = []string{"auditors"}
	}
	s := &Server{cfg: cfg, authn: authn.New(cfg.Conn.NC), reg: prometheus.NewRegistry(), mux: http.NewServeMux()}
	s.metrics = metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_api_requests_total", Help: "HTTP API requests by route and status."}, []string{"route", "status"}),
		authFail: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_api_auth_failures_total", Help: "Refused bearer tokens by reason code."}, []string{"code"}),
		latency:  prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "sluice_api_request_seconds", Help: "HTTP API latency by route.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}, []string{"route"}),
	}
	s.reg.MustRegister(s.metrics.requests, s.metrics.authFail, s.metrics.latency,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sluice_nats_connected", Help: "1 when the NATS connection is up."}, func() float64 {
			if cfg.Conn.NC.IsConnected() {
				return 1
			}
			return 0
		}))
	s.routes()
	return s
}

// Registry lets other in-process components add metrics.
func (s *Server) Registry() *prometheus.Registry { return s.reg }

// Handler returns the root handler.
func (s *Server) Handler() http.Handler { return s.mux }

func (s *Server) routes() {
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	s.mux.HandleFunc("GET /readyz", s.readyz)
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}))
	s.mux.HandleFunc("GET /api/v1/config", s.clientConfig)
	s.handle("GET /api/v1/whoami", "whoami", anyone, s.whoami)
	for prefix, h := range s.cfg.Mounts {
		s.mux.Handle(prefix+"/", http.StripPrefix(prefix, h))
	}
	s.extraRoutes()
}

// access decides whether a principal may call a route.
type access func(s *Server, p *commonv1.Principal) bool

func anyone(*Server, *commonv1.Principal) bool { return true }

func admins(s *Server, p *commonv1.Principal) bool { return inAny(p, s.cfg.AdminGroups) }

func auditors(s *Server, p *commonv1.Principal) bool {
	return inAny(p, s.cfg.AuditorGroups) || inAny(p, s.cfg.AdminGroups)
}

func inAny(p *commonv1.Principal, groups []string) bool {
	for _, g := range p.GetGroups() {
		if slices.Contains(groups, g) {
			return true
		}
	}
	return false
}

// handle registers an authenticated route.
func (s *Server) handle(pattern, route string, allowed access, h func(w http.ResponseWriter, r *http.Request, p *commonv1.Principal)) {
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		defer func() {
			s.metrics.requests.WithLabelValues(route, fmt.Sprint(rec.status)).Inc()
			s.metrics.latency.WithLabelValues(route).Observe(time.Since(start).Seconds())
		}()
		p, ok := s.authenticate(rec, r)
		if !ok {
			return
		}
		if !allowed(s, p) {
			writeError(rec, http.StatusForbidden, "forbidden", "your groups do not allow this call")
			return
		}
		h(rec, r.WithContext(context.WithValue(r.Context(), ctxKey{}, p)), p)
	})
}

func (s *Server) authenticate(w http.ResponseWriter, r *http.Request) (*commonv1.Principal, bool) {
	h := r.Header.Get("Authorization")
	token, found := strings.CutPrefix(h, "Bearer ")
	if !found {
		token, found = strings.CutPrefix(h, "bearer ")
	}
	if !found || strings.TrimSpace(token) == "" {
		s.metrics.authFail.WithLabelValues("token_missing").Inc()
		w.Header().Set("WWW-Authenticate", `Bearer realm="sluice"`)
		writeError(w, http.StatusUnauthorized, "token_missing", "send Authorization: Bearer <access token>")
		return nil, false
	}
	p, e := s.authn.Verify(r.Context(), strings.TrimSpace(token))
	if e != nil {
		s.metrics.authFail.WithLabelValues(e.Code).Inc()
		status := http.StatusUnauthorized
		if e.Code == authn.CodeUnavailable {
			status = http.StatusServiceUnavailable
		}
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="sluice", error="invalid_token", error_description=%q`, e.Message))
		writeError(w, status, e.Code, e.Message)
		return nil, false
	}
	return p, true
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if !s.cfg.Conn.NC.IsConnected() {
		writeError(w, http.StatusServiceUnavailable, "nats_disconnected", "not connected to NATS")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if _, err := s.cfg.Conn.JS.AccountInfo(ctx); err != nil {
		writeError(w, http.StatusServiceUnavailable, "jetstream_unavailable", "JetStream is not available")
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

func (s *Server) clientConfig(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{
		"issuer":        s.cfg.Issuer,
		"audience":      s.cfg.Audience,
		"cli_client_id": s.cfg.CLIClientID,
	})
}

// Principal is the JSON form of a principal.
type Principal struct {
	Subject   string    `json:"subject"`
	Email     string    `json:"email,omitempty"`
	Groups    []string  `json:"groups"`
	Machine   bool      `json:"machine"`
	Issuer    string    `json:"issuer,omitempty"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
}

// PrincipalJSON converts a principal for JSON output.
func PrincipalJSON(p *commonv1.Principal) Principal {
	out := Principal{Subject: p.GetSubject(), Email: p.GetEmail(), Groups: p.GetGroups(), Machine: p.GetMachine(), Issuer: p.GetIssuer()}
	if out.Groups == nil {
		out.Groups = []string{}
	}
	if p.GetExpiresAt() != nil {
		out.ExpiresAt = p.GetExpiresAt().AsTime().UTC()
	}
	return out
}

func (s *Server) whoami(w http.ResponseWriter, _ *http.Request, p *commonv1.Principal) {
	writeJSON(w, http.StatusOK, PrincipalJSON(p))
}

// Run serves until ctx is done, then shuts down gracefully.
func (s *Server) Run(ctx context.Context) error {
	ln := s.cfg.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", s.cfg.Addr); err != nil {
			return fmt.Errorf("api listen: %w", err)
		}
	}
	srv := &http.Server{Handler: s.mux, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	s.cfg.Log.Info().Str("addr", ln.Addr().String()).Msg("HTTP API listening")
	select {
	case err := <-errc:
		return fmt.Errorf("api: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, reason string) {
	writeJSON(w, status, map[string]string{"error": code, "reason": reason})
}
