package sshworker

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
	"google.golang.org/protobuf/proto"

	"sluice.dev/sluice/libs/gateway"
	"sluice.dev/sluice/libs/masking"
	"sluice.dev/sluice/libs/recording"
	"sluice.dev/sluice/libs/shellclass"
	policyv1 "sluice.dev/sluice/proto/sluice/policy/v1"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
)

// Built-in rules the worker applies itself.
const (
	ruleMaskedBinary = "builtin:masked-binary-channel"
	ruleUnsupported  = "builtin:unsupported-request"
	ruleEnvName      = "builtin:env-name"
)

// chunk bounds one recorded piece of output or input; flowWindow how much
// may be recorded before the worker waits for it to be durable (memory
// stays bounded whatever the command prints).
const (
	chunk      = 64 << 10
	flowWindow = 4 << 20
)

// channel is one "session" channel: at most one exec, shell or subsystem.
type channel struct {
	s    *session
	ch   ssh.Channel
	pty  []byte // the pty-req payload, forwarded before the command
	env  [][]byte
	term bool

	mu      sync.Mutex
	up      ssh.Channel
	started bool

	left     chan struct{}
	leftOnce sync.Once
}

func (c *channel) upstream() ssh.Channel {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.up
}

// requestState is what the command runs with besides its text (a
// terminal, environment variables): an approval binds to it too.
func (c *channel) requestState() string {
	var b strings.Builder
	if c.term {
		b.WriteString("pty\x00")
	}
	for _, e := range c.env {
		b.Write(e)
		b.WriteByte(0)
	}
	return b.String()
}

// nl ends a line the client's terminal shows.
func (c *channel) nl() string {
	if c.term {
		return "\r\n"
	}
	return "\n"
}

