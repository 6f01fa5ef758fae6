package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/rs/zerolog"

	"sluice.dev/sluice/libs/authn"
	"sluice.dev/sluice/libs/authz"
	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/controlstate"
	"sluice.dev/sluice/libs/sessionindex"
	commonv1 "sluice.dev/sluice/proto/sluice/common/v1"
)

// Config configures the API server.
type Config struct {
	// Addr to listen on; default 127.0.0.1:8080.
	Addr string
	// Listener, if set, is used instead of Addr.
	Listener net.Listener
	Conn     *bus.Conn
	// Issuer and Audience are advertised to the CLI at /api/v1/config.
	Issuer, Audience, CLIClientID string
	// Mounts adds handlers at paths and under them (the dev issuer at
	// /oidc, the MCP endpoint at /mcp).
	Mounts map[string]http.Handler
	Log    zerolog.Logger
	// Started, if set, is closed once whatever the deployment starts with
	// exists (sluice dev: every service answers and the demo target is
	// registered); /readyz answers 503 until then.
	Started <-chan struct{}
	// SSHAddress and SSHHostKeys (authorized_keys format) say where the
	// SSH worker listens and which host keys it presents, for sluice ssh
	// login's known_hosts.
	SSHAddress  string
	SSHHostKeys []string
	// KubernetesURL and KubernetesCAPEM say where the Kubernetes worker
	// listens and which CA verifies it, for sluice kubeconfig.
	KubernetesURL, KubernetesCAPEM string
	// Ready, if set, is called once the service serves.
	Ready func()

	// ConsoleClientID is the OAuth client (public, authorization code with
	// PKCE) the web console signs in with at Issuer; empty turns the
	// console off.
	ConsoleClientID string
	// ConsoleURL is the console's base URL as browsers reach it
	// (https://sluice.example.com); its /console/callback is the redirect
	// URI registered with the provider. Default: http:// and the request's
	// host, for loopback development.
	ConsoleURL string
	// ConsoleKey (32 bytes) seals the console's cookies; replicas behind
	// one address share it. Empty: a random key, so a restart signs
	// everyone out.
	ConsoleKey []byte
	// HTTPClient reaches the OIDC provider for the console's sign-in.
	HTTPClient *http.Client
}

// Server is the HTTP API.
type Server struct {
	cfg   Config
	view  *controlstate.View
	guard *authz.Guard
	mux   *http.ServeMux
	// sessionIndex is the sessions read model, loaded once sessionsReady is
	// closed.
	sessionIndex  *sessionindex.Index
	sessionsReady chan struct{}
	// workers is the workers' presence, loaded once workersReady is
	// closed: it tells an open session from one whose worker is gone.
	workers      *sessionindex.Workers
	workersReady chan struct{}
	// sealer seals the console's cookies; discovery caches the provider's
	// endpoints.
	sealer    *sealer
	sealerErr error
	discovery discovery
}

type ctxKey struct{}

// New builds the server.
func New(cfg Config) *Server {
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:8080"
	}
	view := controlstate.NewView()
	s := &Server{cfg: cfg, view: view, guard: authz.New(cfg.Conn.NC, view), mux: http.NewServeMux(),
		sessionIndex: sessionindex.New(), sessionsReady: make(chan struct{}),
		workers: sessionindex.NewWorkers(), workersReady: make(chan struct{})}
	s.sealer, s.sealerErr = newSealer(cfg.ConsoleKey)
	s.routes()
	return s
}

// Handler returns the root handler.
func (s *Server) Handler() http.Handler { return s.mux }

func (s *Server) routes() {
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	s.mux.HandleFunc("GET /readyz", s.readyz)
	s.mux.HandleFunc("GET /api/v1/config", s.clientConfig)
	s.handle("GET /api/v1/whoami", "whoami", anyone, s.whoami)
	for prefix, h := range s.cfg.Mounts {
		s.mux.Handle(prefix, http.StripPrefix(prefix, h))
		s.mux.Handle(prefix+"/", http.StripPrefix(prefix, h))
	}
	s.extraRoutes()
}

// access decides whether a principal may call a route; the service behind
// it checks again, against the caller it verifies itself. The groups come
// from the applied access section, never from code.
type access func(ctx context.Context, s *Server, p *commonv1.Principal) *commonv1.Error

func anyone(context.Context, *Server, *commonv1.Principal) *commonv1.Error { return nil }

func role(r authz.Role) access {
	return func(ctx context.Context, s *Server, p *commonv1.Principal) *commonv1.Error {
		return s.guard.CheckNow(ctx, p, r)
	}
}

var (
	admins   = role(authz.Admin)
	auditors = role(authz.Auditor)
)

