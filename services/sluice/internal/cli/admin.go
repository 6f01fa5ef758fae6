package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/secrets"
	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
	"sluice.dev/sluice/services/api"
)

// newAdminCmd is the operator's side: NATS identities and the break-glass
// path, which talk to NATS directly, never to the HTTP API.
func newAdminCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "admin",
		Short: "Operate a deployment: its secrets, NATS identities and the break-glass path",
		Long: `Commands for the operator of a deployment. They never need the HTTP API: init creates
every key and certificate a deployment needs; nats-keys creates only the NATS identity
of every component; apply changes the configuration as the break-glass identity, with
no token, to bootstrap the first admin or to recover when an identity change locked
every admin out; probe is a container health check.`,
	}
	cmd.AddCommand(newAdminInitCmd(g), newNATSKeysCmd(g), newAdminApplyCmd(g), newAdminReprojectCmd(g), newAdminProbeCmd(g))
	return cmd
}

func newNATSKeysCmd(g *globals) *cobra.Command {
	var dir, adminKey string
	cmd := &cobra.Command{
		Use:   "nats-keys --dir DIR [--admin-key FILE]",
		Short: "Create one NATS nkey per component and the environment file for the NATS servers",
		Long: `Create (once) the nkey seed of every component in DIR (<component>.nk, mode 0600) and
write DIR/nats.env with each public key, the variables deploy/nats/users.conf reads.
Existing seeds are kept. Give each service only its own seed (--nats-nkey-file), start
the NATS servers with nats.env in their environment. The break-glass seed goes to
--admin-key (default: DIR.admin.nk, beside DIR, never inside it): keep it offline.
To revoke one component, delete its seed, run this again and reload the NATS servers:
the other components are untouched.`,
		Example: `  sluice admin nats-keys --dir /etc/sluice/nats-keys --admin-key /root/sluice-admin.nk
  set -a; . /etc/sluice/nats-keys/nats.env; set +a; nats-server -c deploy/nats/nats.conf`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return errors.New("--dir is required")
			}
			if adminKey == "" {
				adminKey = strings.TrimRight(dir, "/") + ".admin.nk"
			}
			if abs, _ := filepath.Abs(filepath.Dir(adminKey)); abs == mustAbs(dir) {
				return fmt.Errorf("--admin-key %s is inside --dir: keep the break-glass seed apart from the services' keys", adminKey)
			}
			pubs, names, envFile, err := createNATSKeys(dir, adminKey)
			if err != nil {
				return err
			}
			if g.json() {
				return g.printJSON(map[string]any{"dir": dir, "admin_key": adminKey, "env_file": envFile, "public_keys": pubs})
			}
			for _, n := range names {
				path := bus.KeyFile(dir, n)
				if n == bus.CompAdmin {
					path = adminKey
				}
				fmt.Fprintf(g.stdout, "%-10s %s  %s\n", n, pubs[n], path)
			}
			fmt.Fprintf(g.stdout, "NATS server environment: %s\n", envFile)
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "directory for the components' seeds and nats.env")
	cmd.Flags().StringVar(&adminKey, "admin-key", "", "file for the break-glass seed, outside --dir (default DIR.admin.nk)")
	return cmd
}

// createNATSKeys creates (once) every component's seed in dir, the
// break-glass seed at adminKey, and dir/nats.env with the public keys.
func createNATSKeys(dir, adminKey string) (pubs map[string]string, names []string, envFile string, err error) {
	pubs = map[string]string{}
	for _, c := range bus.ComponentNames() {
		path := bus.KeyFile(dir, c)
		if c == bus.CompAdmin {
			path = adminKey
		}
		pub, err := bus.LoadOrCreateKey(path)
		if err != nil {
			return nil, nil, "", err
		}
		pubs[c] = pub
	}
	for n := range pubs {
		names = append(names, n)
	}
	sort.Strings(names)
	var env strings.Builder
	env.WriteString("# Public nkeys of the Sluice components, for deploy/nats/users.conf.\n")
	for _, n := range names {
		fmt.Fprintf(&env, "%s=%s\n", bus.KeyEnv(n), pubs[n])
	}
	envFile = filepath.Join(dir, "nats.env")
	return pubs, names, envFile, os.WriteFile(envFile, []byte(env.String()), 0o644)
}

