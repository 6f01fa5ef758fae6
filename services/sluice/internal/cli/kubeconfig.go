package cli

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"sluice.dev/sluice/services/api"
)

func newKubeconfigCmd(g *globals) *cobra.Command {
	var target, out string
	cmd := &cobra.Command{
		Use:   "kubeconfig --target NAME [--out FILE]",
		Short: "Write a kubeconfig that reaches a Kubernetes target through Sluice",
		Long: `Write a kubeconfig whose cluster is the target behind Sluice's Kubernetes worker and
whose user is an exec credential plugin: kubectl runs 'sluice token --exec-credential'
for a fresh access token whenever it needs one (with the environment kubectl has:
$SLUICE_TOKEN, client credentials, or the token 'sluice login' cached). No credential
of the cluster ever reaches you: Sluice logs in to it with its own.

Without --out the kubeconfig is printed.`,
		Example: `  sluice kubeconfig --target demo-k8s --out demo-k8s.kubeconfig
  kubectl --kubeconfig demo-k8s.kubeconfig get namespaces`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if strings.TrimSpace(target) == "" {
				return usage("--target is required (sluice targets list shows the targets)")
			}
			c, err := g.newClient(cmd.Context())
			if err != nil {
				return err
			}
			var conf api.KubernetesConfigJSON
			if err := c.do(cmd.Context(), http.MethodGet, "/api/v1/kubernetes/config", nil, &conf); err != nil {
				return fmt.Errorf("where is the Kubernetes worker? %w", err)
			}
			if conf.URL == "" {
				return errors.New("the deployment publishes no Kubernetes worker URL")
			}
			self, err := os.Executable()
			if err != nil {
				return err
			}
			if self, err = filepath.Abs(self); err != nil {
				return err
			}
			cluster := "    server: " + strings.TrimSuffix(conf.URL, "/") + "/targets/" + target + "\n"
			if conf.CAPEM != "" {
				cluster += "    certificate-authority-data: " + base64.StdEncoding.EncodeToString([]byte(conf.CAPEM)) + "\n"
			}
			name := "sluice-" + target
			kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: %[1]s
  cluster:
%[2]susers:
- name: %[1]s
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: %[3]q
      args: [token, --exec-credential]
      env:
      - name: SLUICE_API
        value: %[4]q
      interactiveMode: Never
contexts:
- name: %[1]s
  context:
    cluster: %[1]s
    user: %[1]s
current-context: %[1]s
`, name, cluster, self, g.api)
			if out == "" {
				_, err := fmt.Fprint(g.stdout, kc)
				return err
			}
			if err := os.WriteFile(out, []byte(kc), 0o600); err != nil {
				return err
			}
			fmt.Fprintf(g.stderr, "Wrote %s (context %s). Try: kubectl --kubeconfig %s get namespaces\n", out, name, out)
			return nil
		},
	}
	cmd.Flags().StringVar(&target, "target", "", "the Kubernetes target's name")
	cmd.Flags().StringVar(&out, "out", "", "file to write (0600); default: print it")
	return cmd
}
