package cli

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"sluice.dev/sluice/libs/secrets"
	"sluice.dev/sluice/services/api"
)

func newApplyCmd(g *globals) *cobra.Command {
	var file string
	var dryRun, prune bool
	cmd := &cobra.Command{
		Use:   "apply -f sluice.yaml",
		Short: "Apply a configuration file (targets, policies, approvers, identity provider)",
		Long: `Apply sluice.yaml: register targets, replace the policy, set approver groups and the
identity provider. Only what differs from the stored state is changed, so applying the
same file twice changes nothing. Policies are type-checked first; errors name the rule,
line and column. Needs a token in a group the access section names under admins.`,
		Example: `  sluice apply -f sluice.yaml
  sluice apply -f sluice.yaml --dry-run -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := g.checkOutput(); err != nil {
				return err
			}
			data, err := readConfig(file)
			if err != nil {
				return err
			}
			c, err := g.newClient(cmd.Context())
			if err != nil {
				return err
			}
			q := url.Values{"file": {filepath.Base(file)}}
			if dryRun {
				q.Set("dry_run", "true")
			}
			if prune {
				q.Set("prune", "true")
			}
			var res api.ApplyResult
			callErr := c.do(cmd.Context(), http.MethodPost, "/api/v1/apply?"+q.Encode(), data, &res)
			return g.printApply(file, res, callErr, dryRun)
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "configuration file (- for standard input)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "show what would change without changing it")
	cmd.Flags().BoolVar(&prune, "prune", false, "remove registered targets the file does not name")
	return cmd
}

// readConfig reads a configuration file, "-" meaning standard input.
func readConfig(file string) ([]byte, error) {
	if file == "" {
		return nil, errors.New("give the file with -f (use -f - for standard input)")
	}
	if file == "-" {
		return io.ReadAll(os.Stdin)
	}
	return os.ReadFile(file)
}

// printApply shows what an apply changed, or where the file is wrong.
func (g *globals) printApply(file string, res api.ApplyResult, callErr error, dryRun bool) error {
	if g.json() && (callErr == nil || len(res.Errors) > 0) {
		if err := g.printJSON(res); err != nil {
			return err
		}
		if callErr != nil {
			return &exitError{code: 1, err: fmt.Errorf("%s: %d problem(s)", file, len(res.Errors))}
		}
		return nil
	}
	if len(res.Errors) > 0 {
		for _, e := range res.Errors {
			loc := file
			if e.Line > 0 {
				loc = fmt.Sprintf("%s:%d:%d", file, e.Line, e.Column)
			}
			if e.Rule != "" {
				fmt.Fprintf(g.stderr, "%s: rule %q: %s\n", loc, e.Rule, e.Message)
			} else {
				fmt.Fprintf(g.stderr, "%s: %s\n", loc, e.Message)
			}
		}
		return &exitError{code: 1, err: fmt.Errorf("%s was not applied: %s", file, res.Reason)}
	}
	if callErr != nil {
		return callErr
	}
	changed := 0
	for _, ch := range res.Changes {
		if ch.Op != "unchanged" {
			changed++
		}
		fmt.Fprintf(g.stdout, "%-10s %-24s %s\n", ch.Kind, ch.Name, ch.Op)
	}
	verb := "applied"
	if dryRun {
		verb = "would apply"
	}
	fmt.Fprintf(g.stdout, "%s %d change(s)", verb, changed)
	if res.PolicyRevision > 0 {
		fmt.Fprintf(g.stdout, "; policy revision %d", res.PolicyRevision)
	}
	fmt.Fprintln(g.stdout)
	return nil
}

func newTargetsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "targets", Short: "Registered targets"}
	cmd.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List registered targets (never their credentials)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := g.checkOutput(); err != nil {
				return err
			}
			c, err := g.newClient(cmd.Context())
			if err != nil {
				return err
			}
			var res struct {
				Targets []api.TargetJSON `json:"targets"`
			}
			if err := c.do(cmd.Context(), http.MethodGet, "/api/v1/targets", nil, &res); err != nil {
				return err
			}
			if g.json() {
				return g.printJSON(res)
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tKIND\tADDRESS\tDATABASE\tUSER\tCREDENTIAL\tLABELS")
			for _, t := range res.Targets {
				var labels []string
				for k, v := range t.Labels {
					labels = append(labels, k+"="+v)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.Name, t.Kind, t.Address, t.Database, t.User, t.Credential, strings.Join(labels, ","))
			}
			return tw.Flush()
		},
	})
	return cmd
}

func newSecretCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "secret", Short: "The master key and sealed target credentials"}
	var keyFile string
	seal := &cobra.Command{
		Use:   "seal",
		Short: "Encrypt a secret read from standard input under the master key",
		Long: `Read a secret from standard input and print it sealed (AES-256-GCM under the master key
from $SLUICE_MASTER_KEY or --key-file), ready for a 'sealed:' credential in sluice.yaml.
Only processes holding the master key can open it.`,
		Example: `  printf %s "$DB_PASSWORD" | sluice secret seal --key-file .sluice/master.key`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			key, err := secrets.LoadKey(keyFile)
			if err != nil {
				return err
			}
			plain, err := io.ReadAll(io.LimitReader(os.Stdin, 1<<20))
			if err != nil {
				return err
			}
			plain = []byte(strings.TrimRight(string(plain), "\r\n"))
			if len(plain) == 0 {
				return errors.New("nothing to seal on standard input")
			}
			fmt.Fprintln(g.stdout, base64.StdEncoding.EncodeToString(key.Seal(plain)))
			return nil
		},
	}
	seal.Flags().StringVar(&keyFile, "key-file", "", "master key file (default: $SLUICE_MASTER_KEY)")
	cmd.AddCommand(seal, newKeygenCmd(g))
	return cmd
}
