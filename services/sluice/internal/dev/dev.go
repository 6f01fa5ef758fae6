// Package dev runs `sluice dev`: embedded NATS JetStream, every service in
// one process, the development identity provider, and (when PostgreSQL server
// binaries are installed) a demo PostgreSQL registered as target "demo".
// State lives under one directory (.sluice by default) and is reused by the
// next start.
package dev

import (
	"context"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/crypto/ssh"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/proto"

	"sluice.dev/sluice/libs/auditchain"
	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/controlstate"
	"sluice.dev/sluice/libs/devcert"
	"sluice.dev/sluice/libs/devissuer"
	"sluice.dev/sluice/libs/kubelocal"
	"sluice.dev/sluice/libs/pglocal"
	"sluice.dev/sluice/libs/secrets"
	"sluice.dev/sluice/libs/sshca"
	"sluice.dev/sluice/libs/telemetry"
	approvalsv1 "sluice.dev/sluice/proto/sluice/approvals/v1"
	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
	identityv1 "sluice.dev/sluice/proto/sluice/identity/v1"
	policyv1 "sluice.dev/sluice/proto/sluice/policy/v1"
	"sluice.dev/sluice/services/identity"
	"sluice.dev/sluice/services/mcpworker"
	"sluice.dev/sluice/services/sluice/internal/stack"
	"sluice.dev/sluice/services/sshworker"
)

//go:embed sluice.yaml
var defaultConfig []byte

// DefaultConfig is the policy `sluice dev` applies on first start.
func DefaultConfig() []byte { return defaultConfig }

// Config configures the development environment. The zero value uses the
// documented defaults.
type Config struct {
	// Dir holds all state; default ".sluice".
	Dir string
	// APIAddr default 127.0.0.1:8080; PGAddr default 127.0.0.1:15432.
	APIAddr string
	PGAddr  string
	// NATSPort default 14222; DemoPGPort default 15433.
	NATSPort   int
	DemoPGPort int
	// NoDemo skips the demo targets (PostgreSQL and SSH).
	NoDemo bool
	// SSHAddr is the SSH worker's address (default 127.0.0.1:12222);
	// DemoSSHPort the demo sshd's (default 12223).
	SSHAddr     string
	DemoSSHPort int
	// K8sAddr is the Kubernetes worker's address (default
	// 127.0.0.1:16443); DemoK8s starts a real kube-apiserver and etcd
	// (built by scripts/tools.sh) as target demo-k8s.
	K8sAddr string
	DemoK8s bool
	// HoldTimeout bounds how long a held statement waits; default 5m.
	HoldTimeout time.Duration
	// ApprovalsHotRetention: approvals.Config.HotRetention.
	ApprovalsHotRetention time.Duration
	// UpstreamPool is the idle target connections kept per target (see
	// pgworker.Config); default 16, negative none.
	UpstreamPool int
	// AuditMaxBytes caps the audit stream (0: unlimited).
	AuditMaxBytes int64
	// TokenTTL is the lifetime of the tokens the development issuer gives
	// through client credentials and the device flow; default 1h. Short
	// ones show sessions outliving their first token (sluice connect).
	TokenTTL time.Duration
	// DemoPGSettings are extra server settings of the demo PostgreSQL
	// (name=value), e.g. max_connections for benchmarks.
	DemoPGSettings map[string]string
	Log            zerolog.Logger
	// Out receives the banner.
	Out io.Writer
}

func (c *Config) defaults() {
	if c.Dir == "" {
		c.Dir = DefaultDir
	}
	if c.APIAddr == "" {
		c.APIAddr = "127.0.0.1:8080"
	}
	if c.PGAddr == "" {
		c.PGAddr = "127.0.0.1:15432"
	}
	if c.NATSPort == 0 {
		c.NATSPort = 14222
	}
	if c.SSHAddr == "" {
		c.SSHAddr = "127.0.0.1:12222"
	}
	if c.K8sAddr == "" {
		c.K8sAddr = "127.0.0.1:16443"
	}
	if c.DemoSSHPort == 0 {
		c.DemoSSHPort = 12223
	}
	if c.DemoPGPort == 0 {
		c.DemoPGPort = 15433
	}
	if c.Out == nil {
		c.Out = os.Stdout
	}
	if c.TokenTTL <= 0 {
		c.TokenTTL = time.Hour
	}
}

