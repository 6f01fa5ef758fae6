package cli

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/crypto/ssh"

	"sluice.dev/sluice/libs/auditchain"
	"sluice.dev/sluice/libs/certs"
	"sluice.dev/sluice/libs/secrets"
	"sluice.dev/sluice/libs/sshca"
	"sluice.dev/sluice/services/sshworker"
)

// newAdminInitCmd creates every secret a deployment needs, once.
func newAdminInitCmd(g *globals) *cobra.Command {
	var dir, admin string
	var natsHosts, hosts []string
	cmd := &cobra.Command{
		Use:   "init --dir DIR [--nats-host H]... [--host H]...",
		Short: "Create every key and certificate a deployment needs (kept when they exist)",
		Long: `Create, in DIR, every secret a deployment of Sluice needs, and keep those that exist
(run it again after adding a host: only what changed is made anew):

  DIR/nats-keys/<service>.nk   each service's NATS identity (give each only its own)
  DIR/nats-keys/nats.env       their public keys, for the NATS servers (users.conf)
  DIR/admin.nk                 the break-glass NATS identity (or --admin-key): sluice admin
                               apply; keep it offline, never where a service can read it
  DIR/master.key               the master key: workers (sealed credentials, masking tokens)
  DIR/recorder.key             the recorder's signing key for audit checkpoints
  DIR/console.key              the API's key for the web console's session cookies
  DIR/tls/ca.pem               a private CA that signs the two certificates below
  DIR/tls/nats.pem, -key.pem   the NATS servers' certificate (clients and routes)
  DIR/tls/gateway.pem, -key.pem  the workers' certificate, presented to psql, kubectl...
  DIR/ssh/ssh_host_key(.pub)   the SSH worker's host key
  DIR/ssh/ssh_user_ca(.pub)    the SSH user CA: the identity service signs certificates

Certificates from your own CA work as well: give their files to the services instead.`,
		Example: `  sluice admin init --dir secrets
  sluice admin init --dir secrets --nats-host nats-0.nats.sluice.svc --host sluice.example.com`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return usage("--dir is required")
			}
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return err
			}
			type made struct{ what, path string }
			var out []made
			keys := filepath.Join(dir, "nats-keys")
			if abs, _ := filepath.Abs(filepath.Dir(admin)); admin != "" && abs == mustAbs(keys) {
				return usage("--admin-key %s is inside %s: keep the break-glass seed apart from the services' keys", admin, keys)
			}
			if admin == "" {
				admin = filepath.Join(dir, "admin.nk")
			}
			if _, _, env, err := createNATSKeys(keys, admin); err != nil {
				return err
			} else {
				out = append(out, made{"NATS identities (one seed per service)", keys}, made{"NATS servers' environment", env},
					made{"break-glass NATS identity (keep offline)", admin})
			}
			master := filepath.Join(dir, "master.key")
			if _, err := secrets.LoadOrCreateKeyFile(master); err != nil {
				return err
			}
			recorder := filepath.Join(dir, "recorder.key")
			if _, err := auditchain.LoadOrCreateSigningKey(recorder); err != nil {
				return err
			}
			console := filepath.Join(dir, "console.key")
			if _, err := secrets.LoadOrCreateKeyFile(console); err != nil {
				return err
			}
			out = append(out, made{"master key", master}, made{"recorder signing key", recorder}, made{"console cookie key (api)", console})
			tlsDir := filepath.Join(dir, "tls")
			ca, err := certs.LoadOrCreateCA(tlsDir, "Sluice deployment CA")
			if err != nil {
				return err
			}
			natsCert, _, err := ca.Issue(tlsDir, "nats", natsHosts)
			if err != nil {
				return err
			}
			gwCert, _, err := ca.Issue(tlsDir, "gateway", hosts)
			if err != nil {
				return err
			}
			out = append(out, made{"CA certificate (clients trust it)", ca.CertFile}, made{"NATS certificate", natsCert},
				made{"workers' certificate", gwCert})
			// SSH: the worker's host key (clients pin it) and the user
			// authority the identity service signs certificates with.
			sshDir := filepath.Join(dir, "ssh")
			hostKeyFile, userCAFile := filepath.Join(sshDir, "ssh_host_key"), filepath.Join(sshDir, "ssh_user_ca")
			host, err := sshworker.LoadHostKey(hostKeyFile, true)
			if err != nil {
				return err
			}
			userCA, err := sshca.LoadOrCreate(userCAFile)
			if err != nil {
				return err
			}
			for path, pub := range map[string]ssh.PublicKey{hostKeyFile + ".pub": host.PublicKey(), userCAFile + ".pub": userCA.PublicKey()} {
				if err := os.WriteFile(path, ssh.MarshalAuthorizedKey(pub), 0o644); err != nil {
					return err
				}
			}
			out = append(out, made{"SSH worker's host key", hostKeyFile}, made{"SSH user CA (identity)", userCAFile})
			if g.json() {
				files := map[string]string{}
				for _, m := range out {
					files[m.what] = m.path
				}
				return g.printJSON(map[string]any{"dir": dir, "files": files})
			}
			for _, m := range out {
				fmt.Fprintf(g.stdout, "%-40s %s\n", m.what, m.path)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", "", "directory for the secrets (created, mode 0700)")
	f.StringVar(&admin, "admin-key", "", "file for the break-glass NATS seed (default DIR/admin.nk)")
	f.StringSliceVar(&natsHosts, "nats-host", []string{"nats-1", "nats-2", "nats-3", "localhost", "127.0.0.1"}, "names and addresses of the NATS servers, for their certificate")
	f.StringSliceVar(&hosts, "host", []string{"localhost", "127.0.0.1"}, "names and addresses clients reach the workers at, for their certificate")
	return cmd
}

// newAdminProbeCmd asks a URL and fails unless it answers 200: the health
// check of an image that has no shell or curl.
func newAdminProbeCmd(g *globals) *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:     "probe URL",
		Short:   "Exit 0 when URL answers 200 (a container health check: sluice admin probe http://127.0.0.1:9090/readyz)",
		Args:    cobra.ExactArgs(1),
		Example: "  sluice admin probe http://127.0.0.1:9090/readyz",
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, args[0], nil)
			if err != nil {
				return usage("%v", err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("%s: HTTP %d: %s", args[0], resp.StatusCode, strings.TrimSpace(string(body)))
			}
			fmt.Fprintln(g.stdout, strings.TrimSpace(string(body)))
			return nil
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Second, "how long to wait for the answer")
	return cmd
}