func (s *session) sessionChannel(ctx context.Context, nc ssh.NewChannel) {
	ch, reqs, err := nc.Accept()
	if err != nil {
		return
	}
	c := &channel{s: s, ch: ch, left: make(chan struct{})}
	s.addChannel(c)
	defer s.dropChannel(c)
	defer ch.Close()
	var run sync.WaitGroup
	var lastResize time.Time
	for req := range reqs {
		s.touch()
		switch req.Type {
		case "pty-req":
			// Only before the command: what runs, and what was decided
			// and approved, does not change afterwards.
			if c.started {
				_ = req.Reply(false, nil)
				continue
			}
			c.pty, c.term = slices.Clone(req.Payload), true
			var p struct {
				Term             string
				Cols, Rows, W, H uint32
				Modes            string
			}
			if ssh.Unmarshal(req.Payload, &p) == nil {
				_, _ = s.emit(&sessionv1.Event{Body: &sessionv1.Event_Io{Io: &sessionv1.TerminalIO{Stream: "r",
					Data: []byte(fmt.Sprintf("%dx%d", p.Cols, p.Rows)), OffsetMs: s.sinceStart().Milliseconds()}}})
			}
			_ = req.Reply(true, nil)
		case "env":
			if c.started {
				_ = req.Reply(false, nil)
				continue
			}
			var e struct{ Name, Value string }
			ok := ssh.Unmarshal(req.Payload, &e) == nil
			if ok && !envName(e.Name) {
				// Not a name a shell could assign (BASH_FUNC_x%%: bash
				// imports it as a function): what runs would not be what
				// the command says.
				c.refused("env", e.Name+"="+e.Value, ruleEnvName, "an environment variable's name must be a shell identifier")
				ok = false
			}
			ok = ok && c.allowed(ctx, "env", e.Name+"="+e.Value)
			if ok {
				c.env = append(c.env, slices.Clone(req.Payload))
			}
			_ = req.Reply(ok, nil)
		case "window-change":
			if up := c.upstream(); up != nil {
				_, _ = up.SendRequest(req.Type, false, req.Payload)
			}
			var wc struct{ Cols, Rows, W, H uint32 }
			// A resize is recorded at most every 100 ms: a client cannot
			// flood the audit stream with them.
			if ssh.Unmarshal(req.Payload, &wc) == nil && time.Since(lastResize) >= 100*time.Millisecond {
				lastResize = time.Now()
				_, _ = s.emit(&sessionv1.Event{Body: &sessionv1.Event_Io{Io: &sessionv1.TerminalIO{Stream: "r",
					Data: []byte(fmt.Sprintf("%dx%d", wc.Cols, wc.Rows)), OffsetMs: s.sinceStart().Milliseconds()}}})
			}
			_ = req.Reply(true, nil)
		case "signal":
			if up := c.upstream(); up != nil {
				_, _ = up.SendRequest(req.Type, false, req.Payload)
			}
			_ = req.Reply(true, nil)
		case "exec", "shell", "subsystem":
			if c.started {
				_ = req.Reply(false, nil)
				continue
			}
			c.started = true
			kind, cmd := req.Type, ""
			switch kind {
			case "exec":
				var e struct{ Command string }
				if ssh.Unmarshal(req.Payload, &e) != nil {
					_ = req.Reply(false, nil)
					continue
				}
				cmd = e.Command
			case "subsystem":
				var e struct{ Name string }
				if ssh.Unmarshal(req.Payload, &e) != nil {
					_ = req.Reply(false, nil)
					continue
				}
				cmd = e.Name
			}
			// The request is accepted at once: the outcome (output, a
			// denial on stderr, an exit status) comes on the channel.
			_ = req.Reply(true, nil)
			payload := slices.Clone(req.Payload)
			run.Add(1)
			go func() {
				defer run.Done()
				c.run(ctx, kind, cmd, payload)
				_ = ch.CloseWrite()
				ch.Close()
			}()
		case "auth-agent-req@openssh.com", "x11-req":
			// Forwarding back to the client's agent or display is not
			// offered: the request is recorded with its decision, refused.
			kind := map[string]string{"auth-agent-req@openssh.com": "agent_forward", "x11-req": "x11"}[req.Type]
			c.allowed(ctx, kind, "")
			_ = req.Reply(false, nil)
		default:
			_ = req.Reply(false, nil)
		}
	}
	// The client closed the channel: a held command stops waiting, and a
	// running one ends on the target.
	c.leftOnce.Do(func() { close(c.left) })
	if up := c.upstream(); up != nil {
		up.Close()
	}
	run.Wait()
}

// allowed rules on a request that carries no data of its own (env, agent
// forwarding): it is recorded as a command with its decision. Agent and
// X11 forwarding are never offered, whatever the policy says.
func (c *channel) allowed(ctx context.Context, kind, cmd string) bool {
	s := c.s
	d, cached := s.decide(ctx, kind, cmd)
	if kind == "agent_forward" || kind == "x11" {
		if d.GetAction() == "allow" {
			d = deny(d, ruleUnsupported, "Sluice does not forward agents or X11 displays")
		}
	}
	id := s.nextCommand()
	s.commands.Add(1)
	text := kind
	if cmd != "" {
		text += " " + cmd
	}
	_, _ = s.emit(&sessionv1.Event{Body: &sessionv1.Event_Command{Command: &sessionv1.Command{CommandId: id, Text: text, Via: kind,
		Decision: gateway.Recorded(d), Cached: cached}}})
	if d.GetAction() != "allow" {
		s.denied.Add(1)
		return false
	}
	return true
}

// refused records a request refused by a built-in rule, before any policy.
func (c *channel) refused(kind, cmd, rule, reason string) {
	s := c.s
	id := s.nextCommand()
	s.commands.Add(1)
	s.denied.Add(1)
	d := &policyv1.Decision{Action: "deny", Rule: rule, Reason: reason}
	_, _ = s.emit(&sessionv1.Event{Body: &sessionv1.Event_Command{Command: &sessionv1.Command{CommandId: id, Text: kind + " " + cmd, Via: kind,
		Decision: gateway.Recorded(d)}}})
}