// State is what `sluice dev` records for other commands (dev token).
type State struct {
	Issuer   string `json:"issuer"`
	Audience string `json:"audience"`
	API      string `json:"api"`
	// DemoSocket and DemoPort reach the demo PostgreSQL directly, as its
	// superuser, over its private socket (sluice dev psql).
	DemoSocket string `json:"demo_socket,omitempty"`
	DemoPort   int    `json:"demo_port,omitempty"`
}

func saveState(dir string, st State) error {
	b, _ := json.MarshalIndent(st, "", "  ")
	return os.WriteFile(statePath(dir), b, 0o600)
}

// DemoDSN is the libpq connection string of the demo database as its
// superuser, bypassing Sluice, while sluice dev runs in dir.
func DemoDSN(dir string) (string, error) {
	st := LoadState(dir)
	if st.DemoSocket == "" || st.DemoPort == 0 {
		return "", fmt.Errorf("no demo database is recorded in %s: start sluice dev (with PostgreSQL installed and without --no-demo)", statePath(dir))
	}
	if _, err := os.Stat(st.DemoSocket); err != nil {
		return "", fmt.Errorf("the demo database is not running (%s is gone): start sluice dev", st.DemoSocket)
	}
	return fmt.Sprintf("host=%s port=%d user=postgres dbname=demo sslmode=disable", st.DemoSocket, st.DemoPort), nil
}

// Paths of state files.
func keyPath(dir string) string    { return filepath.Join(dir, "issuer.key") }
func statePath(dir string) string  { return filepath.Join(dir, "dev.json") }
func masterPath(dir string) string { return filepath.Join(dir, "master.key") }

// Audience of dev tokens.
const Audience = "sluice"

// The defaults the CLI assumes: the state directory and the API URL.
const (
	DefaultDir = ".sluice"
	DefaultAPI = "http://127.0.0.1:8080"
)

// AuditAnchorFile is the recorder's anchor file in the dev directory.
const AuditAnchorFile = "audit-anchor.jsonl"

// LoadState reads dev.json, falling back to defaults.
func LoadState(dir string) State {
	st := State{Issuer: "http://127.0.0.1:8080/oidc", Audience: Audience, API: "http://127.0.0.1:8080"}
	if b, err := os.ReadFile(statePath(dir)); err == nil {
		_ = json.Unmarshal(b, &st)
	}
	return st
}

// Issuer returns the dev issuer over dir's key, for minting tokens.
func Issuer(dir string) (*devissuer.Issuer, error) {
	st := LoadState(dir)
	key, err := devissuer.LoadOrCreateKey(keyPath(dir))
	if err != nil {
		return nil, err
	}
	return &devissuer.Issuer{URL: st.Issuer, Audience: st.Audience, Key: key}, nil
}