// handle registers an authenticated route.
func (s *Server) handle(pattern, route string, allowed access, h func(w http.ResponseWriter, r *http.Request, p *commonv1.Principal)) {
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		defer func() {
			apiRequests.WithLabelValues(route, fmt.Sprint(rec.status)).Inc()
			apiRequestSeconds.WithLabelValues(route).Observe(time.Since(start).Seconds())
		}()
		p, token, ok := s.authenticate(rec, r)
		if !ok {
			return
		}
		if e := allowed(r.Context(), s, p); e != nil {
			writeError(rec, http.StatusForbidden, e.GetCode(), e.GetMessage())
			return
		}
		// Services authorize the caller themselves: they get its token.
		ctx := bus.WithCallerToken(context.WithValue(r.Context(), ctxKey{}, p), token)
		h(rec, r.WithContext(ctx), p)
	})
}

func (s *Server) authenticate(w http.ResponseWriter, r *http.Request) (*commonv1.Principal, string, bool) {
	token, found := authn.Bearer(r)
	if st, ok := s.cookieSession(r); !found && ok {
		// The console: its sealed session cookie stands for the bearer
		// token, with the CSRF check a cookie needs.
		if !s.csrfOK(r, st) {
			writeError(w, http.StatusForbidden, "csrf", "a console request that changes something needs the "+CSRFHeader+" header of its session, from the console's origin")
			return nil, "", false
		}
		token, found = st.Token, true
	}
	if !found {
		apiAuthFailures.WithLabelValues("token_missing").Inc()
		w.Header().Set("WWW-Authenticate", `Bearer realm="sluice"`)
		writeError(w, http.StatusUnauthorized, "token_missing", "send Authorization: Bearer <access token>")
		return nil, "", false
	}
	p, e := s.guard.Authn.Verify(r.Context(), token)
	if e != nil {
		apiAuthFailures.WithLabelValues(e.Code).Inc()
		status := http.StatusUnauthorized
		if e.Code == authn.CodeUnavailable {
			status = http.StatusServiceUnavailable
		}
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="sluice", error="invalid_token", error_description=%q`, e.Message))
		writeError(w, status, e.Code, e.Message)
		return nil, "", false
	}
	return p, token, true
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Started != nil {
		select {
		case <-s.cfg.Started:
		default:
			writeError(w, http.StatusServiceUnavailable, "starting", "still starting: the services and targets it starts with are not ready yet")
			return
		}
	}
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
	if s.sealerErr != nil {
		return fmt.Errorf("api: %w", s.sealerErr)
	}
	ln := s.cfg.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", s.cfg.Addr); err != nil {
			return fmt.Errorf("api listen: %w", err)
		}
	}
	// The control view gives the access groups and the identity
	// configuration; answer only once it is loaded.
	vctx, stopView := context.WithCancel(ctx)
	defer stopView()
	viewErr := make(chan error, 1)
	go func() { viewErr <- s.view.Follow(vctx, s.cfg.Conn.JS) }()
	select {
	case <-s.view.Ready():
	case err := <-viewErr:
		if err != nil {
			return fmt.Errorf("api: %w", err)
		}
		return nil
	case <-ctx.Done():
		return nil
	}
	go s.follow(vctx, "the session index", func(ctx context.Context) error {
		return sessionindex.Follow(ctx, s.cfg.Conn.JS, s.sessionIndex, s.sessionsReady)
	})
	go s.follow(vctx, "the workers' presence", func(ctx context.Context) error {
		return sessionindex.FollowWorkers(ctx, s.cfg.Conn.JS, s.workers, s.workersReady)
	})
	srv := &http.Server{Handler: s.mux, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	s.cfg.Log.Info().Str("addr", ln.Addr().String()).Msg("HTTP API listening")
	if s.cfg.Ready != nil {
		s.cfg.Ready()
	}
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

// follow keeps a read model (run follows it) until ctx is done, starting
// again after a failure.
func (s *Server) follow(ctx context.Context, what string, run func(context.Context) error) {
	for {
		err := run(ctx)
		if ctx.Err() != nil {
			return
		}
		s.cfg.Log.Warn().Err(err).Msg("following " + what + " failed; starting again")
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
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

// writeJSON answers v. Every 503 says when to try again: what is missing
// (a stream between leaders, a restarting service) is back within seconds,
// and the CLI waits that long before it sends a read again.
func writeJSON(w http.ResponseWriter, status int, v any) {
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "2")
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// unavailable answers 503 for a store that cannot be read now, and logs
// why: the client learns only that it may try again.
func (s *Server) unavailable(w http.ResponseWriter, reason string, err error) {
	s.cfg.Log.Warn().Err(err).Msg(reason)
	writeError(w, http.StatusServiceUnavailable, "unavailable", reason)
}

func writeError(w http.ResponseWriter, status int, code, reason string) {
	writeJSON(w, status, map[string]string{"error": code, "reason": reason})
}