// envName reports whether name is a shell identifier.
func envName(name string) bool {
	for i, r := range name {
		if !(r == '_' || r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || i > 0 && r >= '0' && r <= '9') {
			return false
		}
	}
	return name != ""
}

// withEnv is an exec command as the policy rules on it: after the
// variables of the environment the channel set that change what runs
// (PATH, LD_PRELOAD, BASH_ENV: shellclass.RuntimeVar), as assignments the
// classification sees. Other variables (the locale) leave it as sent.
func withEnv(env [][]byte, cmd string) string {
	return assignments(env, shellclass.RuntimeVar) + cmd
}

// shownWithEnv is a command as its approver reads it: after every variable
// the client set on the channel (the command may read any of them).
func shownWithEnv(env [][]byte, text string) string {
	if a := assignments(env, func(string) bool { return true }); a != "" {
		return "env " + a + text
	}
	return text
}

// assignments are the channel's variables that keep selects, each as
// NAME='value' quoted as the shell would, followed by a space.
func assignments(env [][]byte, keep func(name string) bool) string {
	var b strings.Builder
	for _, raw := range env {
		var e struct{ Name, Value string }
		if ssh.Unmarshal(raw, &e) != nil || !keep(e.Name) {
			continue
		}
		b.WriteString(e.Name)
		b.WriteString("='")
		b.WriteString(strings.ReplaceAll(e.Value, "'", `'\''`))
		b.WriteString("' ")
	}
	return b.String()
}

// decide asks the policy about one SSH request.
func (s *session) decide(ctx context.Context, kind, cmd string) (*policyv1.Decision, bool) {
	req := &policyv1.EvaluateRequest{Principal: s.principal, Target: s.targetRef, SessionId: s.id,
		Command: &policyv1.EvaluateRequest_Ssh{Ssh: &policyv1.SSHCommand{RequestType: kind, Command: cmd}}}
	return s.w.k.Decide(ctx, req, s.pkey, kind+"\x00"+cmd, nil)
}

// deny turns a decision into a denial by a built-in rule.
func deny(d *policyv1.Decision, rule, reason string) *policyv1.Decision {
	c := proto.Clone(d).(*policyv1.Decision)
	c.Action, c.Rule, c.Reason = "deny", rule, reason
	return c
}

// refuse tells the client why its command does not run and exits 77.
func (c *channel) refuse(format string, args ...any) {
	_, _ = fmt.Fprintf(c.ch.Stderr(), "sluice: "+format+c.nl(), args...)
	c.exit(ExitDenied)
}

func (c *channel) fail(format string, args ...any) {
	_, _ = fmt.Fprintf(c.ch.Stderr(), "sluice: "+format+c.nl(), args...)
	c.exit(ExitGateway)
}

func (c *channel) exit(status uint32) {
	_, _ = c.ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{status}))
}

