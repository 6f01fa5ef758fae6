// Package stack wires Sluice's services: it is the one place that knows every
// service, used by `sluice serve <service>` to run one and by `sluice dev` to
// run them all in one process.
package stack

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/secrets"
	"sluice.dev/sluice/services/api"
	"sluice.dev/sluice/services/approvals"
	"sluice.dev/sluice/services/control"
	"sluice.dev/sluice/services/exporter"
	"sluice.dev/sluice/services/identity"
	"sluice.dev/sluice/services/pgworker"
	"sluice.dev/sluice/services/policy"
	"sluice.dev/sluice/services/recorder"
	"sluice.dev/sluice/services/slackbot"
)

// Options holds every service's settings. The zero value is not useful:
// Conn must be set.
type Options struct {
	Conn *bus.Conn
	// WorkerConn is the protocol workers' connection (NATS user "worker");
	// nil means Conn.
	WorkerConn *bus.Conn
	Log        zerolog.Logger
	Topology   bus.Topology

	// Identity provider used until one is applied.
	Provider identity.Provider

	// API
	APIAddr     string
	APIListener net.Listener
	APIMounts   map[string]http.Handler
	CLIClientID string

	// RecorderKey signs audit checkpoints.
	RecorderKey ed25519.PrivateKey

	// Export sinks (the exporter runs only when one is set).
	SyslogAddr     string
	SyslogTLS      bool
	HECURL         string
	HECToken       string
	ExportFormat   string
	exportRequired bool

	// MasterKey opens sealed target credentials (workers).
	MasterKey *secrets.Key
	// PGAddr is the PostgreSQL worker's listener; TLSDir holds its
	// generated development certificate when none is configured.
	PGAddr string
	TLSDir string
	// TLSCert and TLSKey are the workers' certificate; without them a
	// development certificate is generated in TLSDir.
	TLSCert, TLSKey string
	// PGListener, if set, is used instead of PGAddr (tests).
	PGListener net.Listener
	// HoldTimeout bounds how long a held statement waits for approval.
	HoldTimeout time.Duration
	// UpstreamPool is the idle target connections a PostgreSQL worker
	// keeps per target for reuse (see pgworker.Config).
	UpstreamPool int

	// Slack bot (runs only when a token is set).
	SlackToken, SlackSigningSecret, SlackChannel, SlackAddr string
	slackRequired                                           bool
}

func (o *Options) workerConn() *bus.Conn {
	if o.WorkerConn != nil {
		return o.WorkerConn
	}
	return o.Conn
}

// Service is one runnable service.
type Service struct {
	Name        string
	Description string
	Run         func(ctx context.Context, o *Options) error
}

// Services lists every service in start order.
func Services() []Service {
	return []Service{
		{"identity", "verifies OIDC access tokens (sluice.api.identity.*)", runIdentity},
		{"control", "owns targets, policies, approver groups, IdP settings (sluice.api.control.*)", runControl},
		{"policy", "rules on every command with CEL (sluice.api.policy.*)", runPolicy},
		{"approvals", "held commands and just-in-time grants (sluice.api.approvals.*)", runApprovals},
		{"recorder", "chains session events into the AUDIT stream", runRecorder},
		{"exporter", "delivers the audit log to syslog and HEC collectors", runExporter},
		{"slackbot", "approvals from Slack: interactive messages, signed button clicks", runSlackbot},
		{"pgworker", "the PostgreSQL gateway on :15432", runPGWorker},
		{"api", "the HTTP API on :8080", runAPI},
	}
}

// Names lists the service names.
func Names() []string {
	var out []string
	for _, s := range Services() {
		out = append(out, s.Name)
	}
	sort.Strings(out)
	return out
}

// Find returns a service by name.
func Find(name string) (Service, error) {
	for _, s := range Services() {
		if s.Name == name {
			return s, nil
		}
	}
	return Service{}, fmt.Errorf("unknown service %q (services: %s)", name, strings.Join(Names(), ", "))
}