// Run runs the environment until ctx is done.
func Run(ctx context.Context, cfg Config) error {
	cfg.defaults()
	log := cfg.Log
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return err
	}
	dir, _ := filepath.Abs(cfg.Dir)

	// Listen first, so a busy port is reported before anything starts.
	apiLn, err := net.Listen("tcp", cfg.APIAddr)
	if err != nil {
		return fmt.Errorf("HTTP API %s: %w (is another sluice dev running? use --api-addr)", cfg.APIAddr, err)
	}
	defer apiLn.Close()
	apiURL := "http://" + apiLn.Addr().String()
	sshLn, err := net.Listen("tcp", cfg.SSHAddr)
	if err != nil {
		return fmt.Errorf("SSH worker %s: %w (is another sluice dev running? use --ssh-addr)", cfg.SSHAddr, err)
	}
	defer sshLn.Close()
	k8sLn, err := net.Listen("tcp", cfg.K8sAddr)
	if err != nil {
		return fmt.Errorf("the Kubernetes worker's address %s: %w (is another sluice dev running? use --k8s-addr)", cfg.K8sAddr, err)
	}
	defer k8sLn.Close()

	master, err := secrets.LoadOrCreateKeyFile(masterPath(dir))
	if err != nil {
		return err
	}
	key, err := devissuer.LoadOrCreateKey(keyPath(dir))
	if err != nil {
		return err
	}
	recorderKey, err := auditchain.LoadOrCreateSigningKey(filepath.Join(dir, "recorder.key"))
	if err != nil {
		return err
	}
	agentSecret, err := readOrCreate(filepath.Join(dir, "demo-agent.secret"), randomPassword)
	if err != nil {
		return err
	}
	// The console's cookies stay valid across restarts.
	consoleKey, err := secrets.LoadOrCreateKeyFile(filepath.Join(dir, "console.key"))
	if err != nil {
		return err
	}
	// SSH: the user authority that signs certificates for verified tokens,
	// and the worker's host key, published for clients' known_hosts.
	sshUserCA, err := sshca.LoadOrCreate(filepath.Join(dir, "ssh", "user_ca"))
	if err != nil {
		return err
	}
	sshHostKeyFile := filepath.Join(dir, "ssh", "host_key")
	sshHost, err := sshworker.LoadHostKey(sshHostKeyFile, true)
	if err != nil {
		return err
	}
	// The workers' development certificate; kubeconfigs trust it.
	tlsDir := filepath.Join(dir, "tls")
	if _, err := devcert.LoadOrCreate(tlsDir); err != nil {
		return err
	}
	workerCA, err := os.ReadFile(filepath.Join(tlsDir, "cert.pem"))
	if err != nil {
		return err
	}
	iss := &devissuer.Issuer{
		URL: apiURL + "/oidc", Audience: Audience, Key: key, TTL: cfg.TokenTTL,
		Clients: []devissuer.Client{
			{ID: "sluice-cli"},
			// The web console: whichever loopback name the browser uses.
			{ID: ConsoleClientID, RedirectURIs: consoleRedirects(apiLn.Addr().String())},
			{ID: "demo-agent", Secret: agentSecret, Groups: []string{"engineers"}},
		},
	}
	state := State{Issuer: iss.URL, Audience: Audience, API: apiURL}
	if err := saveState(dir, state); err != nil {
		return err
	}

	// One nkey per component, generated on first start: the same identity
	// table and permissions as a production deployment.
	keysDir := filepath.Join(dir, "nats-keys")
	pubs, err := bus.LoadOrCreateKeys(keysDir)
	if err != nil {
		return fmt.Errorf("NATS keys: %w", err)
	}
	nsrv, err := bus.StartEmbedded(bus.EmbeddedConfig{ServerName: "sluice-dev", Port: cfg.NATSPort, StoreDir: filepath.Join(dir, "nats"),
		Nkeys: bus.NkeyUsers(pubs)})
	if err != nil {
		return fmt.Errorf("embedded NATS on port %d: %w", cfg.NATSPort, err)
	}
	defer nsrv.Shutdown()
	dial := func(ctx context.Context, component string) (*bus.Conn, error) {
		return bus.Connect(ctx, bus.Config{URL: nsrv.ClientURL(), InProcess: nsrv.Server, Name: "sluice-dev-" + component,
			Component: component, NkeyFile: bus.KeyFile(keysDir, component),
			OnError: func(err error) {
				log.Warn().Err(err).Str("nats_identity", component).Msg("NATS asynchronous error (counted in sluice_nats_async_errors_total)")
			}})
	}
	// The development environment is its own operator: it bootstraps the
	// configuration through the break-glass identity, as `sluice admin
	// apply` does in production.
	admin, err := dial(ctx, bus.CompAdmin)
	if err != nil {
		return err
	}
	defer admin.NC.Close()

	// /readyz answers ready once everything the banner names serves,
	// the demo target included.
	started := make(chan struct{})
	o := &stack.Options{
		Dial:        dial,
		Log:         log,
		Provider:    identity.Provider{Issuer: iss.URL, Audience: Audience},
		APIListener: apiLn,
		// The API's loopback port serves the metrics too: one port for
		// everything in development.
		APIMounts:       map[string]http.Handler{"/oidc": iss.Handler(), "/metrics": telemetry.MetricsHandler()},
		CLIClientID:     "sluice-cli",
		ConsoleClientID: ConsoleClientID,
		ConsoleKey:      consoleKey.Derive("console cookies"),
		APIStarted:      started,
		MasterKey:       master,
		RecorderKey:     recorderKey,
		// Outside NATS, where the break-glass identity does not reach.
		AuditAnchorFile:       filepath.Join(dir, AuditAnchorFile),
		HoldTimeout:           cfg.HoldTimeout,
		ApprovalsHotRetention: cfg.ApprovalsHotRetention,
		UpstreamPool:          cfg.UpstreamPool,
		Topology:              bus.Topology{AuditMaxBytes: cfg.AuditMaxBytes},
		PGAddr:                cfg.PGAddr,
		TLSDir:                tlsDir,
		K8sListener:           k8sLn,
		K8sPublicURL:          "https://" + k8sLn.Addr().String(),
		K8sCAPEM:              string(workerCA),
		SSHListener:           sshLn,
		SSHHostKey:            sshHostKeyFile,
		SSHUserCA:             sshUserCA,
		SSHPublicAddress:      sshLn.Addr().String(),
		SSHHostKeys:           []string{strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshHost.PublicKey())))},
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return stack.RunAll(gctx, o) })

	var pg *pglocal.Server
	var sshd *sshDemo
	var kube *kubelocal.Server
	g.Go(func() error {
		var demoErr error
		pg, demoErr = bootstrap(gctx, cfg, dir, admin, master)
		if demoErr != nil {
			return demoErr
		}
		if pg != nil {
			state.DemoSocket, state.DemoPort = pg.SocketDir, pg.Port
			if err := saveState(dir, state); err != nil {
				return err
			}
		}
		if !cfg.NoDemo {
			var sshErr error
			if sshd, sshErr = startDemoSSH(gctx, cfg, dir, admin, master); sshErr != nil {
				return sshErr
			}
		}
		if cfg.DemoK8s {
			var kubeErr error
			if kube, kubeErr = startDemoK8s(gctx, cfg, dir, admin, master); kubeErr != nil {
				return kubeErr
			}
		}
		// Say where to connect only once everything answers: a script
		// that waits for the banner may connect at once.
		if err := awaitServing(gctx, admin, cfg.PGAddr, sshLn.Addr().String(), k8sLn.Addr().String()); err != nil {
			return err
		}
		// The MCP endpoint serves once its worker follows the control plane.
		if err := awaitHTTP(gctx, apiURL+mcpworker.MetadataPath); err != nil {
			return err
		}
		close(started)
		banner(cfg, dir, apiURL, nsrv.ClientURL(), pg, sshd, kube, sshLn.Addr().String(), k8sLn.Addr().String(), agentSecret)
		<-gctx.Done()
		return nil
	})
	err = g.Wait()
	if pg != nil {
		pg.Stop()
	}
	sshd.Stop()
	if kube != nil {
		kube.Stop()
	}
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	log.Info().Msg("stopped")
	return err
}

