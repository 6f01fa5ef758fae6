package cli

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"sluice.dev/sluice/libs/auditchain"
	"sluice.dev/sluice/services/api"
)

func newSessionsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "sessions", Short: "Recorded sessions"}
	var principal, target, protocol, since, until, before, state string
	var limit int
	var denied, held, masked bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List recorded sessions, newest first, a page at a time",
		Example: `  sluice sessions list --principal alice --since 24h
  sluice sessions list --protocol ssh --denied --limit 20
  sluice sessions list --held --since 168h                  # sessions with a command held for approval
  sluice sessions list --before 01m8tsrrwkvn75441xy71bwjrc   # the next page`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := g.checkOutput(); err != nil {
				return err
			}
			c, err := g.newClient(cmd.Context())
			if err != nil {
				return err
			}
			q := url.Values{"limit": {fmt.Sprint(limit)}}
			for k, v := range map[string]string{"principal": principal, "target": target, "protocol": protocol, "since": since, "until": until, "before": before, "state": state} {
				if v != "" {
					q.Set(k, v)
				}
			}
			for name, on := range map[string]bool{"denied": denied, "held": held, "masked": masked} {
				if on {
					q.Set(name, "true")
				}
			}
			var res struct {
				Sessions []api.SessionJSON `json:"sessions"`
				Next     string            `json:"next,omitempty"`
			}
			if err := c.do(cmd.Context(), http.MethodGet, "/api/v1/sessions?"+q.Encode(), nil, &res); err != nil {
				return err
			}
			if g.json() {
				return g.printJSON(res)
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SESSION\tSTARTED\tPRINCIPAL\tTARGET\tPROTOCOL\tCOMMANDS\tDENIED\tHELD\tMASKED\tSTATE")
			for _, s := range res.Sessions {
				state := "active"
				switch {
				case s.State == "lost":
					state = "lost: " + s.Lost
				case s.EndedAt != nil:
					state = "ended: " + s.EndReason
				}
				who := s.Principal
				if s.Machine {
					who += " (machine)"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\n", s.ID, s.StartedAt.Local().Format("2006-01-02 15:04:05"), who, s.Target, s.Protocol,
					s.Commands, s.Denied, s.Held, s.Masked, state)
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
	f := list.Flags()
	f.StringVar(&principal, "principal", "", "only sessions of this subject")
	f.StringVar(&target, "target", "", "only sessions on this target")
	f.StringVar(&since, "since", "", "only sessions started since (RFC 3339 time or a duration like 24h)")
	f.StringVar(&until, "until", "", "only sessions started until (RFC 3339 time or duration)")
	f.StringVar(&protocol, "protocol", "", "only sessions of this protocol (postgres, ssh, kubernetes, mcp)")
	f.BoolVar(&denied, "denied", false, "only ended sessions with a denied command (an open session's count comes with its end)")
	f.BoolVar(&held, "held", false, "only sessions with a command held for approval")
	f.BoolVar(&masked, "masked", false, "only sessions whose results had values masked")
	f.StringVar(&state, "state", "", "only sessions in this state: open, ended, or lost (not ended, and its worker is gone)")
	f.StringVar(&before, "before", "", "the page after this session id (what the previous page said)")
	f.IntVar(&limit, "limit", 100, "at most this many sessions (1 to 1000)")
	cmd.AddCommand(list)
	var reason string
	kill := &cobra.Command{
		Use:   "kill SESSION_ID [--reason TEXT]",
		Short: "End a live session now, of any protocol (administrators)",
		Long: `End a live session at once: its client is told who ended it and why, a command it is
running ends, and its Ended event records who ended it. Needs a token in an admin group of the
access section; the worker that holds the session checks that itself.`,
		Example: `  sluice sessions kill 01m8... --reason "runaway agent"`,
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
			var res map[string]any
			if err := c.do(cmd.Context(), http.MethodPost, "/api/v1/sessions/"+url.PathEscape(args[0])+"/kill", body, &res); err != nil {
				return err
			}
			if g.json() {
				return g.printJSON(res)
			}
			fmt.Fprintf(g.stdout, "ended session %s\n", args[0])
			return nil
		},
	}
	kill.Flags().StringVar(&reason, "reason", "", "why (the client and the audit log see it)")
	cmd.AddCommand(kill)
	return cmd
}

