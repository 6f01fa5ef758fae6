package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"sluice.dev/sluice/libs/auditchain"
	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/secrets"
	"sluice.dev/sluice/libs/sshca"
	"sluice.dev/sluice/libs/telemetry"
	"sluice.dev/sluice/services/sluice/internal/stack"
)

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func newServeCmd(g *globals) *cobra.Command {
	var nc bus.Config
	var o stack.Options
	var replicas int
	var auditMaxBytes int64
	var pprofAddr string
	var consoleKeyFile string
	var logFormat, logLevel, masterKeyFile, recorderKeyFile, hecTokenFile, slackTokenFile, slackSecretFile, nkeyFile, nkeyDir, sshUserCAFile string
	var sshHostKeyPubs []string
	var k8sCAFile, adminAddr string
	var jwksRefresh time.Duration
	cmd := &cobra.Command{
		Use:   "serve SERVICE|all",
		Short: "Run one service (or all) against an external NATS",
		Long: `Run a Sluice service against an external NATS JetStream cluster. Services scale
horizontally: run as many replicas as you like; they share work through queue groups
and durable consumers. Services: ` + strings.Join(stack.Names(), ", ") + `, or all.

Each service connects as its own NATS identity (deploy/nats/users.conf) with the nkey
seed in --nats-nkey-file, or <service>.nk in --nats-nkey-dir (sluice admin nats-keys
creates them). Messages carry access tokens, so a plaintext NATS connection is refused
unless the server is on a loopback address: give --nats-ca (TLS) otherwise.`,
		Example: `  sluice serve identity --nats tls://nats-1:4222 --nats-ca ca.pem --nats-nkey-file identity.nk --issuer https://idp.example.com
  sluice serve api --nats tls://nats-1:4222 --nats-ca ca.pem --nats-nkey-file api.nk --addr 0.0.0.0:8080
  sluice serve all --nats nats://127.0.0.1:4222 --nats-nkey-dir /etc/sluice/nats-keys ...`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := applySettings(cmd.Flags(), os.LookupEnv); err != nil {
				return usage("%v", err)
			}
			var names []string
			if args[0] != "all" {
				s, err := stack.Find(args[0])
				if err != nil {
					return err
				}
				names = []string{s.Name}
			}
			log, err := newLogger(g.stderr, logFormat, logLevel)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if err := servePprof(pprofAddr); err != nil {
				return err
			}
			dial, err := dialer(nc, nkeyFile, nkeyDir, names, log)
			if err != nil {
				return err
			}
			o.Dial, o.Log, o.Health = dial, log, telemetry.NewHealth()
			if adminAddr != "off" {
				ln, err := adminListener(adminAddr, names, log)
				if err != nil {
					return err
				}
				go func() { _ = telemetry.Serve(ctx, ln, o.Health, log) }()
			}
			o.Topology = bus.Topology{Replicas: replicas, AuditMaxBytes: auditMaxBytes}
			o.Provider.JWKSRefreshInterval = jwksRefresh
			// Files are read only by the services that use them: a setting
			// shared by every service (a common environment file, say)
			// never fails the others, which do not mount the file.
			runs := func(svcs ...string) bool {
				return len(names) == 0 || slices.ContainsFunc(svcs, func(s string) bool { return slices.Contains(names, s) })
			}
			if runs("pgworker", "sshworker", "k8sworker", "mcpworker", "identity") {
				if key, err := secrets.LoadKey(masterKeyFile); err == nil {
					o.MasterKey = key
				} else if err != secrets.ErrNoKey {
					return err
				}
			}
			if hecTokenFile != "" && runs("exporter") {
				b, err := os.ReadFile(hecTokenFile)
				if err != nil {
					return err
				}
				o.HECToken = strings.TrimSpace(string(b))
			}
			for _, sf := range []struct {
				file string
				dst  *string
			}{{slackTokenFile, &o.SlackToken}, {slackSecretFile, &o.SlackSigningSecret}} {
				if sf.file == "" || !runs("slackbot") {
					continue
				}
				b, err := os.ReadFile(sf.file)
				if err != nil {
					return err
				}
				*sf.dst = strings.TrimSpace(string(b))
			}
			if consoleKeyFile != "" && runs("api") {
				b, err := os.ReadFile(consoleKeyFile)
				if err != nil {
					return err
				}
				key, err := secrets.ParseKey(string(b))
				if err != nil {
					return fmt.Errorf("--console-key-file %s: %w", consoleKeyFile, err)
				}
				o.ConsoleKey = key.Derive("console cookies")
			}
			if recorderKeyFile != "" && runs("recorder") {
				if o.RecorderKey, err = auditchain.LoadSigningKey(recorderKeyFile); err != nil {
					return err
				}
			}
			if sshUserCAFile != "" && runs("identity") {
				if o.SSHUserCA, err = sshca.Load(sshUserCAFile); err != nil {
					return err
				}
			}
			if k8sCAFile != "" && runs("api") {
				b, err := os.ReadFile(k8sCAFile)
				if err != nil {
					return err
				}
				o.K8sCAPEM = string(b)
			}
			for _, f := range sshHostKeyPubs {
				if !runs("api") {
					break
				}
				b, err := os.ReadFile(f)
				if err != nil {
					return err
				}
				o.SSHHostKeys = append(o.SSHHostKeys, strings.TrimSpace(string(b)))
			}
			return stack.RunAll(ctx, &o, names...)
		},
	}
	f := cmd.Flags()
	f.StringVar(&nc.URL, "nats", "nats://127.0.0.1:4222", "NATS server URL(s), comma-separated")
	f.StringVar(&nkeyFile, "nats-nkey-file", "", "file holding this service's NATS nkey seed")
	f.StringVar(&nkeyDir, "nats-nkey-dir", "", "directory holding <service>.nk seeds, one identity per service (needed by serve all)")
	f.StringVar(&nc.CredsFile, "nats-creds", "", "NATS credentials file (operator mode), instead of an nkey")
	f.StringVar(&nc.CAFile, "nats-ca", "", "CA file to verify NATS (TLS)")
	f.StringVar(&nc.CertFile, "nats-cert", "", "client certificate for NATS")
	f.StringVar(&nc.KeyFile, "nats-key", "", "client key for NATS")
	f.IntVar(&replicas, "replicas", 1, "stream replicas (3 in a production cluster)")
	f.Int64Var(&auditMaxBytes, "audit-max-bytes", 0, "cap on the audit stream; when full, new records are refused and workers stop running statements (0: unlimited)")
	f.StringVar(&o.Provider.Issuer, "issuer", "", "identity, api, mcpworker: OIDC issuer URL, until one is applied")
	f.StringVar(&o.Provider.Audience, "audience", "sluice", "identity, api: required token audience")
	f.StringVar(&o.Provider.GroupsClaim, "groups-claim", "groups", "identity: claim holding groups (dotted path allowed)")
	f.StringVar(&o.Provider.EmailClaim, "email-claim", "email", "identity: claim holding the email")
	f.StringVar(&o.Provider.MachineClaim, "machine-claim", "", "identity: boolean claim marking machine identities")
	f.BoolVar(&o.Provider.RequireAccessTokenType, "require-at-jwt", false, "identity: require JWT typ at+jwt")
	f.DurationVar(&jwksRefresh, "jwks-refresh", 30*time.Second, "identity: minimum time between JWKS refreshes on unknown key ids")
	f.StringVar(&o.APIAddr, "addr", "127.0.0.1:8080", "api: listen address")
	f.StringVar(&o.CLIClientID, "cli-client-id", "", "api: OAuth client id the CLI uses for 'sluice login'")
	f.StringVar(&o.ConsoleClientID, "console-client-id", "", "api: OAuth client id (public, authorization code with PKCE) the web console signs in with at the issuer; empty: no console")
	f.StringVar(&o.ConsoleURL, "console-url", "", "api: the console's URL as browsers reach it (https://sluice.example.com); register its /console/callback with the provider (default: http:// and the request's host, for loopback)")
	f.StringVar(&consoleKeyFile, "console-key-file", "", "api: base64 32-byte key sealing the console's session cookies, the same on every API replica (sluice admin init writes console.key); default: random, so a restart signs everyone out")
	f.StringVar(&o.PGAddr, "pg-addr", "127.0.0.1:15432", "pgworker: listen address")
	f.StringVar(&o.SSHAddr, "ssh-addr", "127.0.0.1:12222", "sshworker: listen address")
	f.StringVar(&o.SSHHostKey, "ssh-host-key", "", "sshworker: the worker's SSH host key, OpenSSH format (the SSH worker runs only with one)")
	f.StringVar(&sshUserCAFile, "ssh-user-ca", "", "identity: private key (OpenSSH format) that signs SSH user certificates for verified tokens")
	f.StringVar(&o.SSHPublicAddress, "ssh-public-address", "", "api: host:port where clients reach the SSH worker (sluice ssh login writes it into ssh_config)")
	f.StringArrayVar(&sshHostKeyPubs, "ssh-host-key-pub", nil, "api: the SSH worker's public host key file, for clients' known_hosts (repeatable)")
	f.StringVar(&o.K8sAddr, "k8s-addr", "127.0.0.1:16443", "k8sworker: listen address (TLS, with --tls-cert/--tls-key)")
	f.Int64Var(&o.K8sMaxBody, "k8s-max-body", 3<<20, "k8sworker: largest request body in bytes (larger ones are refused with 413)")
	f.DurationVar(&o.K8sMaxWatch, "k8s-max-watch", 30*time.Minute, "k8sworker: longest watch or followed log; the client's watch then ends and kubectl starts a new one")
	f.IntVar(&o.K8sMaxInFlight, "k8s-max-requests", 64, "k8sworker: requests at once in one session (one client connection); more are refused with 429")
	f.IntVar(&o.K8sStreams, "k8s-max-streams", 8, "k8sworker: exec, attach and port-forward streams one principal keeps open at once; more are refused with 429")
	f.StringVar(&o.K8sPublicURL, "k8s-public-url", "", "api: the Kubernetes worker's URL as clients reach it (https://k8s.example.com:16443), for sluice kubeconfig")
	f.StringVar(&k8sCAFile, "k8s-ca-file", "", "api: the CA certificate (PEM) that verifies the Kubernetes worker, for sluice kubeconfig")
	f.StringVar(&o.MCPAddr, "mcp-addr", "", "mcpworker: listen address of its own (/mcp); without it the endpoint is served at the API's /mcp when the api runs in the same process")
	f.StringVar(&o.MCPPublicURL, "mcp-public-url", "", "mcpworker: the endpoint's URL as clients reach it (https://sluice.example.com/mcp); its OAuth metadata names it, and other Host headers are refused")
	f.StringArrayVar(&o.MCPAllowedOrigins, "mcp-allowed-origin", nil, "mcpworker: a browser origin allowed besides the endpoint's own (repeatable)")
	f.StringVar(&o.TLSCert, "tls-cert", "", "pgworker, k8sworker: TLS certificate file presented to clients (required)")
	f.StringVar(&o.TLSKey, "tls-key", "", "pgworker, k8sworker: TLS key file (required)")
	f.DurationVar(&o.HoldTimeout, "hold-timeout", 5*time.Minute, "workers, approvals: how long a command held for approval waits (an MCP call's approval stays collectable that long)")
	f.DurationVar(&o.ApprovalsHotRetention, "approvals-hot-retention", 10*time.Minute, "approvals: how long a decided request or finished grant stays in the view every worker follows before it retires to the history")
	f.DurationVar(&o.CatalogMaxAge, "catalog-max-age", time.Second, "pgworker, mcpworker: how old the resolution of the masked columns (their tables and every view over them) a masked statement is planned on may be, shared by the worker's sessions; a view created outside is masked at most this much later (negative: pgworker resolves once per session, mcpworker on every call)")
	f.IntVar(&o.UpstreamPool, "upstream-pool", 16, "pgworker: idle target connections kept per target for reuse, reset with DISCARD ALL (negative: none)")
	f.StringVar(&masterKeyFile, "master-key-file", "", "workers, identity: file holding the master key (or the key itself in $SLUICE_MASTER_KEY)")
	f.StringVar(&recorderKeyFile, "recorder-key-file", "", "recorder: base64 Ed25519 seed that signs audit checkpoints")
	f.StringVar(&o.AuditAnchorFile, "audit-anchor-file", "", "recorder: file to append each checkpoint's anchor to, outside NATS (on storage the NATS admin cannot change); 'sluice audit verify --anchor' checks the stream against it")
	f.StringVar(&o.SyslogAddr, "syslog", "", "exporter: syslog collector host:port (RFC 5424 over TCP)")
	f.BoolVar(&o.SyslogTLS, "syslog-tls", false, "exporter: use TLS to the syslog collector")
	f.StringVar(&o.HECURL, "hec-url", "", "exporter: HTTP event collector URL (Splunk HEC compatible)")
	f.StringVar(&hecTokenFile, "hec-token-file", "", "exporter: file holding the HEC token")
	f.StringVar(&o.ExportFormat, "export-format", "ocsf", "exporter: ocsf or json")
	f.StringVar(&slackTokenFile, "slack-token-file", "", "slackbot: file holding the bot token (xoxb-...)")
	f.StringVar(&slackSecretFile, "slack-signing-secret-file", "", "slackbot: file holding the Slack app's signing secret")
	f.StringVar(&o.SlackChannel, "slack-channel", "", "slackbot: channel id for approval messages")
	f.StringVar(&o.SlackAddr, "slack-addr", "127.0.0.1:8091", "slackbot: listen address of POST /slack/interactions")
	f.StringVar(&adminAddr, "admin-addr", "", "address of the admin server: /metrics (Prometheus), /healthz, /readyz; 'off' for none (default: 127.0.0.1:"+stack.AdminPorts()+")")
	f.StringVar(new(string), settingsFileFlag, "", "YAML file of settings, keyed by these flags' names [$SLUICE_CONFIG_FILE]")
	f.StringVar(&pprofAddr, "pprof-addr", "", "serve Go profiles (net/http/pprof) on this loopback address")
	f.StringVar(&logFormat, "log-format", "json", "log format: json or console")
	f.StringVar(&logLevel, "log-level", "info", "log level")
	documentSettings(cmd)
	serviceHelp(cmd, stack.Names())
	return cmd
}

