package pgworker

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/devcert"
	"sluice.dev/sluice/libs/gateway"
	"sluice.dev/sluice/libs/pgmask"
	"sluice.dev/sluice/libs/secrets"
)

// Config configures the worker. Zero values take the documented defaults.
type Config struct {
	// Conn is the worker's NATS connection (user "worker").
	Conn *bus.Conn
	Log  zerolog.Logger
	// Addr to listen on; default 127.0.0.1:15432. Listener overrides it.
	Addr     string
	Listener net.Listener
	// CertFile/KeyFile is the TLS certificate presented to clients. Only
	// when TLSDir is set instead (sluice dev, tests) is a development
	// certificate generated there; with neither, Run refuses to start.
	CertFile, KeyFile, TLSDir string
	// MasterKey opens sealed target credentials and keys `action: token`
	// masking, so that every replica gives a value the same token. Run
	// refuses to start without it.
	MasterKey *secrets.Key
	// Name identifies this worker replica in records; default host-pid.
	Name string
	// MaxMessageSize bounds a client message (default 64 MiB);
	// MaxServerMessageSize a server message (default 1 GiB).
	MaxMessageSize, MaxServerMessageSize int
	// StartupTimeout bounds TLS, startup and authentication (default 10s).
	StartupTimeout time.Duration
	// IdleTimeout ends a session whose client sends nothing (default 1h).
	IdleTimeout time.Duration
	// MaxSessions bounds concurrent sessions (default 10000).
	MaxSessions int
	// PolicyTimeout bounds one decision round trip (default 2s).
	PolicyTimeout time.Duration
	// HoldTimeout bounds how long a statement held for approval waits
	// (default 5m).
	HoldTimeout time.Duration
	// RecordTimeout bounds how long a statement waits for its record to be
	// durable before the session is closed (default 5s).
	RecordTimeout time.Duration
	// UpstreamPool is how many idle target connections of cleanly ended
	// sessions are kept per target and parameter set, reset with DISCARD
	// ALL before reuse (default 16; negative: none, every session logs in).
	UpstreamPool int
	// UpstreamIdleTimeout closes a pooled connection unused this long
	// (default 1m); UpstreamMaxAge one this old (default 30m).
	UpstreamIdleTimeout, UpstreamMaxAge time.Duration
	// CatalogMaxAge bounds how old the resolution of the masked columns
	// (their tables, and the views over them) a masked statement is
	// planned on may be: a view created outside a session is followed
	// by it at most this much later (default 1s; negative: resolved
	// once per session, as it starts).
	CatalogMaxAge time.Duration
	// Ready, if set, is called once the service serves.
	Ready func()
}

