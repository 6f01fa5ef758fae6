package cli

import (
	"bufio"
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
	var dryRun, prune, yes bool
	cmd := &cobra.Command{
		Use:   "apply -f sluice.yaml",
		Short: "Apply a configuration file (targets, policies, approvers, identity provider)",
		Long: `Apply sluice.yaml: register targets, replace the policy, set approver groups and the
identity provider. Only what differs from the stored state is changed, so applying the
same file twice changes nothing. Policies are type-checked first; errors name the file,
line and column (and the rule). Needs a token in a group the access section names under
admins.

Apply prints what it adds, changes and removes, item by item (--dry-run: what it would);
sealed credentials are only said to have changed. --prune also removes the targets the
file does not name: it lists them first and asks, or, when standard input is not a
terminal, refuses unless --yes is given. Targets that 'sluice dev' registers itself
(demo) are not in its sluice.yaml, so --prune with that file removes them too; 'sluice
dev' registers demo again when it next starts.`,
		Example: `  sluice apply -f sluice.yaml --dry-run
  sluice apply -f sluice.yaml
  sluice apply -f sluice.yaml --prune --yes -o json`,
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
			if prune {
				q.Set("prune", "true")
			}
			if prune && !dryRun && !yes {
				// Ask the control service what pruning would remove, and
				// remove nothing nobody saw.
				preview := url.Values{"file": q["file"], "prune": {"true"}, "dry_run": {"true"}}
				var res api.ApplyResult
				if err := c.do(cmd.Context(), http.MethodPost, "/api/v1/apply?"+preview.Encode(), data, &res); err != nil {
					return g.printApply(file, res, err, true)
				}
				if err := g.confirmRemovals(file, res.Diff); err != nil {
					return err
				}
			}
			if dryRun {
				q.Set("dry_run", "true")
			}
			var res api.ApplyResult
			callErr := c.do(cmd.Context(), http.MethodPost, "/api/v1/apply?"+q.Encode(), data, &res)
			return g.printApply(file, res, callErr, dryRun)
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "configuration file (- for standard input)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "show what would change without changing it")
	cmd.Flags().BoolVar(&prune, "prune", false, "remove registered targets the file does not name (asks first)")
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "with --prune: remove without asking")
	return cmd
}

// confirmRemovals lists what an apply would remove and asks whether to go
// on; without a terminal to ask on, it refuses.
func (g *globals) confirmRemovals(file string, diff []api.DiffItem) error {
	var removed []api.DiffItem
	for _, d := range diff {
		if d.Op == "removed" {
			removed = append(removed, d)
		}
	}
	if len(removed) == 0 {
		return nil
	}
	in, terminal := input()
	if !terminal {
		err := fmt.Errorf("--prune would remove %d item(s) that %s does not name; nothing was applied: run again with --yes to remove them", len(removed), file)
		if !g.json() {
			g.printRemovals(file, removed)
		}
		return &cliError{code: "confirmation_required", err: err, fields: map[string]any{"removals": removed}}
	}
	g.printRemovals(file, removed)
	fmt.Fprintf(g.stderr, "Remove them? [y/N] ")
	answer, _ := bufio.NewReader(in).ReadString('\n')
	switch strings.ToLower(strings.TrimSpace(answer)) {
	case "y", "yes":
		return nil
	}
	return &cliError{code: "not_confirmed", err: errors.New("nothing was applied")}
}

func (g *globals) printRemovals(file string, removed []api.DiffItem) {
	fmt.Fprintf(g.stderr, "--prune removes %d item(s) that %s does not name:\n", len(removed), file)
	for _, d := range removed {
		fmt.Fprintf(g.stderr, "  %s %s: %s\n", singular(d.Section), d.Name, d.Summary)
	}
}

// singular names one item of a section.
func singular(section string) string {
	switch section {
	case "targets":
		return "target"
	case "policies":
		return "rule"
	case "approvers":
		return "approver group"
	case "identity":
		return "identity provider"
	}
	return section
}

// readConfig reads a configuration file, "-" meaning standard input.
func readConfig(file string) ([]byte, error) {
	if file == "" {
		return nil, usage("give the file with -f (use -f - for standard input)")
	}
	if file == "-" {
		return io.ReadAll(os.Stdin)
	}
	return os.ReadFile(file)
}

// printApply shows what an apply changed, or where the file is wrong.
func (g *globals) printApply(file string, res api.ApplyResult, callErr error, dryRun bool) error {
	if callErr != nil {
		return g.applyFailed(file, res, callErr)
	}
	if g.json() {
		return g.printJSON(res)
	}
	changed := 0
	for _, ch := range res.Changes {
		if ch.Op != "unchanged" {
			changed++
		}
	}
	g.printDiff(res.Diff)
	verb := "applied"
	if dryRun {
		verb = "would apply"
	}
	summary := fmt.Sprintf("%s %d change(s)", verb, changed)
	if res.PolicyRevision > 0 {
		summary += fmt.Sprintf("; policy revision %d", res.PolicyRevision)
	}
	if changed == 0 {
		summary = "no changes (" + summary + ")"
	}
	fmt.Fprintln(g.stdout, summary)
	return nil
}

// printDiff writes one line per item, grouped by section, and a changed
// rule's `when` as a unified diff under it.
func (g *globals) printDiff(diff []api.DiffItem) {
	width := map[string]int{}
	for _, d := range diff {
		width[d.Section] = max(width[d.Section], len(d.Name))
	}
	section := ""
	for _, d := range diff {
		if d.Section != section {
			section = d.Section
			fmt.Fprintln(g.stdout, section)
		}
		line := fmt.Sprintf("  %-8s %-*s  %s", d.Op, width[d.Section], d.Name, d.Summary)
		fmt.Fprintln(g.stdout, strings.TrimRight(line, " "))
		for _, l := range d.WhenDiff {
			fmt.Fprintf(g.stdout, "%*s%s\n", 13+width[d.Section], "", l)
		}
	}
}

// applyFailed reports a refused apply: where the file is wrong, when the
// control service said so, else the error.
func (g *globals) applyFailed(file string, res api.ApplyResult, callErr error) error {
	if len(res.Errors) == 0 {
		return callErr
	}
	for i := range res.Errors {
		res.Errors[i].File = file
	}
	reason := fmt.Sprintf("%s was not applied: %s", file, res.Reason)
	if g.json() {
		e := &apiError{Code: res.Error, Reason: reason, Body: map[string]any{"errors": res.Errors}}
		var ae *apiError
		if errors.As(callErr, &ae) {
			e.Status = ae.Status
		}
		return &exitError{code: 1, err: e}
	}
	for _, e := range res.Errors {
		loc := file
		switch {
		case e.Line > 0 && e.Column > 0:
			loc = fmt.Sprintf("%s:%d:%d", file, e.Line, e.Column)
		case e.Line > 0:
			loc = fmt.Sprintf("%s:%d", file, e.Line)
		}
		if e.Rule != "" {
			fmt.Fprintf(g.stderr, "%s: rule %q: %s\n", loc, e.Rule, e.Message)
		} else {
			fmt.Fprintf(g.stderr, "%s: %s\n", loc, e.Message)
		}
	}
	return &exitError{code: 1, err: errors.New(reason)}
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