// adminListener opens the admin port: addr, or the service's default
// port. A default port in use (another replica on this host) gives way to
// a free one, said in the log; an address given is used or fails.
func adminListener(addr string, names []string, log zerolog.Logger) (net.Listener, error) {
	if addr != "" {
		return telemetry.Listen(addr)
	}
	ln, err := telemetry.Listen(stack.AdminAddr(names...))
	if err == nil || !errors.Is(err, syscall.EADDRINUSE) {
		return ln, err
	}
	log.Warn().Err(err).Msg("the default admin port is in use (another replica on this host?); serving the admin endpoints on a free port: give --admin-addr to choose")
	return telemetry.Listen("127.0.0.1:0")
}

// dialer returns how each service connects: its own identity from an
// nkey seed (or one credentials file, for a single service), over TLS or
// loopback only.
func dialer(base bus.Config, nkeyFile, nkeyDir string, names []string, log zerolog.Logger) (func(context.Context, string) (*bus.Conn, error), error) {
	single := len(names) == 1
	switch {
	case nkeyDir != "":
		// A service process must never be able to read the break-glass
		// seed.
		if _, err := os.Stat(bus.KeyFile(nkeyDir, bus.CompAdmin)); err == nil {
			return nil, fmt.Errorf("%s holds the break-glass seed; move it out of the services' key directory (it is for sluice admin only)", bus.KeyFile(nkeyDir, bus.CompAdmin))
		}
	case nkeyFile != "" || base.CredsFile != "":
		if !single {
			return nil, fmt.Errorf("serve all runs every service, each as its own NATS identity: give --nats-nkey-dir with one <service>.nk per service")
		}
	default:
		return nil, fmt.Errorf("no NATS identity: give --nats-nkey-file (or --nats-nkey-dir, or --nats-creds); sluice admin nats-keys creates the keys")
	}
	return func(ctx context.Context, component string) (*bus.Conn, error) {
		c := base
		c.Name, c.Component, c.RequireSecure = "sluice-"+component, component, true
		c.OnError = func(err error) {
			log.Warn().Err(err).Str("nats_identity", component).Msg("NATS asynchronous error (counted in sluice_nats_async_errors_total)")
		}
		switch {
		case nkeyDir != "":
			c.NkeyFile = bus.KeyFile(nkeyDir, component)
		case nkeyFile != "":
			c.NkeyFile = nkeyFile
		}
		return bus.Connect(ctx, c)
	}, nil
}