func readOrCreate(path string, gen func() string) (string, error) {
	if b, err := os.ReadFile(path); err == nil {
		return strings.TrimSpace(string(b)), nil
	}
	v := gen()
	return v, os.WriteFile(path, []byte(v+"\n"), 0o600)
}

// bootstrap applies the default policy (if none is applied yet) and starts
// and registers the demo database.
func bootstrap(ctx context.Context, cfg Config, dir string, conn *bus.Conn, master *secrets.Key) (*pglocal.Server, error) {
	// The control service creates the bucket; wait for it.
	view := controlstate.NewView()
	vctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for {
		missing, err := bus.Missing(ctx, conn.JS, bus.Store{Bucket: bus.BucketControl})
		if err == nil && missing == "" {
			break
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	go func() { _ = view.Follow(vctx, conn.JS) }()
	select {
	case <-view.Ready():
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	cfgPath := filepath.Join(dir, "sluice.yaml")
	if _, err := os.Stat(cfgPath); errors.Is(err, os.ErrNotExist) {
		if err := os.WriteFile(cfgPath, defaultConfig, 0o600); err != nil {
			return nil, err
		}
	}
	if view.Policy() == nil {
		data, err := os.ReadFile(cfgPath)
		if err != nil {
			return nil, err
		}
		if err := apply(ctx, conn, data, "sluice.yaml"); err != nil {
			return nil, fmt.Errorf("apply %s: %w", cfgPath, err)
		}
		cfg.Log.Info().Str("file", cfgPath).Msg("default policy applied")
	}
	if view.Access() == nil {
		// A state directory from before roles came from configuration:
		// give it the default roles once.
		if err := apply(ctx, conn, []byte(defaultAccess), "access.yaml"); err != nil {
			return nil, fmt.Errorf("apply default access: %w", err)
		}
		cfg.Log.Info().Msg("default access groups applied (sluice-admins, auditors; grants decided by approvers)")
	}
	if cfg.NoDemo {
		return nil, nil
	}
	bin, err := pglocal.FindBinDir()
	if err != nil {
		cfg.Log.Warn().Msg("PostgreSQL server binaries not found; no demo database (install postgresql to get one)")
		return nil, nil
	}
	pgDir := filepath.Join(dir, "pg")
	fresh := true
	if _, err := os.Stat(filepath.Join(pgDir, "PG_VERSION")); err == nil {
		fresh = false
	}
	pg, err := pglocal.Start(ctx, pglocal.Config{Dir: pgDir, Port: cfg.DemoPGPort, BinDir: bin, Settings: cfg.DemoPGSettings})
	if err != nil {
		return nil, fmt.Errorf("demo PostgreSQL: %w", err)
	}
	sealedPath := filepath.Join(dir, "demo-pg.sealed")
	if fresh {
		pw := randomPassword()
		if err := setupDemo(ctx, pg, pw); err != nil {
			pg.Stop()
			return nil, err
		}
		if err := os.WriteFile(sealedPath, []byte(base64.StdEncoding.EncodeToString(master.Seal([]byte(pw)))+"\n"), 0o600); err != nil {
			pg.Stop()
			return nil, err
		}
	}
	sealed, err := os.ReadFile(sealedPath)
	if err != nil {
		pg.Stop()
		return nil, fmt.Errorf("demo credential: %w (delete %s to start over)", err, pgDir)
	}
	target := fmt.Sprintf(`targets:
  - name: demo
    kind: postgres
    labels: {env: dev}
    postgres:
      host: 127.0.0.1
      port: %d
      database: demo
      user: sluice_gateway
      sslmode: disable
      password: {sealed: %q}
`, pg.Port, strings.TrimSpace(string(sealed)))
	if err := apply(ctx, conn, []byte(target), "demo-target.yaml"); err != nil {
		pg.Stop()
		return nil, fmt.Errorf("register demo target: %w", err)
	}
	return pg, nil
}

// awaitServing waits until every service answers on NATS (an error answer
// counts: it is an answer) and the PostgreSQL worker accepts connections.
// awaitHTTP waits until url answers 200.
func awaitHTTP(ctx context.Context, url string) error {
	client := &http.Client{Timeout: time.Second}
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func awaitServing(ctx context.Context, conn *bus.Conn, addrs ...string) error {
	probes := []struct {
		subject string
		req     proto.Message
		resp    proto.Message
	}{
		{bus.APIIdentityVerify, &identityv1.VerifyTokenRequest{}, &identityv1.VerifyTokenResponse{}},
		{bus.APIControlTargets, &controlv1.ListTargetsRequest{}, &controlv1.ListTargetsResponse{}},
		{bus.APIPolicyEvaluate, &policyv1.EvaluateRequest{}, &policyv1.Decision{}},
		{bus.APIApprovalsList, &approvalsv1.ListRequest{}, &approvalsv1.ListReply{}},
	}
	for _, p := range probes {
		for {
			rctx, cancel := context.WithTimeout(ctx, time.Second)
			err := bus.Request(rctx, conn.NC, p.subject, p.req, p.resp)
			cancel()
			if err == nil {
				break
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	// The workers accept connections (they listen only once their views
	// are loaded).
	for _, addr := range addrs {
		for {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				c.Close()
				break
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	return nil
}

// defaultAccess are the roles of a development environment.
const defaultAccess = `access:
  admins: [sluice-admins]
  auditors: [auditors]
  grant_approvers: approvers
`

// apply sends a configuration to the control service through the
// break-glass subject, waiting for the service to be up.
func apply(ctx context.Context, conn *bus.Conn, data []byte, name string) error {
	req := &controlv1.ApplyRequest{Config: data, FileName: name}
	var resp controlv1.ApplyResponse
	var err error
	for i := 0; i < 100; i++ {
		err = bus.Request(ctx, conn.NC, bus.APIControlBreakGlass, req, &resp)
		if err == nil {
			break
		}
		if !errors.Is(err, bus.ErrNoResponders) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	if err != nil {
		return err
	}
	if e := resp.GetError(); e != nil {
		var msgs []string
		for _, ce := range resp.GetErrors() {
			msgs = append(msgs, fmt.Sprintf("line %d: %s", ce.GetLine(), ce.GetMessage()))
		}
		return fmt.Errorf("%s: %s", e.GetMessage(), strings.Join(msgs, "; "))
	}
	return nil
}

// ConsoleClientID is the web console's client at the dev issuer.
const ConsoleClientID = "sluice-console"

// consoleRedirects are the console's redirect URIs on the API's address,
// under both loopback names when it listens on loopback.
func consoleRedirects(addr string) []string {
	out := []string{"http://" + addr + "/console/callback"}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return out
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() || host == "localhost" {
		for _, name := range []string{"127.0.0.1", "localhost", "[::1]"} {
			if u := "http://" + name + ":" + port + "/console/callback"; u != out[0] {
				out = append(out, u)
			}
		}
	}
	return out
}

func banner(cfg Config, dir, apiURL, natsURL string, pg *pglocal.Server, sshd *sshDemo, kube *kubelocal.Server, sshAddr, k8sAddr, agentSecret string) {
	host, port, _ := net.SplitHostPort(cfg.PGAddr)
	w := cfg.Out
	fmt.Fprintf(w, "\nSluice is running in development mode (state in %s).\n\n", dir)
	fmt.Fprintf(w, "  Web console   %s/ (sign in as anyone, with any groups, through the dev issuer)\n", apiURL)
	fmt.Fprintf(w, "  HTTP API      %s\n", apiURL)
	fmt.Fprintf(w, "  OIDC issuer   %s/oidc   (development only)\n", apiURL)
	fmt.Fprintf(w, "  PostgreSQL    %s\n", cfg.PGAddr)
	fmt.Fprintf(w, "  SSH           %s (log in with a certificate: sluice ssh login)\n", sshAddr)
	fmt.Fprintf(w, "  Kubernetes    https://%s/targets/NAME (kubectl: sluice kubeconfig --target NAME)\n", k8sAddr)
	fmt.Fprintf(w, "  MCP           %s/mcp (streamable HTTP; bearer token, OAuth metadata at %s%s)\n", apiURL, apiURL, mcpworker.MetadataPath)
	fmt.Fprintf(w, "  NATS          %s\n", natsURL)
	fmt.Fprintf(w, "  NATS keys     one nkey per component in %s (admin.nk is break glass)\n", filepath.Join(dir, "nats-keys"))
	fmt.Fprintf(w, "  Audit anchor  %s (sluice audit verify --anchor checks the stream against it)\n", filepath.Join(dir, AuditAnchorFile))
	if pg != nil {
		fmt.Fprintf(w, "  Demo target   demo (PostgreSQL on 127.0.0.1:%d, data in %s)\n", pg.Port, pg.Dir)
	} else {
		fmt.Fprintf(w, "  Demo target   none (PostgreSQL server binaries not installed)\n")
	}
	if sshd != nil {
		fmt.Fprintf(w, "  Demo SSH      demo-ssh (OpenSSH on 127.0.0.1:%d, as %s; only Sluice's key logs in)\n", sshd.Port, sshd.User)
	}
	if kube != nil {
		fmt.Fprintf(w, "  Demo K8s      demo-k8s (kube-apiserver on %s; only Sluice's token is admin there)\n", kube.URL)
	}
	// The hints work as printed: they name the API and the state
	// directory whenever these are not the CLI's defaults.
	fmt.Fprintf(w, "\nGet a token and try it:\n")
	if apiURL != DefaultAPI {
		fmt.Fprintf(w, "  export SLUICE_API=%s\n", apiURL)
	}
	dirFlag := ""
	if cfg.Dir != DefaultDir {
		dirFlag = " --dir " + dir
	}
	fmt.Fprintf(w, `  export SLUICE_TOKEN="$(bin/sluice dev token%s --sub alice --groups engineers)"
  curl -H "Authorization: Bearer $SLUICE_TOKEN" %s/api/v1/whoami
  PGPASSWORD="$SLUICE_TOKEN" psql "host=%s port=%s dbname=demo user=alice sslmode=require"
`, dirFlag, apiURL, host, port)
	if pg != nil {
		fmt.Fprintf(w, "  bin/sluice dev psql%s     # the demo database directly, as its superuser, bypassing Sluice\n", dirFlag)
	}
	if sshd != nil {
		fmt.Fprintf(w, "  bin/sluice ssh login && ssh -F ~/.sluice/ssh/config demo-ssh 'uptime'\n")
	}
	if kube != nil {
		fmt.Fprintf(w, "  bin/sluice kubeconfig --target demo-k8s --out demo-k8s.kubeconfig && kubectl --kubeconfig demo-k8s.kubeconfig get namespaces\n")
	}
	fmt.Fprintf(w, `
An agent with client credentials:
  SLUICE_CLIENT_ID=demo-agent SLUICE_CLIENT_SECRET=%s bin/sluice token

Policy: %s (edit, then: bin/sluice apply -f %s with a sluice-admins token)
Press Ctrl-C to stop.
`, agentSecret, filepath.Join(dir, "sluice.yaml"), filepath.Join(dir, "sluice.yaml"))
}
