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
	var sub, groups, email, target string
	var machine, verbose bool
	test := &cobra.Command{
		Use:   `test --sub S --groups G --target T [--machine] "SQL"`,
		Short: "Show how the policy rules on a SQL string for a principal",
		Long: `Ask the policy service how it would rule on a SQL string sent by a principal to a
target: the action (allow, deny, review), the rule that decided, its reason and the policy
revision. Nothing is executed. Needs a token in an admin or auditor group of the access
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
			body, _ := json.Marshal(map[string]any{"subject": sub, "email": email, "groups": splitList(groups), "machine": machine, "target": target, "sql": args[0]})
			var d api.DecisionJSON
			if err := c.do(cmd.Context(), http.MethodPost, "/api/v1/policy/test", body, &d); err != nil {
				return err
			}
			if g.json() {
				if verbose {
					return g.printJSON(d)
				}
				return g.printJSON(map[string]any{"action": d.Action, "rule": d.Rule, "reason": d.Reason, "revision": d.Revision})
			}
			fmt.Fprintf(g.stdout, "%s  (rule %s, policy revision %d)\n%s\n", strings.ToUpper(d.Action), d.Rule, d.Revision, d.Reason)
			if d.Action == "review" {
				fmt.Fprintf(g.stdout, "approvers: %s (quorum %d)\n", strings.Join(d.Approvers, ", "), d.Quorum)
			}
			if verbose {
				for i, st := range d.Statements {
					fmt.Fprintf(g.stdout, "statement %d: %s %s reads=%v writes=%v functions=%v flags=%v\n", i+1, st.Kind, st.Command, st.Reads, st.Writes, st.Functions, st.Flags)
				}
				if len(d.Masks) > 0 {
					m, _ := json.Marshal(d.Masks)
					fmt.Fprintf(g.stdout, "masks: %s\n", m)
				}
			}
			return nil
		},
	}
	f := test.Flags()
	f.StringVar(&sub, "sub", "", "subject of the principal")
	f.StringVar(&groups, "groups", "", "comma-separated groups")
	f.StringVar(&email, "email", "", "email of the principal")
	f.StringVar(&target, "target", "", "target name")
	f.BoolVar(&machine, "machine", false, "the principal is a machine identity")
	f.BoolVarP(&verbose, "verbose", "v", false, "also show the classification and masks")
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
