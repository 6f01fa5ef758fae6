package k8sworker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/devcert"
	"sluice.dev/sluice/libs/gateway"
	"sluice.dev/sluice/libs/masking"
	"sluice.dev/sluice/libs/secrets"
	"sluice.dev/sluice/libs/targets"
	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
)

// Config configures the worker. Zero values take the documented defaults.
type Config struct {
	// Conn is the worker's NATS connection (identity "k8sworker").
	Conn *bus.Conn
	Log  zerolog.Logger
	// Addr to listen on (TLS); default 127.0.0.1:16443. Listener
	// overrides it.
	Addr     string
	Listener net.Listener
	// CertFile and KeyFile are the certificate presented to clients; with
	// TLSDir instead, a development certificate is made there.
	CertFile, KeyFile, TLSDir string
	// MasterKey opens sealed target credentials.
	MasterKey *secrets.Key
	// Name identifies this worker replica in records; default host-pid.
	Name string
	// MaxSessions bounds concurrent sessions (default 10000).
	MaxSessions int
	// PolicyTimeout, HoldTimeout and RecordTimeout as for the kernel.
	PolicyTimeout, HoldTimeout, RecordTimeout time.Duration
	// MaxBody bounds a request body (default 3 MiB, the API server's
	// own limit); MaxWatch bounds a watch (default 30m); MaxInFlight
	// bounds one session's requests at once (default 64).
	MaxBody     int64
	MaxWatch    time.Duration
	MaxInFlight int
	// MaxStreams bounds the exec, attach and port-forward streams one
	// principal keeps open at once through this worker (default 8): each
	// stream is a connection, and so a session, of its own.
	MaxStreams int
	// MaxMasked bounds a response that must be masked, read whole
	// (default 64 MiB): a larger one is refused, never passed unread.
	MaxMasked int64
	// Ready, if set, is called once the service serves.
	Ready func()
}

func (c *Config) defaults() {
	if c.Addr == "" {
		c.Addr = "127.0.0.1:16443"
	}
	if c.Name == "" {
		host, _ := os.Hostname()
		c.Name = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	if c.MaxBody <= 0 {
		c.MaxBody = 3 << 20
	}
	if c.MaxWatch <= 0 {
		c.MaxWatch = 30 * time.Minute
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = 64
	}
	if c.MaxStreams <= 0 {
		c.MaxStreams = 8
	}
	if c.MaxMasked <= 0 {
		c.MaxMasked = 64 << 20
	}
}

// Errors for a worker a deployment did not equip.
var (
	ErrNoMasterKey   = errors.New("k8sworker: no master key: it opens sealed target credentials (--master-key-file or SLUICE_MASTER_KEY)")
	ErrNoCertificate = errors.New("k8sworker: no TLS certificate (--tls-cert and --tls-key): clients send tokens")
)

// Worker serves Kubernetes API clients.
type Worker struct {
	cfg   Config
	k     *gateway.Kernel
	ready chan struct{}
	addr  atomic.Value

	mu         sync.Mutex
	transports map[string]*upstream // by target name
	conns      sync.Map             // net.Conn → *clientConn
	upgrades   upgradeFailures
	// streams counts each principal's open streams (MaxStreams).
	streams map[[16]byte]int
	// bodyMasker masks request bodies for records and approvals (every
	// detector, whoever sent them).
	bodyMasker *masking.Masker
}

// New returns a worker.
func New(cfg Config) *Worker {
	cfg.defaults()
	return &Worker{
		cfg: cfg,
		k: gateway.New(gateway.Config{Conn: cfg.Conn, Log: cfg.Log, Protocol: "kubernetes", Name: cfg.Name, MaxSessions: cfg.MaxSessions,
			PolicyTimeout: cfg.PolicyTimeout, HoldTimeout: cfg.HoldTimeout, RecordTimeout: cfg.RecordTimeout}),
		ready:      make(chan struct{}),
		transports: map[string]*upstream{},
		streams:    map[[16]byte]int{},
	}
}

// takeStream counts a stream of the principal pkey, unless it already
// has MaxStreams open; the returned func gives it back.
func (w *Worker) takeStream(pkey [16]byte) (release func(), ok bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.streams[pkey] >= w.cfg.MaxStreams {
		return nil, false
	}
	w.streams[pkey]++
	return func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.streams[pkey]--; w.streams[pkey] <= 0 {
			delete(w.streams, pkey)
		}
	}, true
}

