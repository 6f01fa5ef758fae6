package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/spf13/cobra"

	"sluice.dev/sluice/services/api"
)

func newPolicyCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "policy", Short: "Inspect the policy in force"}
	var sub, groups, email, issuer, target string
	var machine, verbose bool
	test := &cobra.Command{
		Use:   `test --sub S --groups G --target T [--machine] "SQL"`,
		Short: "Show how the policy rules on a SQL string for a principal",
		Long: `Ask the policy service how it would rule on a SQL string sent by a principal to a
target: the action (allow, deny, review), the rule that decided, its reason and the policy
revision, and what the worker would mask in the results: the masked columns, the value
detectors and, for statements that return rows, which result columns come from a masked
column. Nothing is executed. Needs a token in an admin or auditor group of the access
section, or in an approver group.`,
		Example: `  sluice policy test --sub alice --groups engineers --target demo "DELETE FROM customers"
  sluice policy test --sub ci --groups engineers --machine --target demo -o json "INSERT INTO t VALUES (1)"`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := g.checkOutput(); err != nil {
				return err
			}
			if sub == "" || target == "" {
				return errors.New("--sub and --target are required")
			}
			c, err := g.newClient(cmd.Context())
			if err != nil {
				return err
			}
			body, _ := json.Marshal(map[string]any{"subject": sub, "issuer": issuer, "email": email, "groups": splitList(groups), "machine": machine, "target": target, "sql": args[0]})
			var d api.DecisionJSON
			if err := c.read(cmd.Context(), http.MethodPost, "/api/v1/policy/test", body, &d); err != nil {
				return err
			}
			if g.json() {
				if verbose {
					return g.printJSON(d)
				}
				return g.printJSON(map[string]any{"action": d.Action, "rule": d.Rule, "reason": d.Reason, "revision": d.Revision, "masking": d.Masking})
			}
			fmt.Fprintf(g.stdout, "%s  (rule %s, policy revision %d)\n%s\n", strings.ToUpper(d.Action), d.Rule, d.Revision, d.Reason)
			if d.Action == "review" {
				fmt.Fprintf(g.stdout, "approvers: %s (quorum %d)\n", strings.Join(d.Approvers, ", "), d.Quorum)
			}
			g.printMasking(sub, target, d.Masking)
			if verbose {
				for i, st := range d.Statements {
					fmt.Fprintf(g.stdout, "statement %d: %s %s reads=%v writes=%v functions=%v flags=%v\n", i+1, st.Kind, st.Command, st.Reads, st.Writes, st.Functions, st.Flags)
					if len(st.Columns) > 0 || len(st.Targets) > 0 || len(st.Sources) > 0 {
						fmt.Fprintf(g.stdout, "  columns=%v result sources=%v all sources=%v\n", st.Columns, st.Targets, st.Sources)
					}
				}
			}
			return nil
		},
	}
	f := test.Flags()
	f.StringVar(&sub, "sub", "", "subject of the principal")
	f.StringVar(&groups, "groups", "", "comma-separated groups")
	f.StringVar(&email, "email", "", "email of the principal")
	f.StringVar(&issuer, "issuer", "", "issuer of the principal (default: your token's; a grant is its holder's at one issuer)")
	f.StringVar(&target, "target", "", "target name")
	f.BoolVar(&machine, "machine", false, "the principal is a machine identity")
	f.BoolVarP(&verbose, "verbose", "v", false, "also show the classification")
	cmd.AddCommand(test)
	return cmd
}

func splitList(s string) []string {
	out := []string{}
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// printMasking says what the worker would mask in the results.
func (g *globals) printMasking(sub, target string, m *api.MaskingJSON) {
	if m == nil {
		fmt.Fprintf(g.stdout, "masking: none for %s on %s\n", sub, target)
		return
	}
	fmt.Fprintf(g.stdout, "masking: columns %s; detectors %s; action %s", orNone(m.Columns), orNone(m.Detectors), m.Action)
	if m.Derived == "refuse" {
		fmt.Fprint(g.stdout, "; values derived from masked columns refuse the statement")
	}
	fmt.Fprintln(g.stdout)
	for _, r := range m.Results {
		prefix := "  result"
		if len(m.Results) > 1 {
			prefix = fmt.Sprintf("  statement %d result", r.Statement)
		}
		if len(r.Columns) == 0 {
			if len(r.MaskedSources) > 0 {
				fmt.Fprintf(g.stdout, "%s: reads masked columns %s, masked wherever they appear\n", prefix, strings.Join(r.MaskedSources, ", "))
			} else {
				fmt.Fprintf(g.stdout, "%s: no masked column; detectors scan the values\n", prefix)
			}
			continue
		}
		for _, c := range r.Columns {
			from := strings.Join(c.Sources, ", ")
			if from == "" {
				from = "no column"
			}
			switch {
			case len(c.MaskedBy) > 0:
				fmt.Fprintf(g.stdout, "%s column %d (%s): masked (%s)\n", prefix, c.Position, from, strings.Join(c.MaskedBy, ", "))
			case c.UnknownOrigin:
				fmt.Fprintf(g.stdout, "%s column %d (%s): masked as derived (its origin cannot be followed)\n", prefix, c.Position, from)
			default:
				fmt.Fprintf(g.stdout, "%s column %d (%s): detectors only\n", prefix, c.Position, from)
			}
		}
	}
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}
