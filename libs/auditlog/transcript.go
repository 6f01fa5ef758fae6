package auditlog

import (
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"

	"sluice.dev/sluice/libs/visible"
	policyv1 "sluice.dev/sluice/proto/sluice/policy/v1"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
)

// Transcript writes a session's events as a readable account: who, where,
// each command with its decision, rule, approval and result. What a client
// chose (a command's text, its application name, an error's message) is
// written out where it would not show as itself (visible.Text): a command
// cannot move the cursor of the auditor's terminal and erase the line
// above, or reorder what it shows.
func Transcript(w io.Writer, entries []Entry) {
	var out strings.Builder
	transcript(&out, entries)
	_, _ = io.WriteString(w, visible.Text(out.String()))
}

func transcript(w io.Writer, entries []Entry) {
	// Results may be recorded with a later command: gather them first.
	results := map[uint64][]*sessionv1.Result{}
	for _, e := range entries {
		switch b := e.Event.GetBody().(type) {
		case *sessionv1.Event_Result:
			results[b.Result.GetCommandId()] = append(results[b.Result.GetCommandId()], b.Result)
		case *sessionv1.Event_Command:
			for _, r := range b.Command.GetResults() {
				results[r.GetCommandId()] = append(results[r.GetCommandId()], r)
			}
		}
	}
	var start time.Time
	// Terminal output is shown under its command, a block of lines per
	// run of chunks (sluice replay --format asciicast replays it exactly).
	var block ioBlock
	for _, e := range entries {
		if e.Record == nil {
			continue
		}
		if e.Event.GetIo() == nil {
			block.flush(w)
		}
		if e.Record.GetGapTo() > 0 {
			fmt.Fprintf(w, "  !! events %d..%d were lost before recording\n", e.Record.GetSeq(), e.Record.GetGapTo())
			continue
		}
		if lost := e.Record.GetLost(); lost != "" {
			fmt.Fprintf(w, "%s  !! the session was lost: %s; nothing of it is recorded after event %d\n",
				e.Record.GetRecordedAt().AsTime().UTC().Format("15:04:05.000"), lost, e.Seq-1)
			continue
		}
		ev := e.Event
		if ev == nil {
			fmt.Fprintf(w, "  !! event %d cannot be decoded\n", e.Seq)
			continue
		}
		at := ev.GetTime().AsTime()
		if start.IsZero() {
			start = at
		}
		stamp := at.UTC().Format("15:04:05.000")
		switch b := ev.GetBody().(type) {
		case *sessionv1.Event_Started:
			s := b.Started
			p := s.GetPrincipal()
			kind := "human"
			if p.GetMachine() {
				kind = "machine"
			}
			if s.GetTarget().GetName() != "" {
				fmt.Fprintf(w, "Session %s — %s on target %s\n", ev.GetSessionId(), s.GetProtocol(), s.GetTarget().GetName())
			} else {
				fmt.Fprintf(w, "Session %s — %s (each command names its target)\n", ev.GetSessionId(), s.GetProtocol())
			}
			fmt.Fprintf(w, "  who     %s (%s)", p.GetSubject(), kind)
			if p.GetEmail() != "" {
				fmt.Fprintf(w, " <%s>", p.GetEmail())
			}
			fmt.Fprintf(w, ", groups %s\n", joinOr(p.GetGroups(), "none"))
			fmt.Fprintf(w, "  from    %s", s.GetClientAddr())
			if s.GetClientApplication() != "" {
				fmt.Fprintf(w, " (%s)", s.GetClientApplication())
			}
			if s.GetTlsVersion() != "" {
				fmt.Fprintf(w, " over %s", s.GetTlsVersion())
			}
			fmt.Fprintln(w)
			fmt.Fprintf(w, "  when    %s (worker %s)\n\n", at.UTC().Format("2006-01-02 15:04:05 MST"), s.GetWorker())
		case *sessionv1.Event_Command:
			c := b.Command
			via := ""
			if c.GetVia() != "" && c.GetVia() != "simple" {
				via = " [" + c.GetVia() + "]"
			}
			if t := c.GetTarget().GetName(); t != "" {
				via += " on " + t
			}
			fmt.Fprintf(w, "%s  #%d%s  %s\n", stamp, c.GetCommandId(), via, oneLine(c.GetText()))
			if c.GetDecision() != nil {
				decisionLine(w, c.GetDecision(), c.GetCached())
			}
			for _, r := range results[c.GetCommandId()] {
				resultLine(w, r)
			}
			delete(results, c.GetCommandId())
		case *sessionv1.Event_Decided:
			decisionLine(w, b.Decided.GetDecision(), b.Decided.GetCached())
		case *sessionv1.Event_Approval:
			a := b.Approval
			fmt.Fprintf(w, "              approval %s %s", a.GetApprovalId(), a.GetState())
			if len(a.GetApprovers()) > 0 {
				fmt.Fprintf(w, " by %s", strings.Join(a.GetApprovers(), ", "))
			}
			if a.GetReason() != "" {
				fmt.Fprintf(w, " (%q)", a.GetReason())
			}
			fmt.Fprintln(w)
		case *sessionv1.Event_Result:
			// Shown under its command.
		case *sessionv1.Event_Masking:
			var parts []string
			for _, c := range b.Masking.GetCounts() {
				what := c.GetColumn()
				if what == "" {
					what = c.GetField()
				}
				if what == "" {
					what = c.GetDetector()
				} else if c.GetDetector() != "" {
					what += "/" + c.GetDetector()
				}
				parts = append(parts, fmt.Sprintf("%s×%d", what, c.GetCount()))
			}
			fmt.Fprintf(w, "              masked %s\n", strings.Join(parts, ", "))
		case *sessionv1.Event_Io:
			block.add(b.Io)
		case *sessionv1.Event_Ended:
			en := b.Ended
			fmt.Fprintf(w, "\n%s  ended (%s) after %s: %d command(s), %d denied\n", stamp, en.GetReason(), at.Sub(start).Round(time.Millisecond), en.GetCommands(), en.GetDenied())
		case *sessionv1.Event_AuthFailed:
			a := b.AuthFailed
			fmt.Fprintf(w, "%s  authentication failed from %s (%s): %s: %s\n", stamp, a.GetClientAddr(), a.GetProtocol(), a.GetCode(), a.GetReason())
		}
	}
	block.flush(w)
}

