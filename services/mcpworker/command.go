package mcpworker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"golang.org/x/crypto/ssh"

	"sluice.dev/sluice/libs/gateway"
	"sluice.dev/sluice/libs/masking"
	"sluice.dev/sluice/libs/recording"
	"sluice.dev/sluice/libs/targets"
	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
	policyv1 "sluice.dev/sluice/proto/sluice/policy/v1"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
)

// Output limits of run_command.
const (
	defaultMaxOutput = 64 << 10
	maxMaxOutput     = 1 << 20
	// outputSlack is read beyond the limit so that a value cut by the limit
	// is still masked whole before the output is cut.
	outputSlack = 4 << 10
	// ioChunk is the size of the output records.
	ioChunk = 32 << 10
)

type cmdOutput struct {
	ExitStatus      *int   `json:"exit_status,omitempty" jsonschema:"the command's exit status (absent when it ended by a signal or the target did not say)"`
	Signal          string `json:"signal,omitempty" jsonschema:"the signal that ended it"`
	Stdout          string `json:"stdout"`
	Stderr          string `json:"stderr"`
	StdoutTruncated bool   `json:"stdout_truncated,omitempty"`
	StderrTruncated bool   `json:"stderr_truncated,omitempty"`
}

// commandCall prepares a run_command call: an SSH exec, ruled on exactly as
// the SSH worker rules on one.
func (w *Worker) commandCall(ctx context.Context, s *session, req *mcp.CallToolRequest, in runCommandIn) (*call, *callError) {
	spec, e := w.target(ctx, in.Target, "ssh", toolRunCommand)
	if e != nil {
		return nil, e
	}
	if strings.TrimSpace(in.Command) == "" {
		return nil, fail("invalid_arguments", "command is required")
	}
	if !utf8.ValidString(in.Command) || strings.ContainsRune(in.Command, 0) {
		return nil, fail("invalid_arguments", "command must be UTF-8 text without NUL bytes")
	}
	limit := in.MaxOutputBytes
	switch {
	case limit == 0:
		limit = defaultMaxOutput
	case limit < 0 || limit > maxMaxOutput:
		return nil, fail("invalid_arguments", "max_output_bytes must be between 1 and %d", maxMaxOutput)
	}
	ref := gateway.TargetRef(spec.GetName(), spec.GetKind(), spec.GetLabels())
	c := &call{
		tool: toolRunCommand, target: ref, text: in.Command, hashKind: "exec",
		req: &policyv1.EvaluateRequest{Principal: s.principal, Target: ref, SessionId: s.id,
			Command: &policyv1.EvaluateRequest_Ssh{Ssh: &policyv1.SSHCommand{RequestType: "exec", Command: in.Command}},
			Mcp:     &policyv1.MCPInput{Tool: toolRunCommand, Arguments: args(req), Client: s.client}},
		key: cacheKey(toolRunCommand, s.client, req),
	}
	target := spec.GetSsh()
	c.run = func(ctx context.Context, id uint64, d *policyv1.Decision) callResult {
		return w.runCommand(ctx, s, c, target, limit, id, d)
	}
	return c, nil
}