func mustAbs(p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		return p
	}
	return filepath.Clean(a)
}

func newAdminApplyCmd(g *globals) *cobra.Command {
	var file, url, nkeyFile, caFile string
	var dryRun, prune bool
	cmd := &cobra.Command{
		Use:   "apply -f sluice.yaml --nats-nkey-file admin.nk",
		Short: "Apply a configuration as the break-glass NATS identity (no token)",
		Long: `Apply sluice.yaml through the break-glass subject, which only the NATS admin identity
may publish. No access token is involved, so this works before any admin exists
(bootstrap: apply an access section naming your admin group) and after an identity
change locked every admin out (recovery: apply a working oidc and access section).
Every change it makes is recorded with the actor "break-glass".`,
		Example: `  sluice admin apply -f sluice.yaml --nats tls://nats-1:4222 --nats-ca ca.pem --nats-nkey-file admin.nk
  sluice admin apply -f .sluice/sluice.yaml --nats nats://127.0.0.1:14222 --nats-nkey-file .sluice/nats-keys/admin.nk`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := g.checkOutput(); err != nil {
				return err
			}
			data, err := readConfig(file)
			if err != nil {
				return err
			}
			if nkeyFile == "" {
				return errors.New("--nats-nkey-file is required: the break-glass identity's seed (admin.nk)")
			}
			ctx := cmd.Context()
			conn, err := breakGlass(ctx, url, nkeyFile, caFile, "apply")
			if err != nil {
				return err
			}
			defer conn.Close()
			var resp controlv1.ApplyResponse
			req := &controlv1.ApplyRequest{Config: data, FileName: filepath.Base(file), DryRun: dryRun, Prune: prune}
			if err := bus.Request(ctx, conn.NC, bus.APIControlBreakGlass, req, &resp); err != nil {
				if errors.Is(err, bus.ErrNoResponders) {
					return fmt.Errorf("no control service is running on %s", url)
				}
				return err
			}
			res := api.ApplyResultFrom(&resp)
			var callErr error
			if e := resp.GetError(); e != nil {
				callErr = fmt.Errorf("%s (%s)", e.GetMessage(), e.GetCode())
			}
			return g.printApply(file, res, callErr, dryRun)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&file, "file", "f", "", "configuration file (- for standard input)")
	f.BoolVar(&dryRun, "dry-run", false, "show what would change without changing it")
	f.BoolVar(&prune, "prune", false, "remove registered targets the file does not name")
	f.StringVar(&url, "nats", envOr("SLUICE_NATS", "nats://127.0.0.1:4222"), "NATS server URL(s) ($SLUICE_NATS)")
	f.StringVar(&nkeyFile, "nats-nkey-file", os.Getenv("SLUICE_NATS_NKEY_FILE"), "the break-glass identity's nkey seed (admin.nk)")
	f.StringVar(&caFile, "nats-ca", os.Getenv("SLUICE_NATS_CA"), "CA file to verify NATS (TLS)")
	return cmd
}

func newKeygenCmd(g *globals) *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "keygen --out FILE",
		Short: "Create a master key (seals target credentials, keys token masking)",
		Long: `Create a random 256-bit master key in FILE (mode 0600). Every PostgreSQL worker replica
needs the same key (--master-key-file or $SLUICE_MASTER_KEY): it opens sealed target
credentials and keys deterministic masking tokens, so that replicas agree.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return errors.New("--out is required")
			}
			if _, err := os.Stat(out); err == nil {
				return fmt.Errorf("%s exists; refusing to overwrite a master key", out)
			}
			if _, err := secrets.LoadOrCreateKeyFile(out); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "master key written to %s at %s\n", out, time.Now().UTC().Format(time.RFC3339))
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "file to write the key to (mode 0600)")
	return cmd
}

// breakGlass connects to NATS as the break-glass identity, for the admin
// command named.
func breakGlass(ctx context.Context, url, nkeyFile, caFile, command string) (*bus.Conn, error) {
	return bus.Connect(ctx, bus.Config{URL: url, NkeyFile: nkeyFile, CAFile: caFile, Component: bus.CompAdmin,
		Name: "sluice-admin-" + command, RequireSecure: true})
}