// run decides, records and runs one exec, shell or subsystem request.
func (c *channel) run(ctx context.Context, kind, cmd string, payload []byte) {
	s := c.s
	start := time.Now()
	text := cmd
	switch kind {
	case "shell":
		text = "shell"
	case "subsystem":
		text = "subsystem " + cmd
	}
	ruled := cmd
	if kind == "exec" {
		ruled = withEnv(c.env, cmd)
	}
	d, cached := s.decide(ctx, kind, ruled)
	// Masking cannot look inside a binary channel: when it applies, the
	// channel is refused rather than let values through unmasked.
	if kind == "subsystem" && len(d.GetMasks()) > 0 && d.GetAction() != "deny" {
		d = deny(d, ruleMaskedBinary, "masking applies to you on this target, and a subsystem (sftp, scp) carries data Sluice cannot mask")
	}
	if kind == "subsystem" && withEnv(c.env, "") != "" && d.GetAction() != "deny" {
		// The target's shell starts the subsystem: BASH_ENV, LD_PRELOAD
		// and their kind would run code no policy saw.
		d = deny(d, ruleEnvName, "a subsystem does not start with environment variables that change what runs (PATH, LD_*, BASH_ENV, ...)")
	}
	id := s.nextCommand()
	s.commands.Add(1)
	seq, err := s.emit(&sessionv1.Event{Body: &sessionv1.Event_Command{Command: &sessionv1.Command{CommandId: id, Text: text, Via: kind,
		Decision: gateway.Recorded(d), Cached: cached}}})
	if err != nil {
		return
	}
	switch d.GetAction() {
	case "allow":
		if s.durable(ctx, seq) != nil {
			return
		}
	case "review":
		if s.durable(ctx, seq) != nil {
			return
		}
		out := s.w.k.Hold(ctx, gateway.HoldRequest{
			SessionID: s.id, Token: s.token, Target: s.targetRef.GetName(), Command: text, Shown: shownWithEnv(c.env, text),
			Hash: gateway.CommandHash(kind+"\x00"+cmd, c.requestState()), CmdID: id, Decision: d, Rec: s.rec,
			Notify: func(approval string) error {
				_, err := fmt.Fprintf(c.ch.Stderr(), "sluice: command held for approval %s (rule %q): %s%s"+
					"sluice: an approver (%s) runs: sluice approve %s%s"+
					"sluice: waiting up to %s; once approved, exactly this command runs, once.%s",
					approval, d.GetRule(), d.GetReason(), c.nl(), strings.Join(d.GetApprovers(), ", "), approval, c.nl(),
					s.w.k.Config().HoldTimeout, c.nl())
				return err
			},
			Left: c.left,
			Why: func() string {
				if r := s.reason(); r != "" {
					return "the session ended while the command was held: " + r
				}
				return "the client disconnected while the command was held"
			},
		})
		switch {
		case out.RecordErr != nil:
			s.shutdown("the audit stream is not accepting records")
			return
		case out.Left != "":
			return
		case !out.Approved:
			s.denied.Add(1)
			c.refuse("command not run: %s", out.Refusal)
			return
		}
	default:
		s.denied.Add(1)
		c.refuse("command denied by rule %q: %s", d.GetRule(), d.GetReason())
		return
	}
	status := c.execute(ctx, id, kind, payload, d)
	_, _ = s.emit(&sessionv1.Event{Body: &sessionv1.Event_Result{Result: &sessionv1.Result{CommandId: id,
		CommandTag: status, DurationUs: time.Since(start).Microseconds()}}})
}