func (c *Config) defaults() {
	if c.Addr == "" {
		c.Addr = "127.0.0.1:15432"
	}
	if c.Name == "" {
		host, _ := os.Hostname()
		c.Name = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	if c.MaxMessageSize <= 0 {
		c.MaxMessageSize = 64 << 20
	}
	if c.UpstreamPool == 0 {
		c.UpstreamPool = 16
	}
	if c.UpstreamIdleTimeout <= 0 {
		c.UpstreamIdleTimeout = time.Minute
	}
	if c.UpstreamMaxAge <= 0 {
		c.UpstreamMaxAge = 30 * time.Minute
	}
	if c.CatalogMaxAge == 0 {
		c.CatalogMaxAge = time.Second
	}
	if c.MaxServerMessageSize <= 0 {
		c.MaxServerMessageSize = 1 << 30
	}
	if c.StartupTimeout <= 0 {
		c.StartupTimeout = 10 * time.Second
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = time.Hour
	}
	if c.MaxSessions <= 0 {
		c.MaxSessions = 10000
	}
	if c.PolicyTimeout <= 0 {
		c.PolicyTimeout = 2 * time.Second
	}
	if c.HoldTimeout <= 0 {
		c.HoldTimeout = 5 * time.Minute
	}
}

// Worker serves PostgreSQL clients. What is not PostgreSQL - the
// control-plane views, authentication, decisions and their cache,
// recording, approvals, session slots and re-verification - is the gateway
// kernel's (libs/gateway).
type Worker struct {
	cfg Config
	k   *gateway.Kernel
	tls *tls.Config

	mu       sync.Mutex
	sessions map[uint32]*session // by the process id we gave the client

	ready chan struct{}
	addr  atomic.Value

	// pool keeps target connections of cleanly ended sessions (nil: off).
	pool *upstreamPool
	// catalogs are the targets' masked columns as last resolved
	// (catalogs.go); plans the masking plans built on them (mask.go).
	catalogs pgmask.Catalogs
	plans    planCache
}

// New returns a worker.
func New(cfg Config) *Worker {
	cfg.defaults()
	return &Worker{
		cfg: cfg,
		k: gateway.New(gateway.Config{Conn: cfg.Conn, Log: cfg.Log, Protocol: "postgres", Name: cfg.Name, MaxSessions: cfg.MaxSessions,
			PolicyTimeout: cfg.PolicyTimeout, HoldTimeout: cfg.HoldTimeout, RecordTimeout: cfg.RecordTimeout}),
		sessions: map[uint32]*session{},
		ready:    make(chan struct{}),
		pool:     newUpstreamPool(cfg.UpstreamPool, cfg.UpstreamIdleTimeout, cfg.UpstreamMaxAge),
	}
}

// ErrNoMasterKey and ErrNoCertificate refuse a worker without the key or
// certificate a deployment must provide.
var (
	ErrNoMasterKey   = errors.New("pgworker: no master key: it opens sealed target credentials and keys token masking so that every replica agrees (--master-key-file or SLUICE_MASTER_KEY; create one with: sluice secret keygen)")
	ErrNoCertificate = errors.New("pgworker: no TLS certificate: clients send their access token as the password, only over TLS (--tls-cert and --tls-key)")
)

// Ready is closed when the worker accepts connections.
func (w *Worker) Ready() <-chan struct{} { return w.ready }

// Addr is the listening address once ready.
func (w *Worker) Addr() string { s, _ := w.addr.Load().(string); return s }

// Active is the number of open sessions.
func (w *Worker) Active() int64 { return w.k.Active() }

// Pooled is the number of idle target connections kept for reuse.
func (w *Worker) Pooled() int { return w.pool.size() }

// CatalogResolutions is how many times the worker has resolved the masked
// columns on a target (as a session started, or for open sessions).
func (w *Worker) CatalogResolutions() int64 { return w.catalogs.Resolutions() }

// Run serves until ctx is done; open sessions are then closed.
func (w *Worker) Run(ctx context.Context) error {
	if w.cfg.MasterKey == nil {
		return ErrNoMasterKey
	}
	cert, err := w.certificate()
	if err != nil {
		return err
	}
	w.tls = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{"postgresql"}}
	// The views are loaded before anything is served: a worker with a
	// dead approvals view would refuse every approved statement as
	// undecided.
	stop, err := w.k.Start(ctx, w.cfg.MasterKey)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("pgworker: %w", err)
	}
	defer stop()
	sub, err := w.cfg.Conn.NC.Subscribe(bus.SubjectPGCancel, w.onRemoteCancel)
	if err != nil {
		return fmt.Errorf("pgworker: %w", err)
	}
	defer sub.Unsubscribe() //nolint:errcheck
	renewals, err := w.serveRenewals(ctx)
	if err != nil {
		return fmt.Errorf("pgworker: %w", err)
	}
	defer renewals.Unsubscribe() //nolint:errcheck
	ln := w.cfg.Listener
	if ln == nil {
		if ln, err = net.Listen("tcp", w.cfg.Addr); err != nil {
			return fmt.Errorf("pgworker listen: %w", err)
		}
	}
	w.addr.Store(ln.Addr().String())
	close(w.ready)
	w.cfg.Log.Info().Str("addr", ln.Addr().String()).Str("worker", w.cfg.Name).Msg("PostgreSQL worker listening")
	if w.cfg.Ready != nil {
		w.cfg.Ready()
	}
	defer w.pool.close()
	return w.k.Serve(ctx, ln, w.serve)
}

