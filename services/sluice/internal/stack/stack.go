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
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/secrets"
	"sluice.dev/sluice/libs/sshca"
	"sluice.dev/sluice/libs/telemetry"
	"sluice.dev/sluice/services/api"
	"sluice.dev/sluice/services/approvals"
	"sluice.dev/sluice/services/control"
	"sluice.dev/sluice/services/exporter"
	"sluice.dev/sluice/services/identity"
	"sluice.dev/sluice/services/k8sworker"
	"sluice.dev/sluice/services/mcpworker"
	"sluice.dev/sluice/services/pgworker"
	"sluice.dev/sluice/services/policy"
	"sluice.dev/sluice/services/recorder"
	"sluice.dev/sluice/services/slackbot"
	"sluice.dev/sluice/services/sshworker"
)

// Options holds every service's settings. The zero value is not useful:
// Dial must be set.
type Options struct {
	// Dial connects to NATS as a component's own identity (see
	// bus.Components): every service holds only the rights it needs.
	Dial     func(ctx context.Context, component string) (*bus.Conn, error)
	Log      zerolog.Logger
	Topology bus.Topology
	// Health, if set, learns which services run and when each is ready
	// (the admin server's /readyz).
	Health *telemetry.Health

	// Identity provider used until one is applied.
	Provider identity.Provider

	// API
	APIAddr     string
	APIListener net.Listener
	APIMounts   map[string]http.Handler
	CLIClientID string
	// The web console (api.Config.ConsoleClientID, ConsoleURL, ConsoleKey).
	ConsoleClientID, ConsoleURL string
	ConsoleKey                  []byte
	// APIStarted gates the API's /readyz (api.Config.Started).
	APIStarted <-chan struct{}

	// RecorderKey signs audit checkpoints.
	RecorderKey ed25519.PrivateKey
	// AuditAnchorFile is where the recorder anchors its checkpoints
	// outside NATS (recorder.Config.AnchorFile).
	AuditAnchorFile string

	// Export sinks (the exporter runs only when one is set).
	SyslogAddr     string
	SyslogTLS      bool
	HECURL         string
	HECToken       string
	ExportFormat   string
	exportRequired bool

	// MasterKey opens sealed target credentials (workers).
	MasterKey *secrets.Key
	// PGAddr is the PostgreSQL worker's listener.
	PGAddr string
	// TLSCert and TLSKey are the workers' certificate. TLSDir, set only by
	// sluice dev and tests, holds a generated development certificate
	// instead; `serve` never generates one.
	TLSCert, TLSKey string
	TLSDir          string
	// PGListener, if set, is used instead of PGAddr (tests).
	PGListener net.Listener
	// SSH: the worker's address (SSHListener overrides it), its host key
	// file (created when SSHCreateHostKey: sluice dev, tests), and the
	// user authority the identity service signs with (nil: no SSH).
	SSHAddr          string
	SSHListener      net.Listener
	SSHHostKey       string
	SSHCreateHostKey bool
	SSHUserCA        *sshca.CA
	sshRequired      bool
	mcpRequired      bool
	// SSHPublicAddress and SSHHostKeys are what the API tells clients
	// about the SSH worker (sluice ssh login writes them into ssh_config
	// and known_hosts).
	SSHPublicAddress string
	SSHHostKeys      []string
	// Kubernetes worker: its address (K8sListener overrides it); the URL
	// and CA the API tells sluice kubeconfig.
	K8sAddr      string
	K8sListener  net.Listener
	K8sPublicURL string
	K8sCAPEM     string
	// K8sLimits bound the Kubernetes worker's requests (k8sworker.Config:
	// MaxBody, MaxWatch, MaxInFlight, MaxStreams; zero: its defaults).
	K8sMaxBody                 int64
	K8sMaxWatch                time.Duration
	K8sMaxInFlight, K8sStreams int
	// MCP endpoint: its own listener (MCPAddr) when the API does not run
	// in the same process, else mounted on the API at /mcp.
	MCPAddr, MCPPublicURL string
	MCPAllowedOrigins     []string
	mcpMount              *lateMount
	// HoldTimeout bounds how long a held statement waits for approval.
	HoldTimeout time.Duration
	// ApprovalsHotRetention is approvals.Config.HotRetention.
	ApprovalsHotRetention time.Duration
	// UpstreamPool is the idle target connections a PostgreSQL worker
	// keeps per target for reuse (see pgworker.Config).
	UpstreamPool int
	// CatalogMaxAge is pgworker's and mcpworker's Config.CatalogMaxAge.
	CatalogMaxAge time.Duration

	// Slack bot (runs only when a token is set).
	SlackToken, SlackSigningSecret, SlackChannel, SlackAddr string
	slackRequired                                           bool
}