func micros(us int64) string {
	return (time.Duration(us) * time.Microsecond).Round(10 * time.Microsecond).String()
}

// oneLine is a command on one line (visible.OneLine), cut at 500 bytes.
func oneLine(s string) string {
	s = visible.OneLine(s)
	if len(s) > 500 {
		cut := 500
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}

func joinOr(s []string, def string) string {
	if len(s) == 0 {
		return def
	}
	return strings.Join(s, ", ")
}

func decisionLine(w io.Writer, d *policyv1.Decision, cached bool) {
	c := ""
	if cached {
		c = ", cached"
	}
	fmt.Fprintf(w, "              %s by rule %s (policy revision %d%s)", strings.ToUpper(d.GetAction()), d.GetRule(), d.GetRevision(), c)
	if d.GetAction() != "allow" && d.GetReason() != "" {
		fmt.Fprintf(w, ": %s", d.GetReason())
	}
	fmt.Fprintln(w)
	if in := d.GetSsh(); len(in.GetPrograms()) > 0 || len(in.GetFlags()) > 0 {
		fmt.Fprintf(w, "              runs %s", joinOr(in.GetPrograms(), "nothing it can name"))
		if len(in.GetFlags()) > 0 {
			fmt.Fprintf(w, " (%s)", strings.Join(in.GetFlags(), ", "))
		}
		fmt.Fprintln(w)
	}
	if len(d.GetGrants()) > 0 {
		fmt.Fprintf(w, "              under grant %s\n", strings.Join(d.GetGrants(), ", "))
	}
}

func resultLine(w io.Writer, r *sessionv1.Result) {
	if r.GetErrorCode() != "" {
		fmt.Fprintf(w, "              → error %s: %s (%s)\n", r.GetErrorCode(), r.GetErrorMessage(), micros(r.GetDurationUs()))
		return
	}
	fmt.Fprintf(w, "              → %s, %d row(s), %s\n", r.GetCommandTag(), r.GetRows(), micros(r.GetDurationUs()))
}
