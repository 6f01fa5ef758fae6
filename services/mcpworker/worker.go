package mcpworker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/rs/zerolog"

	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/gateway"
	"sluice.dev/sluice/libs/pgmask"
	"sluice.dev/sluice/libs/secrets"
)

// Config configures the worker. Zero values take the documented defaults.
type Config struct {
	// Conn is the worker's NATS connection (identity "mcpworker").
	Conn *bus.Conn
	Log  zerolog.Logger
	// Addr, when set, is a listen address of the worker's own (sluice
	// serve mcpworker); Listener overrides it. Without either, the worker
	// only serves through Handler (sluice dev mounts it on the API server).
	Addr     string
	Listener net.Listener
	// PublicURL is the endpoint's URL as clients reach it
	// (https://sluice.example.com/mcp), the resource its OAuth metadata
	// names; by default it is derived from each request's Host.
	PublicURL string
	// Issuers are the trusted issuers the OAuth metadata names until an
	// identity provider is applied (the identity service's own setting).
	Issuers []string
	// AllowedOrigins are browser origins (https://console.example.com)
	// allowed besides the endpoint's own; a request with any other Origin
	// header is refused.
	AllowedOrigins []string
	// MasterKey opens sealed target credentials.
	MasterKey *secrets.Key
	// Name identifies this worker replica in records; default host-pid.
	Name string
	// MaxSessions bounds open MCP sessions (default 10000), and
	// MaxSessionsPerPrincipal those of one principal (default 64).
	MaxSessions, MaxSessionsPerPrincipal int
	// SessionTimeout ends an MCP session that makes no request for that
	// long (default 30m).
	SessionTimeout time.Duration
	// PolicyTimeout, HoldTimeout and RecordTimeout as for the kernel.
	PolicyTimeout, HoldTimeout, RecordTimeout time.Duration
	// TargetTimeout bounds connecting to a target (default 10s);
	// CallTimeout bounds running one call on it (default 60s, the
	// PostgreSQL statement_timeout too).
	TargetTimeout, CallTimeout time.Duration
	// CatalogMaxAge bounds how old the resolution of the masked columns
	// (their tables and every view over them) a masked call is planned on
	// may be (default 1s; negative: resolved for every call).
	CatalogMaxAge time.Duration
	// MaxPending bounds the held calls an MCP session may have waiting to
	// be collected (default 16).
	MaxPending int
	// Ready, if set, is called once the service serves.
	Ready func()
}

func (c *Config) defaults() {
	if c.Name == "" {
		host, _ := os.Hostname()
		c.Name = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	if c.MaxSessions <= 0 {
		c.MaxSessions = 10000
	}
	if c.MaxSessionsPerPrincipal <= 0 {
		c.MaxSessionsPerPrincipal = 64
	}
	if c.SessionTimeout <= 0 {
		c.SessionTimeout = 30 * time.Minute
	}
	if c.TargetTimeout <= 0 {
		c.TargetTimeout = 10 * time.Second
	}
	if c.CatalogMaxAge == 0 {
		c.CatalogMaxAge = time.Second
	}
	if c.CallTimeout <= 0 {
		c.CallTimeout = 60 * time.Second
	}
	if c.MaxPending <= 0 {
		c.MaxPending = 16
	}
}

// ErrNoMasterKey: the worker cannot open the credentials it logs in with.
var ErrNoMasterKey = errors.New("mcpworker: no master key: it opens sealed target credentials (--master-key-file or SLUICE_MASTER_KEY)")

// Worker serves MCP clients.
type Worker struct {
	cfg   Config
	k     *gateway.Kernel
	mcp   *mcp.StreamableHTTPHandler
	ready chan struct{}
	addr  atomic.Value
	// runCtx is Run's context: sessions live as long as the worker, not
	// as long as the HTTP request that opened them.
	runCtx context.Context

	mu       sync.Mutex
	sessions map[string]*session // by MCP session id
	// catalogs are the targets' masked columns as last resolved.
	catalogs pgmask.Catalogs

	// open counts the MCP sessions open, in all and by principal key.
	openMu  sync.Mutex
	openAll int
	open    map[[16]byte]int
	// publicHost is PublicURL's host, the only Host accepted when set.
	publicHost string
}

// New returns a worker.
func New(cfg Config) *Worker {
	cfg.defaults()
	w := &Worker{
		cfg: cfg,
		k: gateway.New(gateway.Config{Conn: cfg.Conn, Log: cfg.Log, Protocol: "mcp", Name: cfg.Name, MaxSessions: cfg.MaxSessions,
			PolicyTimeout: cfg.PolicyTimeout, HoldTimeout: cfg.HoldTimeout, RecordTimeout: cfg.RecordTimeout}),
		ready:    make(chan struct{}),
		sessions: map[string]*session{},
		open:     map[[16]byte]int{},
		runCtx:   context.Background(),
	}
	if u, err := url.Parse(cfg.PublicURL); err == nil && cfg.PublicURL != "" {
		w.publicHost = u.Host
	}
	server := w.newServer()
	w.mcp = mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, &mcp.StreamableHTTPOptions{
		SessionTimeout: cfg.SessionTimeout,
		// DNS rebinding: on a loopback listener the SDK refuses a Host
		// that is not loopback; behind a public URL, only its host is
		// accepted (auth.go).
		DisableLocalhostProtection: w.publicHost != "",
		MaxRequestBodyBytes:        1 << 20,
	})
	return w
}