// runCommand runs an allowed (or approved) command on the target, masks
// its output, records it, and returns it once the record is durable.
func (w *Worker) runCommand(ctx context.Context, s *session, c *call, t *controlv1.SSHTarget, limit int, id uint64, d *policyv1.Decision) callResult {
	res := callResult{Tool: c.tool, Target: c.target.GetName()}
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, w.cfg.CallTimeout)
	defer cancel()
	var m *masking.Masker
	if len(d.GetMasks()) > 0 {
		var err error
		if m, err = w.k.Masker(gateway.MaskRulesKey(d), d); err != nil {
			res.Status, res.Error = statusError, fail("masking_unavailable", "the masking rules cannot be applied: %v", err)
			w.recordFailure(s, id, start, "masking_unavailable", res.Error.Message)
			return res
		}
	}
	client, err := targets.DialSSH(ctx, t, w.cfg.MasterKey, w.cfg.TargetTimeout)
	if err != nil {
		res.Status, res.Error = statusError, fail("target_unreachable", "cannot reach the target: %v", err)
		w.recordFailure(s, id, start, "target_unreachable", res.Error.Message)
		return res
	}
	defer client.Close()
	sess, err := client.NewSession()
	if err != nil {
		res.Status, res.Error = statusError, fail("target_refused", "the target refused a session: %v", err)
		w.recordFailure(s, id, start, "target_refused", res.Error.Message)
		return res
	}
	defer sess.Close()
	stdout, stderr := &capped{max: limit + outputSlack}, &capped{max: limit + outputSlack}
	sess.Stdout, sess.Stderr = stdout, stderr
	done := make(chan error, 1)
	if err := sess.Start(c.text); err != nil {
		res.Status, res.Error = statusError, fail("target_refused", "the target refused the command: %v", err)
		w.recordFailure(s, id, start, "target_refused", res.Error.Message)
		return res
	}
	go func() { done <- sess.Wait() }()
	var status string
	out := &cmdOutput{}
	select {
	case err = <-done:
	case <-ctx.Done():
		_ = sess.Signal(ssh.SIGKILL)
		client.Close()
		err = <-done
		status = "timed out"
	}
	var exit *ssh.ExitError
	switch {
	case err == nil:
		out.ExitStatus = ptr(0)
	case errors.As(err, &exit):
		if exit.Signal() != "" {
			out.Signal = exit.Signal()
		} else {
			out.ExitStatus = ptr(exit.ExitStatus())
		}
	}
	switch {
	case status != "":
	case out.ExitStatus != nil:
		status = fmt.Sprintf("exit %d", *out.ExitStatus)
	case out.Signal != "":
		status = "signal " + out.Signal
	default:
		status = "ended"
	}
	var counts []*sessionv1.MaskCount
	out.Stdout, out.StdoutTruncated = finish(m, stdout, limit, "stdout", &counts)
	out.Stderr, out.StderrTruncated = finish(m, stderr, limit, "stderr", &counts)
	// The output as returned is recorded, and returned only once durable.
	at := time.Since(start).Milliseconds()
	for _, o := range []struct{ stream, data string }{{"stdout", out.Stdout}, {"stderr", out.Stderr}} {
		for b := []byte(o.data); len(b) > 0; {
			n := min(len(b), ioChunk)
			_, _ = s.emit(&sessionv1.Event{Body: &sessionv1.Event_Io{Io: recording.TerminalIO(o.stream, b[:n], at)}})
			b = b[n:]
		}
	}
	if len(counts) > 0 {
		_, _ = s.emit(&sessionv1.Event{Body: &sessionv1.Event_Masking{Masking: &sessionv1.Masking{CommandId: id, Counts: counts}}})
		for _, mc := range counts {
			res.Masked = append(res.Masked, maskedCount{Detector: mc.GetDetector(), Field: mc.GetField(), Count: mc.GetCount()})
		}
	}
	seq, err := s.emit(&sessionv1.Event{Body: &sessionv1.Event_Result{Result: &sessionv1.Result{CommandId: id,
		CommandTag: status, DurationUs: time.Since(start).Microseconds()}}})
	if err == nil {
		err = s.durable(context.WithoutCancel(ctx), seq)
	}
	if err != nil {
		res.Status, res.Error = statusError, fail("unavailable", "the output could not be recorded; it is not returned")
		return res
	}
	res.Output = out
	res.Status = statusOK
	if status == "timed out" {
		res.Status, res.Error = statusError, fail("timeout", "the command did not finish within %s and was killed", w.cfg.CallTimeout)
	}
	return res
}

// finish masks what a stream captured and cuts it to limit (at a character
// boundary). Masking sees every value whole before any cut: when the
// capture itself was cut, the tail the masker still holds (a line that may
// continue, an unfinished key block) is dropped, never released unmasked.
func finish(m *masking.Masker, c *capped, limit int, stream string, counts *[]*sessionv1.MaskCount) (string, bool) {
	data := c.bytes()
	truncated := c.over
	if m != nil {
		st := m.NewStream()
		masked := append([]byte(nil), st.Write(data)...)
		if !c.over {
			masked = append(masked, st.Flush()...)
		}
		data = masked
		st.Counts.Each(func(name string, n int64) {
			if n > 0 {
				*counts = append(*counts, &sessionv1.MaskCount{Detector: name, Count: n, Field: stream})
			}
		})
	}
	if len(data) > limit {
		cut := limit
		for cut > 0 && !utf8.RuneStart(data[cut]) {
			cut--
		}
		data, truncated = data[:cut], true
	}
	return strings.ToValidUTF8(string(data), "\uFFFD"), truncated
}

// capped keeps the first max bytes written to it and counts the rest.
type capped struct {
	mu   sync.Mutex
	max  int
	buf  bytes.Buffer
	over bool
}

func (c *capped) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	room := c.max - c.buf.Len()
	if len(p) > room {
		c.over = true
	}
	if room > 0 {
		c.buf.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

func (c *capped) bytes() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.Bytes()
}

var _ io.Writer = (*capped)(nil)