// Service is one runnable service. Its name is also its NATS identity.
type Service struct {
	Name        string
	Description string
	Run         func(ctx context.Context, o *Options, conn *bus.Conn) error
	// AdminPort is the loopback port of its admin server by default, so
	// that every service of one host has its own.
	AdminPort int
}

// Services lists every service in start order.
func Services() []Service {
	return []Service{
		{"identity", "verifies OIDC access tokens (sluice.api.identity.*)", runIdentity, 9101},
		{"control", "owns targets, policies, approver groups, IdP settings (sluice.api.control.*)", runControl, 9102},
		{"policy", "rules on every command with CEL (sluice.api.policy.*)", runPolicy, 9103},
		{"approvals", "held commands and just-in-time grants (sluice.api.approvals.*)", runApprovals, 9104},
		{"recorder", "chains session events into the AUDIT stream", runRecorder, 9105},
		{"exporter", "delivers the audit log to syslog and HEC collectors", runExporter, 9106},
		{"slackbot", "approvals from Slack: interactive messages, signed button clicks", runSlackbot, 9107},
		{"pgworker", "the PostgreSQL gateway on :15432", runPGWorker, 9108},
		{"sshworker", "the SSH gateway on :12222", runSSHWorker, 9109},
		{"k8sworker", "the Kubernetes API gateway on :16443", runK8sWorker, 9110},
		{"mcpworker", "the MCP endpoint (/mcp on the API's address, or --mcp-addr)", runMCPWorker, 9111},
		{"api", "the HTTP API on :8080", runAPI, 9112},
	}
}

// allAdminPort is the admin port of a process that runs every service.
const allAdminPort = 9100

// AdminAddr is the default admin address of a process running the named
// services (all of them when none is named).
func AdminAddr(names ...string) string {
	if len(names) == 1 {
		if s, err := Find(names[0]); err == nil {
			return fmt.Sprintf("127.0.0.1:%d", s.AdminPort)
		}
	}
	return fmt.Sprintf("127.0.0.1:%d", allAdminPort)
}

// AdminPorts describes the default admin ports, for help texts.
func AdminPorts() string {
	parts := []string{fmt.Sprintf("%d for all", allAdminPort)}
	for _, s := range Services() {
		parts = append(parts, fmt.Sprintf("%d %s", s.AdminPort, s.Name))
	}
	return strings.Join(parts, ", ")
}