// admit counts a new MCP session against the worker's and its principal's
// bounds, until it closes.
func (w *Worker) admit(req mcp.Request) error {
	extra := req.GetExtra()
	if extra == nil {
		return errNoCaller
	}
	c, ok := callerOf(extra.TokenInfo)
	ss, _ := req.GetSession().(*mcp.ServerSession)
	if !ok || ss == nil {
		return errNoCaller
	}
	w.openMu.Lock()
	if w.openAll >= w.cfg.MaxSessions || w.open[c.pkey] >= w.cfg.MaxSessionsPerPrincipal {
		w.openMu.Unlock()
		go func() { _ = ss.Close() }()
		return fmt.Errorf("too many open MCP sessions (at most %d for one principal); close some (they also end after %s idle)",
			w.cfg.MaxSessionsPerPrincipal, w.cfg.SessionTimeout)
	}
	w.openAll++
	w.open[c.pkey]++
	w.openMu.Unlock()
	go func() {
		_ = ss.Wait()
		w.openMu.Lock()
		w.openAll--
		if w.open[c.pkey]--; w.open[c.pkey] <= 0 {
			delete(w.open, c.pkey)
		}
		w.openMu.Unlock()
	}()
	return nil
}

// Ready is closed when the worker serves calls.
func (w *Worker) Ready() <-chan struct{} { return w.ready }

// Addr is the worker's own listening address, once ready ("" when it has
// none).
func (w *Worker) Addr() string { s, _ := w.addr.Load().(string); return s }

// Active is the number of open MCP sessions that have made a call.
func (w *Worker) Active() int64 { return w.k.Active() }

// Run serves until ctx is done.
func (w *Worker) Run(ctx context.Context) error {
	if w.cfg.MasterKey == nil {
		return ErrNoMasterKey
	}
	if w.cfg.PublicURL != "" {
		if u, err := url.Parse(w.cfg.PublicURL); err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
			return fmt.Errorf("mcpworker: --mcp-public-url %q is not an http(s) URL with a host", w.cfg.PublicURL)
		}
	}
	stop, err := w.k.Start(ctx, w.cfg.MasterKey)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("mcpworker: %w", err)
	}
	defer stop()
	w.runCtx = ctx
	ln := w.cfg.Listener
	if ln == nil && w.cfg.Addr != "" {
		if ln, err = net.Listen("tcp", w.cfg.Addr); err != nil {
			return fmt.Errorf("mcpworker listen: %w", err)
		}
	}
	var srv *http.Server
	if ln != nil {
		mux := http.NewServeMux()
		mux.Handle("/mcp", w.Handler())
		mux.Handle(MetadataPath, w.MetadataHandler())
		mux.HandleFunc("GET /healthz", func(rw http.ResponseWriter, _ *http.Request) { _, _ = rw.Write([]byte("ok\n")) })
		srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
		w.addr.Store(ln.Addr().String())
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				w.cfg.Log.Error().Err(err).Msg("MCP listener failed")
			}
		}()
	}
	close(w.ready)
	w.cfg.Log.Info().Str("addr", w.Addr()).Str("worker", w.cfg.Name).Msg("MCP worker ready")
	if w.cfg.Ready != nil {
		w.cfg.Ready()
	}
	<-ctx.Done()
	if srv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = srv.Shutdown(sctx)
		cancel()
	}
	w.each(func(s *session) { s.End(gateway.EndShutdown, "the gateway is shutting down") })
	return nil
}

func (w *Worker) each(fn func(*session)) {
	w.mu.Lock()
	open := make([]*session, 0, len(w.sessions))
	for _, s := range w.sessions {
		open = append(open, s)
	}
	w.mu.Unlock()
	for _, s := range open {
		fn(s)
	}
}