// Provision creates the topology, retrying while a cluster forms. Protocol
// workers (names holds nothing else) may not create streams: they wait
// until the control-plane services have, so that start order never matters.
func Provision(ctx context.Context, o *Options, names ...string) error {
	if onlyWorkers(names) {
		return awaitTopology(ctx, o)
	}
	var err error
	for i := 0; i < 60; i++ {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err = bus.Provision(pctx, o.Conn.JS, o.Topology)
		cancel()
		if err == nil || ctx.Err() != nil {
			return err
		}
		if last := o.Conn.NC.LastError(); errors.Is(last, nats.ErrPermissionViolation) {
			return fmt.Errorf("provision streams: %w (an existing stream differs from this configuration and only the NATS admin may change it)", last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	return fmt.Errorf("provision streams: %w", err)
}

func onlyWorkers(names []string) bool {
	for _, n := range names {
		if n != "pgworker" {
			return false
		}
	}
	return len(names) > 0
}

// awaitTopology waits until every stream and bucket exists, saying what it
// waits for every ten seconds.
func awaitTopology(ctx context.Context, o *Options) error {
	start, said := time.Now(), time.Time{}
	for {
		qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		missing, err := bus.Missing(qctx, o.Conn.JS)
		cancel()
		if err == nil && missing == "" {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Since(said) >= 10*time.Second {
			said = time.Now()
			ev := o.Log.Warn().Dur("waited", time.Since(start).Round(time.Second))
			if err != nil {
				ev = ev.Err(err)
			} else {
				ev = ev.Str("missing", missing)
			}
			ev.Msg("waiting for the control-plane services to create the NATS streams and buckets")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// RunAll runs the named services (all when names is empty) until ctx is
// done or one fails.
func RunAll(ctx context.Context, o *Options, names ...string) error {
	o.exportRequired = contains(names, "exporter")
	o.slackRequired = contains(names, "slackbot")
	g, ctx := errgroup.WithContext(ctx)
	for _, s := range Services() {
		if len(names) > 0 && !contains(names, s.Name) {
			continue
		}
		s := s
		g.Go(func() error {
			l := o.Log.With().Str("service", s.Name).Logger()
			so := *o
			so.Log = l
			if err := s.Run(ctx, &so); err != nil && ctx.Err() == nil {
				return fmt.Errorf("%s: %w", s.Name, err)
			}
			return nil
		})
	}
	return g.Wait()
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func runIdentity(ctx context.Context, o *Options) error {
	return identity.Run(ctx, identity.Config{Conn: o.Conn, Provider: o.Provider, Log: o.Log})
}

func runControl(ctx context.Context, o *Options) error {
	return control.New(control.Config{Conn: o.Conn, Log: o.Log}).Run(ctx)
}

func runAPI(ctx context.Context, o *Options) error {
	return api.New(api.Config{
		Addr: o.APIAddr, Listener: o.APIListener, Conn: o.Conn, Mounts: o.APIMounts,
		Issuer: o.Provider.Issuer, Audience: o.Provider.Audience, CLIClientID: o.CLIClientID, Log: o.Log,
	}).Run(ctx)
}

func runPolicy(ctx context.Context, o *Options) error {
	return policy.New(policy.Config{Conn: o.Conn, Log: o.Log}).Run(ctx)
}

func runRecorder(ctx context.Context, o *Options) error {
	if o.RecorderKey == nil {
		return fmt.Errorf("the recorder needs a signing key (--recorder-key-file)")
	}
	return recorder.New(recorder.Config{Conn: o.Conn, Log: o.Log, SigningKey: o.RecorderKey}).Run(ctx)
}

func runExporter(ctx context.Context, o *Options) error {
	var sinks []exporter.Sink
	if o.SyslogAddr != "" {
		sl := &exporter.Syslog{Addr: o.SyslogAddr}
		if o.SyslogTLS {
			sl.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		sinks = append(sinks, sl)
	}
	if o.HECURL != "" {
		sinks = append(sinks, &exporter.HEC{URL: o.HECURL, Token: o.HECToken})
	}
	if len(sinks) == 0 {
		if o.exportRequired {
			return fmt.Errorf("no export sink: give --syslog or --hec-url")
		}
		return nil
	}
	return exporter.Run(ctx, exporter.Config{Conn: o.Conn, Log: o.Log, Sinks: sinks, Format: o.ExportFormat})
}

func runPGWorker(ctx context.Context, o *Options) error {
	return pgworker.New(pgworker.Config{
		Conn: o.workerConn(), Log: o.Log, Addr: o.PGAddr, Listener: o.PGListener,
		CertFile: o.TLSCert, KeyFile: o.TLSKey, TLSDir: o.TLSDir, MasterKey: o.MasterKey, HoldTimeout: o.HoldTimeout,
		UpstreamPool: o.UpstreamPool,
	}).Run(ctx)
}

func runApprovals(ctx context.Context, o *Options) error {
	return approvals.New(approvals.Config{Conn: o.Conn, Log: o.Log, DefaultTTL: o.HoldTimeout}).Run(ctx)
}

func runSlackbot(ctx context.Context, o *Options) error {
	if o.SlackToken == "" {
		if o.slackRequired {
			return fmt.Errorf("the Slack bot needs --slack-token-file, --slack-signing-secret-file and --slack-channel")
		}
		return nil
	}
	return slackbot.New(slackbot.Config{Conn: o.Conn, Log: o.Log, BotToken: o.SlackToken, SigningSecret: o.SlackSigningSecret,
		Channel: o.SlackChannel, Addr: o.SlackAddr}).Run(ctx)
}
