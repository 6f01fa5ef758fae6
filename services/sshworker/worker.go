package sshworker

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/crypto/ssh"

	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/gateway"
	"sluice.dev/sluice/libs/secrets"
	"sluice.dev/sluice/libs/sshca"
	identityv1 "sluice.dev/sluice/proto/sluice/identity/v1"
)

// Config configures the worker. Zero values take the documented defaults.
type Config struct {
	// Conn is the worker's NATS connection (identity "sshworker").
	Conn *bus.Conn
	Log  zerolog.Logger
	// Addr to listen on; default 127.0.0.1:12222. Listener overrides it.
	Addr     string
	Listener net.Listener
	// HostKeyFile is the worker's SSH host key (OpenSSH format). With
	// CreateHostKey (sluice dev, tests) one is generated there if missing.
	HostKeyFile   string
	CreateHostKey bool
	// UserAuthorities are the Sluice SSH user authorities whose
	// certificates the worker accepts; when empty, the worker asks the
	// identity service (which signs them) at start.
	UserAuthorities []ssh.PublicKey
	// MasterKey opens sealed target credentials.
	MasterKey *secrets.Key
	// Name identifies this worker replica in records; default host-pid.
	Name string
	// StartupTimeout bounds the SSH handshake and authentication (default
	// 10s); IdleTimeout ends a session with no traffic (default 1h).
	StartupTimeout, IdleTimeout time.Duration
	// MaxSessions bounds concurrent sessions (default 10000).
	MaxSessions int
	// PolicyTimeout, HoldTimeout and RecordTimeout as for the kernel.
	PolicyTimeout, HoldTimeout, RecordTimeout time.Duration
	// TargetTimeout bounds connecting to a target (default 10s).
	TargetTimeout time.Duration
	// Ready, if set, is called once the service serves.
	Ready func()
}

func (c *Config) defaults() {
	if c.Addr == "" {
		c.Addr = "127.0.0.1:12222"
	}
	if c.Name == "" {
		host, _ := os.Hostname()
		c.Name = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	if c.StartupTimeout <= 0 {
		c.StartupTimeout = 10 * time.Second
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = time.Hour
	}
	if c.TargetTimeout <= 0 {
		c.TargetTimeout = 10 * time.Second
	}
}

// Worker serves SSH clients.
type Worker struct {
	cfg     Config
	k       *gateway.Kernel
	host    ssh.Signer
	checker *sshca.Checker
	// tokenKey opens the token a certificate carries.
	tokenKey *secrets.Key
	ready    chan struct{}
	addr     atomic.Value
}

// Errors for a worker a deployment did not equip.
var (
	ErrNoMasterKey = errors.New("sshworker: no master key: it opens sealed target credentials (--master-key-file or SLUICE_MASTER_KEY)")
	ErrNoHostKey   = errors.New("sshworker: no host key (--ssh-host-key)")
)

// New returns a worker.
func New(cfg Config) *Worker {
	cfg.defaults()
	return &Worker{
		cfg: cfg,
		k: gateway.New(gateway.Config{Conn: cfg.Conn, Log: cfg.Log, Protocol: "ssh", Name: cfg.Name, MaxSessions: cfg.MaxSessions,
			PolicyTimeout: cfg.PolicyTimeout, HoldTimeout: cfg.HoldTimeout, RecordTimeout: cfg.RecordTimeout}),
		checker: sshca.NewChecker(cfg.UserAuthorities...),
		ready:   make(chan struct{}),
	}
}

// Ready is closed when the worker accepts connections.
func (w *Worker) Ready() <-chan struct{} { return w.ready }

// Addr is the listening address once ready.
func (w *Worker) Addr() string { s, _ := w.addr.Load().(string); return s }

// Active is the number of open sessions.
func (w *Worker) Active() int64 { return w.k.Active() }

// Run serves until ctx is done; open sessions are then closed.
func (w *Worker) Run(ctx context.Context) error {
	switch {
	case w.cfg.MasterKey == nil:
		return ErrNoMasterKey
	case w.cfg.HostKeyFile == "":
		return ErrNoHostKey
	}
	if len(w.cfg.UserAuthorities) == 0 {
		keys, err := w.fetchAuthorities(ctx)
		if err != nil {
			return err
		}
		w.checker = sshca.NewChecker(keys...)
	}
	host, err := LoadHostKey(w.cfg.HostKeyFile, w.cfg.CreateHostKey)
	if err != nil {
		return err
	}
	w.host = host
	w.tokenKey = w.cfg.MasterKey.Subkey(sshca.TokenKeyPurpose)
	stop, err := w.k.Start(ctx, w.cfg.MasterKey)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("sshworker: %w", err)
	}
	defer stop()
	ln := w.cfg.Listener
	if ln == nil {
		if ln, err = net.Listen("tcp", w.cfg.Addr); err != nil {
			return fmt.Errorf("sshworker listen: %w", err)
		}
	}
	w.addr.Store(ln.Addr().String())
	close(w.ready)
	w.cfg.Log.Info().Str("addr", ln.Addr().String()).Str("worker", w.cfg.Name).Str("host_key", ssh.FingerprintSHA256(host.PublicKey())).Msg("SSH worker listening")
	if w.cfg.Ready != nil {
		w.cfg.Ready()
	}
	return w.k.Serve(ctx, ln, w.serve)
}

// fetchAuthorities asks the identity service for the SSH user authorities,
// waiting for it (and saying so every ten seconds) until it answers.
func (w *Worker) fetchAuthorities(ctx context.Context) ([]ssh.PublicKey, error) {
	start, said := time.Now(), time.Time{}
	for {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		var reply identityv1.SSHAuthorityReply
		err := bus.Request(rctx, w.cfg.Conn.NC, bus.APIIdentitySSHAuthority, &identityv1.SSHAuthorityRequest{}, &reply)
		cancel()
		if err == nil && reply.GetError() != nil {
			return nil, fmt.Errorf("sshworker: the identity service has no SSH user authority: %s", reply.GetError().GetMessage())
		}
		if err == nil {
			var keys []ssh.PublicKey
			for _, k := range reply.GetPublicKeys() {
				pk, _, _, _, perr := ssh.ParseAuthorizedKey([]byte(k))
				if perr != nil {
					return nil, fmt.Errorf("sshworker: SSH user authority: %w", perr)
				}
				keys = append(keys, pk)
			}
			return keys, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if time.Since(said) >= 10*time.Second {
			said = time.Now()
			w.cfg.Log.Warn().Err(err).Dur("waited", time.Since(start).Round(time.Second)).Msg("waiting for the identity service's SSH user authority")
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// HostKey is the worker's public host key, once Run has loaded it.
func (w *Worker) HostKey() ssh.PublicKey {
	if w.host == nil {
		return nil
	}
	return w.host.PublicKey()
}

// LoadHostKey reads an OpenSSH private key, creating an ed25519 one when
// create is set and there is none.
func LoadHostKey(path string, create bool) (ssh.Signer, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && create {
		_, key, gerr := ed25519.GenerateKey(rand.Reader)
		if gerr != nil {
			return nil, gerr
		}
		block, merr := ssh.MarshalPrivateKey(key, "sluice ssh worker")
		if merr != nil {
			return nil, merr
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, err
		}
		b = pem.EncodeToMemory(block)
		if err := os.WriteFile(path, b, 0o600); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, fmt.Errorf("sshworker host key: %w", err)
	}
	s, err := ssh.ParsePrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("sshworker host key %s: %w", path, err)
	}
	return s, nil
}
