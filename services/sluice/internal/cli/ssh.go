package cli

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/crypto/ssh"

	"sluice.dev/sluice/services/api"
)

// hostAlias names the SSH gateway in the known_hosts and ssh_config that
// sluice ssh login writes, whatever address reaches it.
const hostAlias = "sluice-ssh-gateway"

func newSSHCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "ssh", Short: "SSH through Sluice: certificates for unmodified OpenSSH clients"}
	var dir string
	login := &cobra.Command{
		Use:   "login [--dir D]",
		Short: "Get a short-lived SSH certificate and write an ssh_config for every SSH target",
		Long: `Exchange your access token (from sluice login, client credentials or $SLUICE_TOKEN) for
an SSH user certificate signed by Sluice, valid as long as the token. It writes, in --dir
(default ~/.sluice/ssh):

  id_ed25519, id_ed25519.pub   a key pair, made once and kept
  id_ed25519-cert.pub          the certificate (run this command again when it expires)
  known_hosts                  the gateway's host key, as the deployment publishes it
  config                       one Host block per SSH target you can see

Then use any OpenSSH client, the target's name as the host:
  ssh -F ~/.sluice/ssh/config demo-ssh 'uptime'
  scp -F ~/.sluice/ssh/config file demo-ssh:/tmp/
or add "Include ~/.sluice/ssh/config" at the top of ~/.ssh/config. The login name is the
target's name; Sluice logs in to the target with a credential you never see.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := g.checkOutput(); err != nil {
				return err
			}
			if dir == "" {
				home, err := os.UserHomeDir()
				if err != nil {
					return err
				}
				dir = filepath.Join(home, ".sluice", "ssh")
			}
			dir, err := filepath.Abs(dir)
			if err != nil {
				return err
			}
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return err
			}
			c, err := g.newClient(cmd.Context())
			if err != nil {
				return err
			}
			keyFile := filepath.Join(dir, "id_ed25519")
			pub, err := loadOrCreateUserKey(keyFile)
			if err != nil {
				return err
			}
			body, _ := json.Marshal(api.SSHCertificateRequestJSON{PublicKey: string(ssh.MarshalAuthorizedKey(pub))})
			var cert api.SSHCertificateJSON
			if err := c.do(cmd.Context(), http.MethodPost, "/api/v1/ssh/certificate", body, &cert); err != nil {
				return err
			}
			if err := os.WriteFile(keyFile+"-cert.pub", []byte(cert.Certificate), 0o600); err != nil {
				return err
			}
			var conf api.SSHConfigJSON
			if err := c.do(cmd.Context(), http.MethodGet, "/api/v1/ssh/config", nil, &conf); err != nil {
				return fmt.Errorf("where is the SSH worker? %w", err)
			}
			host, port, err := net.SplitHostPort(conf.Address)
			if err != nil {
				return fmt.Errorf("the deployment publishes an SSH address Sluice cannot read (%q): %w", conf.Address, err)
			}
			var known strings.Builder
			for _, k := range conf.HostKeys {
				fmt.Fprintf(&known, "%s %s\n", hostAlias, strings.TrimSpace(k))
			}
			if known.Len() == 0 {
				return errors.New("the deployment publishes no SSH host key: there is nothing to check the gateway against")
			}
			if err := os.WriteFile(filepath.Join(dir, "known_hosts"), []byte(known.String()), 0o600); err != nil {
				return err
			}
			var targets struct {
				Targets []api.TargetJSON `json:"targets"`
			}
			if err := c.do(cmd.Context(), http.MethodGet, "/api/v1/targets", nil, &targets); err != nil {
				return err
			}
			until := time.Unix(cert.ValidBeforeUnix, 0)
			var cfg strings.Builder
			fmt.Fprintf(&cfg, "# Written by sluice ssh login for %s; the certificate is valid until %s.\n# Run sluice ssh login again to renew it.\n",
				cert.Subject, until.UTC().Format(time.RFC3339))
			var names []string
			for _, t := range targets.Targets {
				if t.Kind != "ssh" {
					continue
				}
				names = append(names, t.Name)
				fmt.Fprintf(&cfg, "\nHost %s\n  HostName %s\n  Port %s\n  User %s\n  HostKeyAlias %s\n  UserKnownHostsFile %s\n  StrictHostKeyChecking yes\n  IdentityFile %s\n  CertificateFile %s\n  IdentitiesOnly yes\n",
					t.Name, host, port, t.Name, hostAlias, filepath.Join(dir, "known_hosts"), keyFile, keyFile+"-cert.pub")
			}
			if err := os.WriteFile(filepath.Join(dir, "config"), []byte(cfg.String()), 0o600); err != nil {
				return err
			}
			if g.json() {
				return g.printJSON(map[string]any{"subject": cert.Subject, "valid_before": until.UTC(), "dir": dir,
					"config": filepath.Join(dir, "config"), "certificate": keyFile + "-cert.pub", "targets": names})
			}
			fmt.Fprintf(g.stdout, "SSH certificate for %s, valid until %s (%s).\n", cert.Subject, until.Format(time.RFC3339), time.Until(until).Round(time.Minute))
			if len(names) == 0 {
				fmt.Fprintf(g.stdout, "No SSH target is registered yet; run this again once one is.\n")
				return nil
			}
			fmt.Fprintf(g.stdout, "Targets: %s\n  ssh -F %s %s 'uptime'\n(or add \"Include %s\" at the top of ~/.ssh/config)\n",
				strings.Join(names, ", "), filepath.Join(dir, "config"), names[0], filepath.Join(dir, "config"))
			return nil
		},
	}
	login.Flags().StringVar(&dir, "dir", "", "where to keep the key, certificate and ssh_config (default ~/.sluice/ssh)")
	cmd.AddCommand(login)
	return cmd
}

// loadOrCreateUserKey keeps one ed25519 key pair at path.
func loadOrCreateUserKey(path string) (ssh.PublicKey, error) {
	if b, err := os.ReadFile(path); err == nil {
		s, err := ssh.ParsePrivateKey(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return s.PublicKey(), nil
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	block, err := ssh.MarshalPrivateKey(priv, "sluice ssh login")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		return nil, err
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(path+".pub", ssh.MarshalAuthorizedKey(sp), 0o644); err != nil {
		return nil, err
	}
	return sp, nil
}