// Ready is closed when the worker accepts connections.
func (w *Worker) Ready() <-chan struct{} { return w.ready }

// Addr is the listening address once ready.
func (w *Worker) Addr() string { s, _ := w.addr.Load().(string); return s }

// Active is the number of open sessions.
func (w *Worker) Active() int64 { return w.k.Active() }

// Run serves until ctx is done.
func (w *Worker) Run(ctx context.Context) error {
	if w.cfg.MasterKey == nil {
		return ErrNoMasterKey
	}
	var cert tls.Certificate
	var err error
	switch {
	case w.cfg.CertFile != "":
		if cert, err = tls.LoadX509KeyPair(w.cfg.CertFile, w.cfg.KeyFile); err != nil {
			return fmt.Errorf("k8sworker certificate: %w", err)
		}
	case w.cfg.TLSDir != "":
		if cert, err = devcert.LoadOrCreate(w.cfg.TLSDir); err != nil {
			return err
		}
	default:
		return ErrNoCertificate
	}
	if w.bodyMasker, err = masking.New(masking.Config{Detectors: masking.Detectors(), Action: masking.Action{Kind: "redact"}}); err != nil {
		return err
	}
	stop, err := w.k.Start(ctx, w.cfg.MasterKey)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("k8sworker: %w", err)
	}
	defer stop()
	ln := w.cfg.Listener
	if ln == nil {
		if ln, err = net.Listen("tcp", w.cfg.Addr); err != nil {
			return fmt.Errorf("k8sworker listen: %w", err)
		}
	}
	srv := &http.Server{
		Handler:           w,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}},
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       5 * time.Minute,
		MaxHeaderBytes:    1 << 20,
		ConnContext:       w.connContext,
		ConnState:         w.connState,
		// Handshakes that fail (a port probe, a client that does not
		// trust the certificate) are the client's business: debug only.
		ErrorLog: log.New(debugWriter{w.cfg.Log}, "", 0),
	}
	w.addr.Store(ln.Addr().String())
	close(w.ready)
	w.cfg.Log.Info().Str("addr", ln.Addr().String()).Str("worker", w.cfg.Name).Msg("Kubernetes worker listening")
	if w.cfg.Ready != nil {
		w.cfg.Ready()
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	select {
	case <-ctx.Done():
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("k8sworker: %w", err)
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	_ = srv.Close()
	w.conns.Range(func(_, v any) bool {
		v.(*clientConn).end("the gateway is shutting down")
		return true
	})
	return nil
}

// upstream is how the worker reaches one target.
type upstream struct {
	*targets.Kubernetes
	spec   *controlv1.KubernetesTarget
	digest string
}

// upstreamFor returns the target's transport and credential, built once
// per target configuration.
func (w *Worker) upstreamFor(name string, tc *controlv1.TargetConfigured) (*upstream, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if u, ok := w.transports[name]; ok && u.digest == tc.GetDigest() {
		return u, nil
	}
	spec := tc.GetSpec().GetKubernetes()
	k, err := targets.KubernetesClient(spec, w.cfg.MasterKey)
	if err != nil {
		return nil, err
	}
	if old, ok := w.transports[name]; ok {
		old.Transport.CloseIdleConnections()
	}
	u := &upstream{Kubernetes: k, spec: spec, digest: tc.GetDigest()}
	w.transports[name] = u
	return u, nil
}

// debugWriter logs the HTTP server's own messages at debug level.
type debugWriter struct{ log zerolog.Logger }

func (d debugWriter) Write(p []byte) (int, error) {
	d.log.Debug().Msg(strings.TrimSpace(string(p)))
	return len(p), nil
}