// ready is what a service calls once it serves (RunAll gives every run a
// Health).
func (o *Options) ready(name string) func() {
	return func() { o.Health.Ready(name) }
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

// prepare provisions what the component owns, retrying while a cluster
// forms, and waits for what it needs from the others, so that start order
// never matters.
func prepare(ctx context.Context, o *Options, conn *bus.Conn, c bus.Component) error {
	var err error
	for i := 0; i < 60 && len(c.Owns) > 0; i++ {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err = bus.ProvisionStores(pctx, conn.JS, o.Topology, c.Owns)
		cancel()
		if err == nil || ctx.Err() != nil {
			break
		}
		if last := conn.NC.LastError(); errors.Is(last, nats.ErrPermissionViolation) {
			return fmt.Errorf("provision streams: %w (an existing stream differs from this configuration and only the NATS break-glass identity may change it)", last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	if err != nil {
		return fmt.Errorf("provision streams: %w", err)
	}
	return awaitStores(ctx, o.Log, conn, c.Needs())
}

// awaitStores waits until every store exists, saying what it waits for
// every ten seconds.
func awaitStores(ctx context.Context, log zerolog.Logger, conn *bus.Conn, stores []bus.Store) error {
	if len(stores) == 0 {
		return nil
	}
	start, said := time.Now(), time.Time{}
	for {
		// A JetStream request lost while a cluster elects its leaders gets
		// no answer: ask again soon rather than wait out a long timeout.
		qctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		missing, err := bus.Missing(qctx, conn.JS, stores...)
		cancel()
		if err == nil && missing == "" {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Since(said) >= 10*time.Second {
			said = time.Now()
			ev := log.Warn().Dur("waited", time.Since(start).Round(time.Second))
			if err != nil {
				ev = ev.Err(err)
			} else {
				ev = ev.Str("missing", missing)
			}
			ev.Msg("waiting for the services that own them to create NATS streams and buckets")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// RunAll runs the named services (all when names is empty) until ctx is
// done or one fails, each on its own NATS connection as its own identity.
func RunAll(ctx context.Context, o *Options, names ...string) error {
	o.exportRequired = contains(names, "exporter")
	o.slackRequired = contains(names, "slackbot")
	o.sshRequired = contains(names, "sshworker")
	o.mcpRequired = contains(names, "mcpworker")
	// With the API in the same process, the MCP endpoint is served on its
	// address (/mcp), as sluice dev does.
	if (len(names) == 0 || (contains(names, "api") && contains(names, "mcpworker"))) && o.MCPAddr == "" {
		o.mcpMount = &lateMount{}
		mounts := map[string]http.Handler{}
		for k, v := range o.APIMounts {
			mounts[k] = v
		}
		mounts["/mcp"] = http.HandlerFunc(o.mcpMount.serveMCP)
		mounts[mcpworker.MetadataPath] = http.HandlerFunc(o.mcpMount.serveMetadata)
		o.APIMounts = mounts
	}
	if o.Health == nil {
		o.Health = telemetry.NewHealth()
	}
	// Ready once every service that runs is: an optional one left out (no
	// sink, no token) is not waited for. All are expected before any
	// starts.
	for _, s := range Services() {
		if len(names) > 0 && !contains(names, s.Name) {
			continue
		}
		if skip, err := s.check(o); !skip && err == nil {
			o.Health.Expect(s.Name)
		}
	}
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
			return supervise(ctx, &so, s)
		})
	}
	return g.Wait()
}

// supervise runs a service until ctx is done. A service that fails before
// it ever served fails the process (a setting is wrong, say); one that
// fails after (a NATS error it could not ride out) is started again, not
// ready meanwhile, so that one service's trouble never stops the others of
// its process. A service that fails maxRestarts times in a row without
// serving in between fails the process, for its supervisor (Kubernetes,
// systemd) to start it afresh.
func supervise(ctx context.Context, o *Options, s Service) error {
	if skip, err := s.check(o); skip || err != nil {
		if err != nil {
			return fmt.Errorf("%s: %w", s.Name, err)
		}
		return nil
	}
	backoff, failures := time.Second, 0
	for {
		err := runOne(ctx, o, s)
		if ctx.Err() != nil {
			return nil
		}
		if err == nil {
			err = errors.New("stopped")
		}
		if !o.Health.Served(s.Name) {
			return fmt.Errorf("%s: %w", s.Name, err)
		}
		if o.Health.IsReady(s.Name) {
			backoff, failures = time.Second, 0 // it served since the last failure
		}
		if failures++; failures > maxRestarts {
			return fmt.Errorf("%s: failed %d times in a row without serving in between: %w", s.Name, failures, err)
		}
		o.Health.Restarting(s.Name)
		restarts.WithLabelValues(s.Name).Inc()
		o.Log.Error().Err(err).Dur("restart_in", backoff).Msg("service failed after it served; starting it again")
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

// maxRestarts bounds the restarts of a service that does not serve again.
const maxRestarts = 5

// restarts counts services started again after a failure.
var restarts = telemetry.Factory.NewCounterVec(prometheus.CounterOpts{Name: "sluice_service_restarts_total",
	Help: "Services started again in their process after they failed."}, []string{"service"})

func runOne(ctx context.Context, o *Options, s Service) error {
	c, err := bus.FindComponent(s.Name)
	if err != nil {
		return err
	}
	if skip, err := s.check(o); skip || err != nil {
		return err
	}
	conn, err := o.Dial(ctx, s.Name)
	if err != nil {
		return err
	}
	defer conn.Close()
	o.Health.Check(s.Name, "nats", func() error {
		if !conn.NC.IsConnected() {
			return errors.New("not connected to NATS")
		}
		return nil
	})
	if err := prepare(ctx, o, conn, c); err != nil {
		return err
	}
	return s.Run(ctx, o, conn)
}

// check refuses settings a service cannot run safely with, before it
// connects; skip is true for an optional service that is not configured
// (the exporter without a sink, the Slack bot without a token, when not
// asked for by name).
func (s Service) check(o *Options) (skip bool, err error) {
	switch s.Name {
	case "recorder":
		if o.RecorderKey == nil {
			return false, fmt.Errorf("the recorder needs a signing key (--recorder-key-file; create one with: sluice audit keygen --out recorder.key)")
		}
	case "pgworker":
		if o.MasterKey == nil {
			return false, pgworker.ErrNoMasterKey
		}
		if o.TLSCert == "" && o.TLSDir == "" {
			return false, pgworker.ErrNoCertificate
		}
	case "identity":
		if o.SSHUserCA != nil && o.MasterKey == nil {
			return false, fmt.Errorf("the identity service seals the token in SSH certificates with the master key: give --master-key-file (or SLUICE_MASTER_KEY) with --ssh-user-ca")
		}
	case "sshworker":
		if o.SSHHostKey == "" {
			if o.sshRequired {
				return false, sshworker.ErrNoHostKey
			}
			return true, nil
		}
		if o.MasterKey == nil {
			return false, sshworker.ErrNoMasterKey
		}
	case "k8sworker":
		if o.MasterKey == nil {
			return false, k8sworker.ErrNoMasterKey
		}
		if o.TLSCert == "" && o.TLSDir == "" {
			return false, k8sworker.ErrNoCertificate
		}
	case "mcpworker":
		if o.MasterKey == nil {
			if o.mcpRequired {
				return false, mcpworker.ErrNoMasterKey
			}
			return true, nil
		}
		if o.MCPAddr == "" && o.mcpMount == nil {
			return false, fmt.Errorf("the MCP worker needs --mcp-addr when the API does not run in the same process")
		}
	case "exporter":
		if o.SyslogAddr == "" && o.HECURL == "" {
			if o.exportRequired {
				return false, fmt.Errorf("no export sink: give --syslog or --hec-url")
			}
			return true, nil
		}
	case "slackbot":
		if o.SlackToken == "" {
			if o.slackRequired {
				return false, fmt.Errorf("the Slack bot needs --slack-token-file, --slack-signing-secret-file and --slack-channel")
			}
			return true, nil
		}
	}
	return false, nil
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func runIdentity(ctx context.Context, o *Options, conn *bus.Conn) error {
	cfg := identity.Config{Conn: conn, Provider: o.Provider, Log: o.Log, SSHUserCA: o.SSHUserCA, Ready: o.ready("identity")}
	if o.SSHUserCA != nil && o.MasterKey != nil {
		cfg.SSHTokenKey = o.MasterKey.Subkey(sshca.TokenKeyPurpose)
	}
	return identity.Run(ctx, cfg)
}

func runControl(ctx context.Context, o *Options, conn *bus.Conn) error {
	return control.New(control.Config{Conn: conn, Log: o.Log, Ready: o.ready("control")}).Run(ctx)
}

func runAPI(ctx context.Context, o *Options, conn *bus.Conn) error {
	return api.New(api.Config{
		Addr: o.APIAddr, Listener: o.APIListener, Conn: conn, Mounts: o.APIMounts,
		Issuer: o.Provider.Issuer, Audience: o.Provider.Audience, CLIClientID: o.CLIClientID, Log: o.Log, Started: o.APIStarted,
		SSHAddress: o.SSHPublicAddress, SSHHostKeys: o.SSHHostKeys, KubernetesURL: o.K8sPublicURL, KubernetesCAPEM: o.K8sCAPEM,
		ConsoleClientID: o.ConsoleClientID, ConsoleURL: o.ConsoleURL, ConsoleKey: o.ConsoleKey,
		Ready: o.ready("api"),
	}).Run(ctx)
}

func runPolicy(ctx context.Context, o *Options, conn *bus.Conn) error {
	return policy.New(policy.Config{Conn: conn, Log: o.Log, Ready: o.ready("policy")}).Run(ctx)
}

func runRecorder(ctx context.Context, o *Options, conn *bus.Conn) error {
	return recorder.New(recorder.Config{Conn: conn, Log: o.Log, SigningKey: o.RecorderKey, AnchorFile: o.AuditAnchorFile, Ready: o.ready("recorder")}).Run(ctx)
}

func runExporter(ctx context.Context, o *Options, conn *bus.Conn) error {
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
	return exporter.Run(ctx, exporter.Config{Conn: conn, Log: o.Log, Sinks: sinks, Format: o.ExportFormat, Ready: o.ready("exporter")})
}

func runPGWorker(ctx context.Context, o *Options, conn *bus.Conn) error {
	return pgworker.New(pgworker.Config{
		Conn: conn, Log: o.Log, Addr: o.PGAddr, Listener: o.PGListener,
		CertFile: o.TLSCert, KeyFile: o.TLSKey, TLSDir: o.TLSDir, MasterKey: o.MasterKey, HoldTimeout: o.HoldTimeout,
		UpstreamPool: o.UpstreamPool, CatalogMaxAge: o.CatalogMaxAge, Ready: o.ready("pgworker"),
	}).Run(ctx)
}

func runSSHWorker(ctx context.Context, o *Options, conn *bus.Conn) error {
	return sshworker.New(sshworker.Config{
		Conn: conn, Log: o.Log, Addr: o.SSHAddr, Listener: o.SSHListener, HostKeyFile: o.SSHHostKey, CreateHostKey: o.SSHCreateHostKey,
		MasterKey: o.MasterKey, HoldTimeout: o.HoldTimeout, Ready: o.ready("sshworker"),
	}).Run(ctx)
}

func runK8sWorker(ctx context.Context, o *Options, conn *bus.Conn) error {
	return k8sworker.New(k8sworker.Config{
		Conn: conn, Log: o.Log, Addr: o.K8sAddr, Listener: o.K8sListener,
		CertFile: o.TLSCert, KeyFile: o.TLSKey, TLSDir: o.TLSDir, MasterKey: o.MasterKey, HoldTimeout: o.HoldTimeout,
		MaxBody: o.K8sMaxBody, MaxWatch: o.K8sMaxWatch, MaxInFlight: o.K8sMaxInFlight, MaxStreams: o.K8sStreams,
		Ready: o.ready("k8sworker"),
	}).Run(ctx)
}

func runMCPWorker(ctx context.Context, o *Options, conn *bus.Conn) error {
	cfg := mcpworker.Config{
		Conn: conn, Log: o.Log, MasterKey: o.MasterKey, HoldTimeout: o.HoldTimeout,
		PublicURL: o.MCPPublicURL, AllowedOrigins: o.MCPAllowedOrigins, Addr: o.MCPAddr, CatalogMaxAge: o.CatalogMaxAge, Ready: o.ready("mcpworker"),
	}
	if o.Provider.Issuer != "" {
		cfg.Issuers = []string{o.Provider.Issuer}
	}
	w := mcpworker.New(cfg)
	if o.mcpMount != nil {
		o.mcpMount.set(w.Handler(), w.MetadataHandler())
	}
	return w.Run(ctx)
}

// lateMount serves a worker's handlers on the API's server once the worker
// exists (the API starts first); until then it answers 503.
type lateMount struct {
	mcp, metadata atomic.Pointer[http.Handler]
}

func (m *lateMount) set(mcp, metadata http.Handler) {
	m.mcp.Store(&mcp)
	m.metadata.Store(&metadata)
}

func (m *lateMount) serveMCP(w http.ResponseWriter, r *http.Request) { serveLate(&m.mcp, w, r) }
func (m *lateMount) serveMetadata(w http.ResponseWriter, r *http.Request) {
	serveLate(&m.metadata, w, r)
}

func serveLate(p *atomic.Pointer[http.Handler], w http.ResponseWriter, r *http.Request) {
	if h := p.Load(); h != nil {
		(*h).ServeHTTP(w, r)
		return
	}
	w.Header().Set("Retry-After", "1")
	http.Error(w, "the MCP endpoint is starting", http.StatusServiceUnavailable)
}

func runApprovals(ctx context.Context, o *Options, conn *bus.Conn) error {
	return approvals.New(approvals.Config{Conn: conn, Log: o.Log, DefaultTTL: o.HoldTimeout, HotRetention: o.ApprovalsHotRetention,
		Ready: o.ready("approvals")}).Run(ctx)
}

func runSlackbot(ctx context.Context, o *Options, conn *bus.Conn) error {
	return slackbot.New(slackbot.Config{Conn: conn, Log: o.Log, BotToken: o.SlackToken, SigningSecret: o.SlackSigningSecret,
		Channel: o.SlackChannel, Addr: o.SlackAddr, Ready: o.ready("slackbot")}).Run(ctx)
}