func (w *Worker) certificate() (tls.Certificate, error) {
	if w.cfg.CertFile != "" {
		c, err := tls.LoadX509KeyPair(w.cfg.CertFile, w.cfg.KeyFile)
		if err != nil {
			return c, fmt.Errorf("pgworker certificate: %w", err)
		}
		return c, nil
	}
	if w.cfg.TLSDir == "" {
		return tls.Certificate{}, ErrNoCertificate
	}
	return devcert.LoadOrCreate(w.cfg.TLSDir)
}

// Cancel keys: every session gets a random process id and secret of our
// own; a CancelRequest that names them cancels that session's query only.

func (w *Worker) register(s *session) {
	var b [8]byte
	w.mu.Lock()
	defer w.mu.Unlock()
	for {
		if _, err := rand.Read(b[:]); err != nil {
			panic(err)
		}
		pid := binary.BigEndian.Uint32(b[:4]) & 0x7fffffff
		if pid == 0 || w.sessions[pid] != nil {
			continue
		}
		s.pid = pid
		copy(s.secret[:], b[4:])
		w.sessions[pid] = s
		w.k.Register(s)
		return
	}
}

func (w *Worker) unregister(s *session) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.sessions[s.pid] == s {
		delete(w.sessions, s.pid)
	}
	w.k.Unregister(s)
}

// cancel forwards a cancel to the session's upstream if the key matches.
func (w *Worker) cancel(pid uint32, secret []byte) bool {
	w.mu.Lock()
	s := w.sessions[pid]
	w.mu.Unlock()
	if s == nil || len(secret) != 4 || subtle.ConstantTimeCompare(secret, s.secret[:]) != 1 {
		return false
	}
	if !s.cancelHold() {
		s.cancelUpstream()
	}
	return true
}

// handleCancel serves a CancelRequest; a key not found here may belong to
// another replica, which is asked over NATS.
func (w *Worker) handleCancel(pid uint32, secret []byte) {
	if w.cancel(pid, secret) {
		return
	}
	msg := make([]byte, 4+len(secret))
	binary.BigEndian.PutUint32(msg, pid)
	copy(msg[4:], secret)
	_ = w.cfg.Conn.NC.Publish(bus.SubjectPGCancel, msg)
}

func (w *Worker) onRemoteCancel(m *nats.Msg) {
	if len(m.Data) < 4 {
		return
	}
	w.cancel(binary.BigEndian.Uint32(m.Data[:4]), m.Data[4:])
}

// The kernel's view of a session (gateway.Session).

func (s *session) ID() string             { return s.id }
func (s *session) CallerToken() string    { return s.callerToken() }
func (s *session) PrincipalKey() [16]byte { return s.pkey }

// End closes the session with the FATAL error the client shows.
func (s *session) End(code gateway.EndCode, reason string) {
	switch code {
	case gateway.EndRefused:
		s.shutdown("the identity configuration no longer accepts the token",
			fatal(stateInvalidPassword, "sluice: "+reason, "reconnect with a token the current configuration accepts"))
	case gateway.EndChanged:
		s.shutdown("the identity configuration changed who the token names",
			fatal(stateInvalidPassword, "sluice: "+reason, "reconnect to start a session as the principal you are now"))
	case gateway.EndKilled:
		s.shutdown(reason, fatal(stateAdminShutdown, "sluice: the session was "+reason, ""))
	case gateway.EndFenced:
		s.shutdown(reason, fatal(stateAdminShutdown, "sluice: "+reason+"; the session is closed", "connect again: a gateway in touch with its control plane serves you"))
	default:
		s.shutdown("the worker is shutting down", fatal(stateAdminShutdown, "sluice: the gateway is shutting down", ""))
	}
}