// execute runs an allowed request on the target and relays it: output
// masked and recorded, input relayed (and recorded for shells). It returns
// how the command ended ("exit 0", "signal KILL").
func (c *channel) execute(ctx context.Context, id uint64, kind string, payload []byte, d *policyv1.Decision) string {
	s := c.s
	up, upReqs, err := s.up.OpenChannel("session", nil)
	if err != nil {
		c.fail("the target refused a session: %v", err)
		return "target refused"
	}
	defer up.Close()
	if c.pty != nil {
		if ok, err := up.SendRequest("pty-req", true, c.pty); err != nil || !ok {
			c.fail("the target refused a terminal")
			return "target refused"
		}
	}
	for _, e := range c.env {
		_, _ = up.SendRequest("env", false, e)
	}
	if ok, err := up.SendRequest(kind, true, payload); err != nil || !ok {
		c.fail("the target refused the %s request", kind)
		return "target refused"
	}
	c.mu.Lock()
	c.up = up
	c.mu.Unlock()
	// A client that leaves ends the command on the target (whether it
	// left before or after this point).
	finished := make(chan struct{})
	defer close(finished)
	go func() {
		select {
		case <-c.left:
			up.Close()
		case <-finished:
		}
	}()

	var m *masking.Masker
	if len(d.GetMasks()) > 0 && kind != "subsystem" {
		if m, err = s.w.k.Masker(gateway.MaskRulesKey(d), d); err != nil {
			c.fail("masking: %v", err)
			return "masking failed"
		}
	}
	rec := &recorder{s: s, coalesce: !c.term}
	// Exit status and signal are relayed only once every byte of output
	// has gone out and is durable.
	var exitReqs []*ssh.Request
	reqsDone := make(chan struct{})
	go func() {
		defer close(reqsDone)
		for r := range upReqs {
			switch r.Type {
			case "exit-status", "exit-signal":
				exitReqs = append(exitReqs, r)
			default:
				_ = r.Reply(false, nil)
			}
		}
	}()
	go func() {
		// Client input, on every channel: a command that reads its
		// commands from standard input (ed, a database shell, sh -s) runs
		// what the record would otherwise never show.
		buf := make([]byte, 32<<10)
		for {
			n, err := c.ch.Read(buf)
			if n > 0 {
				s.touch()
				s.bytesIn.Add(int64(n))
				rec.io(ctx, "i", buf[:n])
				if _, werr := up.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				_ = up.CloseWrite()
				return
			}
		}
	}()
	// What masking found, per field (stdout, stderr).
	type fieldCounts struct {
		name   string
		counts masking.Counts
	}
	var fields []fieldCounts
	var pumps sync.WaitGroup
	var cmu sync.Mutex
	for _, p := range []struct {
		stream, field string
		src           io.Reader
		dst           io.Writer
	}{{"o", "stdout", up, c.ch}, {"e", "stderr", up.Stderr(), c.ch.Stderr()}} {
		pumps.Add(1)
		go func() {
			defer pumps.Done()
			got := c.pump(ctx, p.dst, p.src, p.stream, m, rec)
			if got.Total() > 0 {
				cmu.Lock()
				fields = append(fields, fieldCounts{p.field, got})
				cmu.Unlock()
			}
		}()
	}
	pumps.Wait()
	<-reqsDone
	if len(fields) > 0 {
		var mc []*sessionv1.MaskCount
		for _, f := range fields {
			f.counts.Each(func(name string, n int64) {
				mc = append(mc, &sessionv1.MaskCount{Field: f.name, Detector: name, Count: n})
			})
		}
		_, _ = s.emit(&sessionv1.Event{Body: &sessionv1.Event_Masking{Masking: &sessionv1.Masking{CommandId: id, Counts: mc}}})
	}
	if err := rec.flush(ctx); err != nil {
		return "not recorded"
	}
	status := "closed"
	for _, r := range exitReqs {
		_, _ = c.ch.SendRequest(r.Type, false, r.Payload)
		switch r.Type {
		case "exit-status":
			var e struct{ Status uint32 }
			if ssh.Unmarshal(r.Payload, &e) == nil {
				status = fmt.Sprintf("exit %d", e.Status)
			}
		case "exit-signal":
			var e struct {
				Signal string
				Core   bool
				Msg    string
				Lang   string
			}
			if ssh.Unmarshal(r.Payload, &e) == nil {
				status = "signal " + e.Signal
			}
		}
	}
	return status
}

// pump copies one output stream of the target to the client, masked, and
// records what the client saw. The masker holds an incomplete line; on a
// terminal (a shell, ssh -t) a pause releases it, so prompts show: after
// 50 ms up to its last blank ("$ "), after a second all of it. A command
// without a terminal gets its output line by line (or at its end).
func (c *channel) pump(ctx context.Context, dst io.Writer, src io.Reader, stream string, m *masking.Masker, rec *recorder) masking.Counts {
	s := c.s
	send := func(b []byte) bool {
		if len(b) == 0 {
			return true
		}
		s.bytesOut.Add(int64(len(b)))
		rec.io(ctx, stream, b)
		_, err := dst.Write(b)
		return err == nil
	}
	// Large reads: several packets at once when the target is fast, so
	// fewer, larger pieces to mask, record and send.
	buf := make([]byte, 128<<10)
	if m == nil || !c.term {
		var st *masking.Stream
		if m != nil {
			st = m.NewStream()
		}
		for {
			n, err := src.Read(buf)
			if n > 0 {
				s.touch()
				out := buf[:n]
				if st != nil {
					out = st.Write(out)
				}
				if !send(out) {
					return counts(st)
				}
			}
			if err != nil {
				if st != nil {
					send(st.Flush())
				}
				return counts(st)
			}
		}
	}
	st := m.NewStream()
	type read struct {
		b   []byte
		err error
	}
	reads := make(chan read)
	go func() {
		for {
			b := make([]byte, 32<<10)
			n, err := src.Read(b)
			reads <- read{b[:n], err}
			if err != nil {
				return
			}
		}
	}()
	words := time.NewTimer(time.Hour)
	all := time.NewTimer(time.Hour)
	defer words.Stop()
	defer all.Stop()
	for {
		select {
		case r := <-reads:
			if len(r.b) > 0 {
				s.touch()
				if !send(st.Write(r.b)) {
					go drain(reads)
					return st.Counts
				}
				if st.Held() > 0 {
					words.Reset(50 * time.Millisecond)
					all.Reset(time.Second)
				}
			}
			if r.err != nil {
				send(st.Flush())
				return st.Counts
			}
		case <-words.C:
			send(st.FlushWords())
		case <-all.C:
			send(st.Flush())
		}
	}
}

