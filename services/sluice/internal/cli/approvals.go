package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"sluice.dev/sluice/services/api"
)

// approvalWhat is what an approval is for, on one line of at most width
// characters. A command longer than that (or than the excerpt a request
// keeps) says how long it is in all: the whole text is in the session's
// audit record.
func approvalWhat(a api.ApprovalJSON, width int) string {
	if a.Type == "grant" {
		return fmt.Sprintf("grant role %s", a.Role)
	}
	what := []rune(strings.Join(strings.Fields(a.Command), " "))
	cut := len(what) > width || a.CommandSize > int64(len(a.Command))
	if !cut {
		return string(what)
	}
	note := fmt.Sprintf(" ... (%s in all)", byteSize(max(a.CommandSize, int64(len(a.Command)))))
	keep := max(width-len([]rune(note)), 0)
	if len(what) > keep {
		what = what[:keep]
	}
	return string(what) + note
}

// byteSize prints n bytes for people.
func byteSize(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}

func newApprovalsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "approvals", Short: "Held commands and access requests"}
	var state string
	list := &cobra.Command{
		Use:   "list [--state pending|approved|denied|expired|withdrawn|consumed|all]",
		Short: "List approval requests you may decide, and your own",
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
				Approvals []api.ApprovalJSON `json:"approvals"`
			}
			if err := c.do(cmd.Context(), http.MethodGet, "/api/v1/approvals?state="+url.QueryEscape(state), nil, &res); err != nil {
				return err
			}
			if g.json() {
				return g.printJSON(res)
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tSTATE\tREQUESTER\tTARGET\tWHAT\tRULE\tEXPIRES")
			for _, a := range res.Approvals {
				who := a.Requester
				if a.Machine {
					who += " (machine)"
				}
				if a.RequesterWaiting {
					who += ", waiting"
				}
				exp := ""
				if a.ExpiresAt != nil {
					exp = time.Until(*a.ExpiresAt).Round(time.Second).String()
				}
				what := approvalWhat(a, 60)
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", a.ID, a.State, who, a.Target, what, a.Rule, exp)
			}
			return tw.Flush()
		},
	}
	list.Flags().StringVar(&state, "state", "pending", "which requests: pending, approved, denied, expired, withdrawn, consumed or all")
	cmd.AddCommand(list)
	return cmd
}

func newDecideCmd(g *globals, verdict string) *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   verdict + " ID [--reason TEXT]",
		Short: map[string]string{"approve": "Approve a held command or an access request", "deny": "Deny a held command or an access request"}[verdict],
		Long: `Decide an approval request. You must be in one of the approver groups the rule names,
and you cannot decide your own request. An approved command runs once, exactly as held.`,
		Example: "  sluice " + verdict + " 01j8...  --reason \"checked with the on-call\"",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := g.checkOutput(); err != nil {
				return err
			}
			c, err := g.newClient(cmd.Context())
			if err != nil {
				return err
			}
			body, _ := json.Marshal(map[string]string{"reason": reason})
			var a api.ApprovalJSON
			if err := c.do(cmd.Context(), http.MethodPost, "/api/v1/approvals/"+url.PathEscape(args[0])+"/"+verdict, body, &a); err != nil {
				return err
			}
			if g.json() {
				return g.printJSON(a)
			}
			switch {
			case a.State == "approved":
				fmt.Fprintf(g.stdout, "approved %s: %s\n", a.ID, approvalWhat(a, 200))
			case a.State == "pending":
				fmt.Fprintf(g.stdout, "recorded your approval of %s; %d of %d approvals so far\n", a.ID, len(a.ApprovedBy), a.Quorum)
			default:
				fmt.Fprintf(g.stdout, "%s is now %s\n", a.ID, a.State)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why (kept in the audit log)")
	return cmd
}

func newRequestCmd(g *globals) *cobra.Command {
	var target, role, reason string
	var dur time.Duration
	cmd := &cobra.Command{
		Use:   `request --target T --role R --for 30m --reason "..."`,
		Short: "Ask for time-boxed elevation (a just-in-time grant)",
		Long: `Ask approvers for a role on a target for a while. Once approved, policies see the grant
as 'grants' until it ends or is revoked (for example, the default policy lets a 'writer'
grant skip review of bounded writes).`,
		Example: `  sluice request --target demo --role writer --for 30m --reason "backfill ORD-123"`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := g.checkOutput(); err != nil {
				return err
			}
			if target == "" || role == "" || reason == "" || dur <= 0 {
				return errors.New("--target, --role, --for and --reason are required")
			}
			c, err := g.newClient(cmd.Context())
			if err != nil {
				return err
			}
			body, _ := json.Marshal(map[string]string{"target": target, "role": role, "duration": dur.String(), "reason": reason})
			var a api.ApprovalJSON
			if err := c.do(cmd.Context(), http.MethodPost, "/api/v1/grants", body, &a); err != nil {
				return err
			}
			if g.json() {
				return g.printJSON(a)
			}
			fmt.Fprintf(g.stdout, "requested %s: role %s on %s for %s; an approver runs: sluice approve %s\n", a.ID, role, target, dur, a.ID)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&target, "target", "", "target name")
	f.StringVar(&role, "role", "", "role to be granted (policies give it meaning, e.g. writer)")
	f.DurationVar(&dur, "for", 0, "how long, e.g. 30m")
	f.StringVar(&reason, "reason", "", "why (shown to approvers and kept in the audit log)")
	return cmd
}

func newRevokeCmd(g *globals) *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "revoke GRANT_ID [--reason TEXT]",
		Short: "End a just-in-time grant early",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.newClient(cmd.Context())
			if err != nil {
				return err
			}
			body, _ := json.Marshal(map[string]string{"reason": reason})
			var a api.ApprovalJSON
			if err := c.do(cmd.Context(), http.MethodPost, "/api/v1/grants/"+url.PathEscape(args[0])+"/revoke", body, &a); err != nil {
				return err
			}
			if g.json() {
				return g.printJSON(a)
			}
			fmt.Fprintf(g.stdout, "revoked %s\n", a.ID)
			return nil
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why")
	return cmd
}
