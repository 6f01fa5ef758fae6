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

	"sluice.dev/sluice/libs/visible"
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
	what := []rune(visible.OneLine(a.Command))
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

// oneLine is a field as a terminal shows it: what would not show as
// itself written out, line breaks too.
func oneLine(v string) string {
	return strings.ReplaceAll(visible.Text(v), "\n", "⟨U+000A⟩")
}

// approvalWhen is the one time that matters for a request in its state,
// relative to now: when a pending request expires, when a grant in force
// ends, or when a request was decided or made.
func approvalWhen(a api.ApprovalJSON, now time.Time) string {
	switch {
	case a.State == "pending" && a.ExpiresAt != nil:
		if left := a.ExpiresAt.Sub(now); left > 0 {
			return "expires in " + roundFor(left)
		}
		return "expiring"
	case a.Type == "grant" && a.State == "approved" && a.EndsAt != nil:
		if left := a.EndsAt.Sub(now); left > 0 {
			return "ends in " + roundFor(left)
		}
		return "ended " + roundFor(now.Sub(*a.EndsAt)) + " ago"
	}
	return "asked " + roundFor(now.Sub(a.CreatedAt)) + " ago"
}

// roundFor prints a duration to the second, or the minute past an hour.
func roundFor(d time.Duration) string {
	if d >= time.Hour {
		return d.Round(time.Minute).String()
	}
	return d.Round(time.Second).String()
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
	var state, before string
	var limit int
	list := &cobra.Command{
		Use:   "list [--state pending|approved|denied|expired|withdrawn|consumed|all] [--limit N] [--before CURSOR]",
		Short: "List approval requests you may decide, and your own",
		Long: `List approval requests you may decide, and your own. Pending ones are listed whole; for the
others, recent ones come first, then the history a page at a time (--limit, and --before with
what the previous page said).`,
		Example: `  sluice approvals list
  sluice approvals list --state denied --limit 20`,
		Args: cobra.NoArgs,
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
				Next      string             `json:"next,omitempty"`
			}
			q := url.Values{"state": {state}}
			if limit > 0 {
				q.Set("limit", fmt.Sprint(limit))
			}
			if before != "" {
				q.Set("before", before)
			}
			if err := c.do(cmd.Context(), http.MethodGet, "/api/v1/approvals?"+q.Encode(), nil, &res); err != nil {
				return err
			}
			if g.json() {
				return g.printJSON(res)
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tSTATE\tREQUESTER\tTARGET\tWHAT\tRULE\tWHEN")
			now := time.Now()
			for _, a := range res.Approvals {
				who := a.Requester
				if a.Machine {
					who += " (machine)"
				}
				if a.RequesterWaiting {
					who += ", waiting"
				}
				what := approvalWhat(a, 60)
				if a.Protocol != "" && a.Protocol != "postgres" {
					// SQL is the default; other protocols say what they are.
					what = a.Protocol + ": " + what
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", a.ID, a.State, oneLine(who), oneLine(a.Target), what, oneLine(a.Rule), approvalWhen(a, now))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if res.Next != "" {
				fmt.Fprintf(g.stderr, "more: the next page is --before %s\n", res.Next)
			}
			return nil
		},
	}
	list.Flags().StringVar(&state, "state", "pending", "which requests: pending, approved, denied, expired, withdrawn, consumed or all")
	list.Flags().IntVar(&limit, "limit", 0, "at most this many from the history per page (1 to 1000; default 100)")
	list.Flags().StringVar(&before, "before", "", "the page of history after this cursor (what the previous page said)")
	cmd.AddCommand(list, newApprovalShowCmd(g))
	return cmd
}

func newApprovalShowCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "show ID",
		Short: "Show one approval request whole: the command as it runs, with its parameters",
		Long: `Show one approval request whole: who asked, where, under which rule, and the command exactly
as it would run, with what it runs with (a statement's bound parameters, a request's body, a
command's environment variables). Characters that would not show as themselves (control
characters, bidirectional overrides, zero-width and other invisible characters) are written
out as ⟨U+XXXX⟩. Read it here, in the console or in Slack before you approve.`,
		Example: `  sluice approvals show 01j8...`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := g.checkOutput(); err != nil {
				return err
			}
			c, err := g.newClient(cmd.Context())
			if err != nil {
				return err
			}
			var a api.ApprovalJSON
			if err := c.do(cmd.Context(), http.MethodGet, "/api/v1/approvals/"+url.PathEscape(args[0]), nil, &a); err != nil {
				return err
			}
			if g.json() {
				return g.printJSON(a)
			}
			who := a.Requester
			if a.Machine {
				who += " (machine identity)"
			}
			line := func(k, v string) {
				if v != "" {
					// Written out as a request's command is: no field
					// draws on the terminal or fakes a line.
					fmt.Fprintf(g.stdout, "%-11s %s\n", k+":", oneLine(v))
				}
			}
			line("id", a.ID)
			line("state", a.State)
			line("requester", who)
			line("target", a.Target)
			line("protocol", a.Protocol)
			line("session", a.Session)
			line("rule", a.Rule)
			line("reason", a.Reason) // a grant's reason, written out by the approvals service
			line("approvers", strings.Join(a.ApproverGroups, ", "))
			line("approved by", strings.Join(a.ApprovedBy, ", "))
			line("decided by", a.DecidedBy)
			line("decision", a.DecisionReason)
			line("when", approvalWhen(a, time.Now()))
			if a.Type == "grant" {
				line("role", a.Role)
				return nil
			}
			fmt.Fprintf(g.stdout, "command (%s):\n", byteSize(max(a.CommandSize, int64(len(a.Command)))))
			for _, l := range strings.Split(a.Command, "\n") {
				fmt.Fprintf(g.stdout, "  %s\n", l)
			}
			return nil
		},
	}
}

