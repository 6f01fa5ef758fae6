package cli

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"time"

	"github.com/spf13/cobra"

	"sluice.dev/sluice/libs/devissuer"
	"sluice.dev/sluice/services/sluice/internal/dev"
)

func newDevCmd(g *globals) *cobra.Command {
	cfg := dev.Config{}
	var logFormat, logLevel, pprofAddr string
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run everything in one process for development",
		Long: `Run Sluice for development: embedded NATS JetStream, every service in one process,
a development OIDC issuer, and - when PostgreSQL server binaries are installed - a demo
PostgreSQL with sample customer data registered as target "demo". State lives in --dir
and is reused by the next start. Ctrl-C stops everything.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(g.stderr, logFormat, logLevel)
			if err != nil {
				return err
			}
			cfg.Log = log
			cfg.Out = g.stdout
			if err := servePprof(pprofAddr); err != nil {
				return err
			}
			return dev.Run(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Dir, "dir", dev.DefaultDir, "state directory")
	f.StringVar(&cfg.APIAddr, "api-addr", "127.0.0.1:8080", "HTTP API listen address")
	f.StringVar(&cfg.PGAddr, "pg-addr", "127.0.0.1:15432", "PostgreSQL listen address")
	f.IntVar(&cfg.NATSPort, "nats-port", 14222, "embedded NATS client port")
	f.IntVar(&cfg.DemoPGPort, "demo-pg-port", 15433, "demo PostgreSQL port")
	f.BoolVar(&cfg.NoDemo, "no-demo", false, "do not start the demo targets (PostgreSQL and SSH)")
	f.DurationVar(&cfg.HoldTimeout, "hold-timeout", 5*time.Minute, "how long a statement held for approval waits")
	f.DurationVar(&cfg.ApprovalsHotRetention, "approvals-hot-retention", 10*time.Minute, "how long a decided request or finished grant stays in the view every worker follows before it retires to the history")
	f.IntVar(&cfg.UpstreamPool, "upstream-pool", 16, "idle target connections kept per target for reuse, reset with DISCARD ALL (negative: none)")
	f.StringToStringVar(&cfg.DemoPGSettings, "demo-pg-setting", nil, "extra demo PostgreSQL settings, name=value (repeatable)")
	f.StringVar(&cfg.SSHAddr, "ssh-addr", "127.0.0.1:12222", "SSH worker listen address")
	f.IntVar(&cfg.DemoSSHPort, "demo-ssh-port", 12223, "demo SSH target (sshd) port")
	f.StringVar(&cfg.K8sAddr, "k8s-addr", "127.0.0.1:16443", "Kubernetes worker listen address")
	f.BoolVar(&cfg.DemoK8s, "demo-k8s", false, "start a real kube-apiserver and etcd as target demo-k8s (built once by scripts/tools.sh kube-apiserver etcd, about 5 minutes)")
	f.Int64Var(&cfg.AuditMaxBytes, "audit-max-bytes", 0, "cap on the audit stream (0: unlimited); when full, statements stop running")
	f.DurationVar(&cfg.TokenTTL, "token-ttl", time.Hour, "lifetime of the tokens the development issuer gives (client credentials, sluice login)")
	f.StringVar(&logFormat, "log-format", "console", "log format: console or json")
	f.StringVar(&pprofAddr, "pprof-addr", "", "serve Go profiles (net/http/pprof) on this loopback address")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	cmd.AddCommand(newDevTokenCmd(g), newDevPsqlCmd(g))
	return cmd
}

func newDevPsqlCmd(g *globals) *cobra.Command {
	var dir string
	var printDSN bool
	cmd := &cobra.Command{
		Use:   "psql [--dir D] [--dsn] [-- PSQL ARGS...]",
		Short: "Open psql on the demo database directly, as its superuser, bypassing Sluice",
		Long: `Run psql on the demo database of a running 'sluice dev' directly, as the PostgreSQL
superuser, over the demo server's private socket: no Sluice policy, masking or recording
applies. For fixtures and inspection in development; everything else goes through Sluice.
With --dsn, print the connection string instead (for pgbench, pg_restore and the like).`,
		Example: `  sluice dev psql
  sluice dev psql -- -c "SELECT count(*) FROM customers"
  pgbench -i -s 10 "$(sluice dev psql --dsn)"`,
		RunE: func(cmd *cobra.Command, args []string) error {
			dsn, err := dev.DemoDSN(dir)
			if err != nil {
				return err
			}
			if printDSN {
				fmt.Fprintln(g.stdout, dsn)
				return nil
			}
			psql, err := exec.LookPath("psql")
			if err != nil {
				return fmt.Errorf("psql is not installed (apt-get install postgresql-client); the connection string is: %s", dsn)
			}
			fmt.Fprintln(g.stderr, "connecting to the demo database directly as postgres: no policy, masking or recording applies")
			c := exec.CommandContext(cmd.Context(), psql, append([]string{dsn}, args...)...)
			c.Stdin, c.Stdout, c.Stderr = os.Stdin, g.stdout, g.stderr
			if err := c.Run(); err != nil {
				var exit *exec.ExitError
				if errors.As(err, &exit) {
					return &exitError{code: exit.ExitCode(), err: fmt.Errorf("psql exited with status %d", exit.ExitCode())}
				}
				return err
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", dev.DefaultDir, "state directory of sluice dev")
	cmd.Flags().BoolVar(&printDSN, "dsn", false, "print the connection string instead of running psql")
	return cmd
}

func newDevTokenCmd(g *globals) *cobra.Command {
	var dir, sub, groups, email, audience string
	var machine bool
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "token --sub SUBJECT [--groups g1,g2] [--machine] [--ttl 10m]",
		Short: "Mint an access token from the development issuer",
		Long: `Mint an access token signed by the development issuer of 'sluice dev' (its key is in
--dir). For development only: a real deployment gets tokens from its identity provider
with 'sluice login' or 'sluice token'.`,
		Example: `  export SLUICE_TOKEN="$(sluice dev token --sub alice --groups engineers)"
  sluice dev token --sub ci-bot --groups engineers --machine --ttl 10m`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if sub == "" {
				return fmt.Errorf("--sub is required")
			}
			if ttl <= 0 {
				return fmt.Errorf("--ttl must be positive")
			}
			iss, err := dev.Issuer(dir)
			if err != nil {
				return err
			}
			tok, err := iss.Mint(devissuer.Claims{Subject: sub, Email: email, Groups: devissuer.SplitGroups(groups), Machine: machine, TTL: ttl, Audience: audience})
			if err != nil {
				return err
			}
			fmt.Fprintln(g.stdout, tok)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", dev.DefaultDir, "state directory of sluice dev")
	f.StringVar(&sub, "sub", "", "subject (user or client id)")
	f.StringVar(&groups, "groups", "", "comma-separated groups")
	f.StringVar(&email, "email", "", "email claim")
	f.BoolVar(&machine, "machine", false, "mark a machine identity, as client credentials do")
	f.DurationVar(&ttl, "ttl", time.Hour, "lifetime")
	f.StringVar(&audience, "audience", "", "audience (default: the dev audience)")
	return cmd
}