func counts(st *masking.Stream) masking.Counts {
	if st == nil {
		return masking.Counts{}
	}
	return st.Counts
}

func drain[T any](c <-chan T) {
	for range c {
	}
}

// recorder records a command's input and output in bounded chunks without
// waiting for each, but never lets more than flowWindow wait to be durable.
// Without a terminal (bulk output), data arriving within 10 ms of the
// chunk being filled joins it, up to chunk bytes: fewer, larger records. On
// a terminal every piece is recorded as it comes, with its own time.
type recorder struct {
	s        *session
	coalesce bool
	mu       sync.Mutex
	last     uint64
	pending  int
	err      error
	buf      []byte
	bufFor   string
	bufAt    int64
}

func (r *recorder) io(ctx context.Context, stream string, b []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return
	}
	now := r.s.sinceStart().Milliseconds()
	if !r.coalesce {
		r.emit(stream, b, now)
	} else {
		if len(r.buf) > 0 && (stream != r.bufFor || now-r.bufAt > 10) {
			r.emit(r.bufFor, r.buf, r.bufAt)
			r.buf = r.buf[:0]
		}
		if len(r.buf) == 0 {
			r.bufFor, r.bufAt = stream, now
			// Whole chunks go straight to the record, without a copy.
			if n := len(b) / chunk * chunk; n > 0 {
				r.emit(stream, b[:n], now)
				b = b[n:]
			}
		}
		r.buf = append(r.buf, b...)
		if len(r.buf) >= chunk {
			n := len(r.buf) / chunk * chunk
			r.emit(stream, r.buf[:n], r.bufAt)
			r.buf = append(r.buf[:0], r.buf[n:]...)
			r.bufAt = now
		}
	}
	if r.pending > flowWindow && r.err == nil {
		r.pending = 0
		if err := r.s.durable(ctx, r.last); err != nil {
			r.err = err
		}
	}
}

// emit records b in chunks of at most chunk bytes.
func (r *recorder) emit(stream string, b []byte, at int64) {
	for len(b) > 0 && r.err == nil {
		n := min(len(b), chunk)
		io := recording.TerminalIO(stream, b[:n], at)
		seq, err := r.s.emit(&sessionv1.Event{Body: &sessionv1.Event_Io{Io: io}})
		if err != nil {
			r.err = err
			return
		}
		// What waits in memory is what was recorded (compressed).
		r.last = seq
		r.pending += len(io.GetData())
		b = b[n:]
	}
}

// flush records what is held and waits until everything recorded is
// durable.
func (r *recorder) flush(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.buf) > 0 {
		r.emit(r.bufFor, r.buf, r.bufAt)
		r.buf = r.buf[:0]
	}
	if r.err != nil {
		return r.err
	}
	if r.last == 0 {
		return nil
	}
	if err := r.s.durable(ctx, r.last); err != nil {
		r.err = err
		return err
	}
	return nil
}