func newDecideCmd(g *globals, verdict string) *cobra.Command {
	var reason, grant string
	var scope time.Duration
	cmd := &cobra.Command{
		Use:   verdict + " ID [--reason TEXT]",
		Short: map[string]string{"approve": "Approve a held command or an access request", "deny": "Deny a held command or an access request"}[verdict],
		Long: map[string]string{"approve": `Decide an approval request. You must be in one of the approver groups the rule names,
and you cannot decide your own request. An approved command runs once, exactly as held.

With --grant ROLE --for D, approving a held command also grants its requester ROLE on the
command's target, in the command's session only, for D: a bounded scope approved at once
(policies see it in 'grants'; the default policy lets a 'ddl' grant skip the review of
schema changes). The grant is recorded as its own request, with its own id.`, "deny": `Decide an approval request. You must be in one of the approver groups the rule names,
and you cannot decide your own request. A denied command never runs; its client gets the
reason.`}[verdict],
		Example: map[string]string{"approve": `  sluice approve 01j8... --reason "checked with the on-call"
  sluice approve 01j8... --grant ddl --for 10m --reason "fixtures for the migration test"`,
			"deny": `  sluice deny 01j8... --reason "not during business hours"`}[verdict],
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := g.checkOutput(); err != nil {
				return err
			}
			c, err := g.newClient(cmd.Context())
			if err != nil {
				return err
			}
			if (grant == "") != (scope == 0) {
				return errors.New("--grant and --for go together: --grant ROLE --for 10m")
			}
			req := api.DecideJSON{Reason: reason, Grant: grant}
			if scope != 0 {
				req.For = scope.String()
			}
			body, _ := json.Marshal(req)
			var a api.ApprovalJSON
			if err := c.do(cmd.Context(), http.MethodPost, "/api/v1/approvals/"+url.PathEscape(args[0])+"/"+verdict, body, &a); err != nil {
				return err
			}
			if g.json() {
				return g.printJSON(a)
			}
			// The held command may already have run by the time the
			// answer is read back: consumed is approved, and used.
			approved := a.State == "approved" || a.State == "consumed"
			switch {
			case approved && a.GrantID != "":
				fmt.Fprintf(g.stdout, "approved %s: %s\ngranted %s: role %s on %s in session %s for %s (sluice revoke %s ends it)\n",
					a.ID, approvalWhat(a, 200), a.GrantID, grant, a.Target, a.Session, scope, a.GrantID)
			case approved:
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
	if verdict == "approve" {
		cmd.Flags().StringVar(&grant, "grant", "", "also grant the requester this role in the command's session (with --for)")
		cmd.Flags().DurationVar(&scope, "for", 0, "how long the grant lasts, e.g. 10m")
	}
	return cmd
}

func newRequestCmd(g *globals) *cobra.Command {
	var target, role, reason, session string
	var dur time.Duration
	cmd := &cobra.Command{
		Use:   `request --target T --role R --for 30m --reason "..." [--session ID]`,
		Short: "Ask for time-boxed elevation (a just-in-time grant)",
		Long: `Ask approvers (the access section's grant_approvers) for a role on a target for a
while. The id printed names the request and, once approved, the grant itself: 'sluice
grants list' shows it and 'sluice revoke ID' ends it early. Once approved, policies see the
grant as 'grants' until it ends or is revoked (for example, the default policy lets a
'writer' grant skip review of bounded writes, and a 'ddl' grant the review of schema
changes). With --session the grant holds in that session only.`,
		Example: `  sluice request --target demo --role writer --for 30m --reason "backfill ORD-123"
  sluice request --target demo --role ddl --for 10m --session 01j8... --reason "migration test"`,
		Args: cobra.NoArgs,
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
			body, _ := json.Marshal(api.GrantRequestJSON{Target: target, Role: role, Duration: dur.String(), Reason: reason, Session: session})
			var a api.ApprovalJSON
			if err := c.do(cmd.Context(), http.MethodPost, "/api/v1/grants", body, &a); err != nil {
				return err
			}
			if g.json() {
				return g.printJSON(a)
			}
			fmt.Fprintf(g.stdout, "requested grant %s: role %s on %s for %s; an approver runs: sluice approve %s\n", a.ID, role, target, dur, a.ID)
			fmt.Fprintf(g.stdout, "once approved, %s names the grant: sluice grants list shows it, sluice revoke %s ends it\n", a.ID, a.ID)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&target, "target", "", "target name")
	f.StringVar(&role, "role", "", "role to be granted (policies give it meaning, e.g. writer)")
	f.DurationVar(&dur, "for", 0, "how long, e.g. 30m")
	f.StringVar(&reason, "reason", "", "why (shown to approvers and kept in the audit log)")
	f.StringVar(&session, "session", "", "confine the grant to one of your sessions (its id)")
	return cmd
}

func newGrantsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "grants", Short: "Just-in-time grants: list them (sluice request asks, sluice revoke ends)"}
	var state, target string
	list := &cobra.Command{
		Use:   "list [--state active|pending|approved|denied|revoked|all] [--target T]",
		Short: "List grants: by default those in force now",
		Long: `List the just-in-time grants you may see: your own, those you may decide, and all of
them for auditors. By default only grants in force now; --state all shows every grant,
ended and revoked ones included. A grant's id is the id of its request.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := g.checkOutput(); err != nil {
				return err
			}
			c, err := g.newClient(cmd.Context())
			if err != nil {
				return err
			}
			q := url.Values{"state": {state}}
			if target != "" {
				q.Set("target", target)
			}
			var res struct {
				Grants []api.ApprovalJSON `json:"grants"`
			}
			if err := c.do(cmd.Context(), http.MethodGet, "/api/v1/grants?"+q.Encode(), nil, &res); err != nil {
				return err
			}
			if g.json() {
				return g.printJSON(res)
			}
			if len(res.Grants) == 0 {
				fmt.Fprintf(g.stdout, "no grants (%s)\n", state)
				return nil
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tSTATE\tWHO\tTARGET\tROLE\tSCOPE\tGRANTED BY\tWHEN")
			now := time.Now()
			for _, a := range res.Grants {
				scope := "every session"
				if a.Session != "" {
					scope = "session " + a.Session
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", a.ID, a.State, a.Requester, a.Target, a.Role, scope, a.DecidedBy, approvalWhen(a, now))
			}
			return tw.Flush()
		},
	}
	list.Flags().StringVar(&state, "state", "active", "which grants: active (in force now), pending, approved, denied, revoked or all")
	list.Flags().StringVar(&target, "target", "", "only grants on this target")
	cmd.AddCommand(list)
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