func newReplayCmd(g *globals) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "replay SESSION_ID [--format text|asciicast]",
		Short: "Show a recorded session: who, where, each command with its decision and result",
		Long: `Show a recorded session: who, where, each command with its decision, approval and result,
and what the client's terminal showed. With --format asciicast, write the session's terminal
streams as asciicast v2 (play it with asciinema play FILE, or any asciinema player).`,
		Example: `  sluice replay 01m8...
  sluice replay 01m8... --format asciicast > session.cast && asciinema play session.cast`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := g.checkOutput(); err != nil {
				return err
			}
			c, err := g.newClient(cmd.Context())
			if err != nil {
				return err
			}
			path := "/api/v1/sessions/" + url.PathEscape(args[0])
			switch format {
			case "text":
			case "asciicast":
				body, err := c.raw(cmd.Context(), path+"?format=asciicast")
				if err != nil {
					return err
				}
				defer body.Close()
				_, err = io.Copy(g.stdout, body)
				return err
			default:
				return fmt.Errorf("--format is text or asciicast, not %q", format)
			}
			if g.json() {
				var res map[string]any
				if err := c.do(cmd.Context(), http.MethodGet, path, nil, &res); err != nil {
					return err
				}
				return g.printJSON(res)
			}
			body, err := c.raw(cmd.Context(), path+"?format=text")
			if err != nil {
				return err
			}
			defer body.Close()
			_, err = io.Copy(g.stdout, body)
			return err
		},
	}
	cmd.Flags().StringVar(&format, "format", "text", "text (a readable account) or asciicast (the terminal streams, asciicast v2)")
	return cmd
}

// defaultAnchors are the anchor files verify uses when none is named:
// $SLUICE_AUDIT_ANCHOR, else the development directory's (for a local API
// only: it belongs to the sluice dev running here).
func defaultAnchors(g *globals) []string {
	if f := os.Getenv("SLUICE_AUDIT_ANCHOR"); f != "" {
		return []string{f}
	}
	f := filepath.Join(".sluice", "audit-anchor.jsonl")
	if _, err := os.Stat(f); err != nil {
		return nil
	}
	if u, err := url.Parse(g.api); err == nil {
		if ip := net.ParseIP(u.Hostname()); (ip != nil && ip.IsLoopback()) || u.Hostname() == "localhost" {
			return []string{f}
		}
	}
	return nil
}

func newAuditCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "audit", Short: "Verify and export the audit log"}
	var session string
	var anchorFiles []string
	verify := &cobra.Command{
		Use:   "verify [--session ID] [--anchor FILE]",
		Short: "Check the audit log's hash chains and signed checkpoints",
		Long: `Read the audit stream and check every session's hash chain, every signed checkpoint, and
the sessions index (each session it lists must have its records). Reports each edited, missing,
duplicated, reordered or truncated record by session and seq, and history that was deleted, and
exits with status 2 when it finds any.

--anchor checks the stream against a checkpoint known from outside it: the recorder's anchor file
(--audit-anchor-file; in development .sluice/audit-anchor.jsonl), checkpoints a SIEM received from
the exporter, or saved 'sluice audit anchor' output (the last anchor in the file counts). Only an
anchor shows that the whole stream was deleted and recreated by someone with the NATS admin
identity. With anchors, only the keys they pin count (repeat --anchor for each recorder replica).
Default: $SLUICE_AUDIT_ANCHOR, else .sluice/audit-anchor.jsonl if it exists and the API is local.`,
		Example: "  sluice audit verify --anchor /var/lib/sluice/audit-anchor.jsonl",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := g.checkOutput(); err != nil {
				return err
			}
			req := api.VerifyRequest{Session: session}
			files := anchorFiles
			if len(files) == 0 {
				files = defaultAnchors(g)
			}
			for _, name := range files {
				f, err := os.Open(name)
				if err != nil {
					return err
				}
				a, err := auditchain.ReadAnchor(f)
				f.Close()
				if err != nil {
					return fmt.Errorf("anchor %s: %w", name, err)
				}
				req.Anchors = append(req.Anchors, a)
			}
			c, err := g.newClient(cmd.Context())
			if err != nil {
				return err
			}
			body, _ := json.Marshal(req)
			var res api.VerifyJSON
			if err := c.read(cmd.Context(), http.MethodPost, "/api/v1/audit/verify", body, &res); err != nil {
				return err
			}
			if g.json() {
				if err := g.printJSON(res); err != nil {
					return err
				}
			} else {
				for _, p := range res.Problems {
					fmt.Fprintln(g.stdout, p.String())
				}
				status := "intact"
				if !res.OK {
					status = fmt.Sprintf("%d problem(s)", len(res.Problems))
				}
				against := "no anchor (a stream deleted and recreated whole shows only with --anchor)"
				for i, a := range req.Anchors {
					if i == 0 {
						against = ""
					} else {
						against += ", "
					}
					against += fmt.Sprintf("the anchor of checkpoint %s (%s) from %s", a.Checkpoint, a.Time.Format(time.RFC3339), files[i])
				}
				fmt.Fprintf(g.stdout, "%d event(s) in %d record(s) of %d session(s) checked against %d recorder key(s) and %s: %s\n",
					res.Events, res.Records, res.Sessions, len(res.Keys), against, status)
			}
			if !res.OK {
				return &exitError{code: 2, err: errors.New("the audit log failed verification")}
			}
			return nil
		},
	}
	verify.Flags().StringVar(&session, "session", "", "verify one session only")
	verify.Flags().StringArrayVar(&anchorFiles, "anchor", nil, "a file whose last line is a checkpoint anchor (see above); repeat it for each recorder")

	anchor := &cobra.Command{
		Use:   "anchor",
		Short: "Print the newest checkpoint's anchor, to keep outside the audit stream",
		Long: `Print the anchor (one JSON line) of the newest signed checkpoint. Keep it where the NATS admin
identity cannot reach (a ticket, write-once storage); 'sluice audit verify --anchor FILE' then shows
whether the stream still holds everything up to it.`,
		Example: "  sluice audit anchor >> /secure/audit-anchors.jsonl",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.newClient(cmd.Context())
			if err != nil {
				return err
			}
			var a auditchain.Anchor
			if err := c.do(cmd.Context(), http.MethodGet, "/api/v1/audit/anchor", nil, &a); err != nil {
				return err
			}
			b, _ := json.Marshal(a)
			fmt.Fprintln(g.stdout, string(b))
			return nil
		},
	}

	var format, since string
	var follow bool
	var startSeq uint64
	tail := &cobra.Command{
		Use:   "tail [--format ocsf|json] [--follow]",
		Short: "Stream the audit log as newline-delimited JSON or OCSF",
		Example: `  sluice audit tail --format ocsf --follow
  sluice audit tail --since 1h`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != "json" && format != "ocsf" {
				return fmt.Errorf("--format must be json or ocsf")
			}
			c, err := g.newClient(cmd.Context())
			if err != nil {
				return err
			}
			q := url.Values{"format": {format}}
			if follow {
				q.Set("follow", "true")
			}
			if since != "" {
				q.Set("since", since)
			}
			if startSeq > 0 {
				q.Set("start_seq", fmt.Sprint(startSeq))
			}
			c.http.Timeout = 0
			body, err := c.raw(cmd.Context(), "/api/v1/audit/tail?"+q.Encode())
			if err != nil {
				return err
			}
			defer body.Close()
			sc := bufio.NewScanner(body)
			sc.Buffer(make([]byte, 1<<20), 16<<20)
			for sc.Scan() {
				fmt.Fprintln(g.stdout, sc.Text())
			}
			if cmd.Context().Err() != nil {
				return nil
			}
			return sc.Err()
		},
	}
	tf := tail.Flags()
	tf.StringVar(&format, "format", "json", "json or ocsf")
	tf.BoolVarP(&follow, "follow", "f", false, "keep streaming new records")
	tf.StringVar(&since, "since", "", "start at a time (RFC 3339) or a duration ago (1h)")
	tf.Uint64Var(&startSeq, "start-seq", 0, "start at a stream sequence")

	var out string
	keygen := &cobra.Command{
		Use:   "keygen --out FILE",
		Short: "Create an Ed25519 key for the recorder to sign checkpoints",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return errors.New("--out is required")
			}
			if _, err := os.Stat(out); err == nil {
				return fmt.Errorf("%s exists; refusing to overwrite a signing key", out)
			}
			pub, priv, err := ed25519.GenerateKey(rand.Reader)
			if err != nil {
				return err
			}
			if err := os.WriteFile(out, []byte(base64.StdEncoding.EncodeToString(priv.Seed())+"\n"), 0o600); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "key id %s\npublic key %s\n", auditchain.KeyID(pub), base64.StdEncoding.EncodeToString(pub))
			return nil
		},
	}
	keygen.Flags().StringVar(&out, "out", "", "file to write the key to (mode 0600)")
	cmd.AddCommand(verify, anchor, tail, keygen)
	return cmd
}

// raw performs a GET and returns the body of a successful answer.
func (c *client) raw(ctx context.Context, path string) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach the Sluice API at %s: %w", c.base, err)
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		e := &apiError{Status: resp.StatusCode}
		_ = jsonUnmarshal(b, e)
		if e.Reason == "" {
			e.Reason = strings.TrimSpace(string(b))
		}
		return nil, e
	}
	return resp.Body, nil
}
