package pgworker

import (
	"context"
	"encoding/binary"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"google.golang.org/protobuf/proto"

	"sluice.dev/sluice/libs/gateway"
	"sluice.dev/sluice/libs/sqlclass"
	policyv1 "sluice.dev/sluice/proto/sluice/policy/v1"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
)

// heldOutcome is how a hold ended.
type heldOutcome struct {
	approved bool
	// denial explains a refusal (denied, expired, unavailable, mismatch);
	// refusal, if set, is the error the client sees instead.
	denial  *policyv1.Decision
	refusal *pgproto3.ErrorResponse
	seq     uint64
}

// errorFor is the error a client sees for a refused hold.
func (o heldOutcome) errorFor(session string) *pgproto3.ErrorResponse {
	if o.refusal != nil {
		return o.refusal
	}
	return denial(o.denial, session)
}

// Why a client stopped waiting for its held statement.
const (
	leftNot = iota
	leftGone
	leftCancelled
	leftOverflow
)

// maxHeldInput bounds what a client may send while its statement is held
// (pipelined messages, kept for after the hold).
const maxHeldInput = 8 << 20

// holdWatch watches a client while its statement is held, when the client
// loop does not read: a CancelRequest for the session, the client leaving
// (end of stream, a reset, a Terminate), or more input than maxHeldInput
// ends the wait. What the client sends meanwhile is kept, whole, and read
// by the client loop after the hold.
type holdWatch struct {
	s         *session
	cancelled chan struct{}
	mu        sync.Mutex
	why       int           // the first reason the client stopped waiting
	left      chan struct{} // closed when it did
	done      chan struct{}
	extra     []byte
	scanned   int
	ended     bool
}

func (s *session) watchHold() *holdWatch {
	h := &holdWatch{s: s, cancelled: make(chan struct{}), left: make(chan struct{}), done: make(chan struct{})}
	s.holdMu.Lock()
	s.holdCancel = h.cancelled
	s.holdMu.Unlock()
	// No idle timeout while held: the hold has its own.
	_ = s.client.SetReadDeadline(time.Time{})
	go h.watch()
	go func() {
		select {
		case <-h.cancelled:
			h.leave(leftCancelled)
		case <-h.done:
		}
	}()
	return h
}

func (h *holdWatch) leave(why int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.why == leftNot {
		h.why = why
		close(h.left)
	}
}

func (h *holdWatch) watch() {
	defer close(h.done)
	br, err := h.s.cr.input()
	if err != nil {
		h.leave(leftGone)
		return
	}
	buf := make([]byte, 32<<10)
	for {
		n, err := br.Read(buf)
		if n > 0 {
			h.extra = append(h.extra, buf[:n]...)
			if h.terminates() {
				h.leave(leftGone)
				return
			}
			if len(h.extra) > maxHeldInput {
				h.leave(leftOverflow)
				return
			}
		}
		switch {
		case err == nil:
		case isTimeout(err):
			return // end
		default:
			h.leave(leftGone)
			return
		}
	}
}

// terminates reports whether the messages received so far hold a
// Terminate (the client loop stopped at a message boundary).
func (h *holdWatch) terminates() bool {
	for h.scanned+5 <= len(h.extra) {
		if h.extra[h.scanned] == 'X' {
			return true
		}
		l := int(binary.BigEndian.Uint32(h.extra[h.scanned+1:]))
		if l < 4 {
			return false // malformed: the client loop says so
		}
		h.scanned += 1 + l
	}
	return false
}

// reason is why the client stopped waiting so far (leftNot if it waits).
func (h *holdWatch) reason() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.why
}

// end stops the watch and gives what the client sent to the client loop.
func (h *holdWatch) end() {
	if h.ended {
		return
	}
	h.ended = true
	h.s.holdMu.Lock()
	h.s.holdCancel = nil
	h.s.holdMu.Unlock()
	_ = h.s.client.SetReadDeadline(time.Unix(1, 0))
	<-h.done
	h.s.cr.unread(h.extra)
	h.extra = nil
	_ = h.s.client.SetReadDeadline(time.Now().Add(h.s.w.cfg.IdleTimeout))
}

// cancelHold withdraws the statement held in this session, if any: a
// cancel of a held statement never reaches the target.
func (s *session) cancelHold() bool {
	s.holdMu.Lock()
	defer s.holdMu.Unlock()
	if s.holdCancel == nil {
		return false
	}
	select {
	case <-s.holdCancel:
	default:
		close(s.holdCancel)
	}
	return true
}

// withdrawReason is what the approvals service and the audit log are told
// when the client stops waiting for its held statement.
func (s *session) withdrawReason(why int) string {
	if ended, _ := s.endReason.Load().(string); ended != "" {
		return "the session ended while the statement was held: " + ended
	}
	switch why {
	case leftGone:
		return "the client disconnected while the statement was held"
	case leftOverflow:
		return "the client sent more than 8 MiB while the statement was held"
	case leftCancelled:
		return "the client cancelled the statement"
	}
	return "the session ended while the statement was held"
}

// stoppedWaiting is what the client sees of a hold it stopped waiting for
// (the request is withdrawn already): nothing if it left or its session
// ended, an error if it cancelled or sent too much.
func (s *session) stoppedWaiting(ctx context.Context, why int, id string) (heldOutcome, error) {
	ended, _ := s.endReason.Load().(string) // an expired token, say
	switch {
	case ended != "" || ctx.Err() != nil:
		return heldOutcome{}, errClosed
	case why == leftGone || why == leftNot:
		// Gone, or the notice could not be written to it.
		s.shutdown("the client closed the connection while a statement was held", nil)
		return heldOutcome{}, errClosed
	case why == leftOverflow:
		return heldOutcome{refusal: &pgproto3.ErrorResponse{
			Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: stateProgramLimitExceeded,
			Message: fmt.Sprintf("sluice: more than 8 MiB arrived while the statement was held; approval request %s is withdrawn and the statement did not run", id),
		}}, nil
	default:
		return heldOutcome{refusal: &pgproto3.ErrorResponse{
			Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: stateQueryCanceled,
			Message: "canceling statement due to user request",
			Detail:  fmt.Sprintf("sluice: approval request %s is withdrawn; the statement did not run", id),
		}}, nil
	}
}

// await holds the session (nothing more is read from the client) while a
// human decides, through the kernel's hold: the request is opened, the
// client told at once with a notice, the wait bounded, and the approval
// consumed if granted. The client is watched meanwhile: a cancel, the
// client leaving or sending too much withdraws the request.
func (s *session) await(ctx context.Context, d *policyv1.Decision, text, via, stmt, params string, cached bool, shown string, unshown int) (heldOutcome, error) {
	seq, err := s.emitCommand(text, via, stmt, params, d, cached)
	if err != nil {
		return heldOutcome{}, s.notRecording()
	}
	if err := s.rec.WaitFor(ctx, seq); err != nil {
		return heldOutcome{}, s.unrecorded(err)
	}
	// From here until the statement goes to the target, a cancel or the
	// client leaving withdraws it.
	h := s.watchHold()
	defer h.end()
	out := s.w.k.Hold(ctx, gateway.HoldRequest{
		SessionID: s.id, Token: s.callerToken(), Target: s.targetRef.GetName(), Command: text, Shown: shown, Unshown: unshown,
		Hash: gateway.CommandHash(text, params), CmdID: s.cmdID, Decision: d, Rec: s.rec,
		Notify: func(id string) error {
			return s.writeClient(&pgproto3.NoticeResponse{
				Severity: "NOTICE", SeverityUnlocalized: "NOTICE", Code: "01000",
				Message: fmt.Sprintf("sluice: statement held for approval %s (rule %q): %s", id, d.GetRule(), d.GetReason()),
				Detail:  fmt.Sprintf("An approver (%s) runs: sluice approve %s", strings.Join(d.GetApprovers(), ", "), id),
				Hint:    fmt.Sprintf("Waiting up to %s. Once approved, exactly this statement runs, once.", s.w.cfg.HoldTimeout),
			})
		},
		Left: h.left,
		Why:  func() string { return s.withdrawReason(h.reason()) },
	})
	switch {
	case out.RecordErr != nil:
		return heldOutcome{}, s.notRecording()
	case out.Left != "":
		return s.stoppedWaiting(ctx, h.reason(), out.ID)
	case !out.Approved:
		c := proto.Clone(d).(*policyv1.Decision)
		c.Action, c.Reason = "deny", out.Refusal
		return heldOutcome{denial: c}, nil
	}
	// The last moment a client that left or cancelled stops it.
	h.end()
	if why := h.reason(); why != leftNot || ctx.Err() != nil {
		reason := s.withdrawReason(why)
		s.w.k.Withdraw(s.callerToken(), s.id, out.ID, reason)
		_, _ = s.rec.Emit(&sessionv1.Event{Body: &sessionv1.Event_Approval{Approval: &sessionv1.Approval{CommandId: s.cmdID, ApprovalId: out.ID, State: "withdrawn", Reason: reason}}})
		return s.stoppedWaiting(ctx, why, out.ID)
	}
	return heldOutcome{approved: true, seq: out.Seq}, nil
}

// hold handles a simple Query the policy holds for review.
func (s *session) hold(ctx context.Context, d *policyv1.Decision, text, via string, frame []byte, cached bool) error {
	// The reader's buffer is not reused while the client is not read, but
	// keep a copy of the exact bytes that will run.
	frame = append([]byte(nil), frame...)
	out, err := s.await(ctx, d, text, via, "", "", cached, s.withPrepared(text, d), 0)
	if err != nil {
		return err
	}
	if !out.approved {
		return s.probeError(out.errorFor(s.id))
	}
	s.commands.Add(1)
	s.noteCursors(d)
	e := &expect{kind: expQuery, cmdID: s.cmdID, seq: out.seq, start: time.Now(), durable: true, copyIn: copiesIn(d)}
	e.names = s.sqlChanges(d, text, 0) // ruled on again before it runs: the hold outlasts any epoch
	s.copyIn = e.copyIn
	if err := s.attachPlan(e, d, text); err != nil {
		return err
	}
	s.push(e)
	return s.forward(frame)
}

// withPrepared is shown followed by what each statement that d says runs
// a prepared one by name (EXECUTE foo) was prepared as: the approver of
// EXECUTE foo(1) reads foo.
func (s *session) withPrepared(shown string, d *policyv1.Decision) string {
	var b strings.Builder
	for name, prep := range s.executedByName(d) {
		fmt.Fprintf(&b, "\n-- %s is prepared as:", sqlclass.Literal(name))
		for _, line := range strings.Split(prep.text, "\n") {
			b.WriteString("\n--   ")
			b.WriteString(line)
		}
	}
	return shown + b.String()
}

// holdExecute handles an Execute of a statement the policy holds: the
// approval binds to the statement text and the bound parameters.
func (s *session) holdExecute(ctx context.Context, info *stmtInfo, portal string, p *portalInfo, frame []byte) error {
	frame = append([]byte(nil), frame...)
	// The approver reads the parameters the statement runs with, and what
	// a statement it executes by name was prepared as.
	shown, unshown := info.text, 0
	var err error
	if p.bind == nil {
		unshown = p.bindSize
	} else if shown, err = shownBind(info.text, p.bind, info.types.get()); err != nil {
		return err
	}
	shown = s.withPrepared(shown, info.decision)
	out, err := s.await(ctx, info.decision, info.text, "execute", p.stmt, p.paramsHash, info.cached, shown, unshown)
	if err != nil {
		return err
	}
	if !out.approved {
		return s.probeParse(out.errorFor(s.id), nil)
	}
	s.commands.Add(1)
	e := &expect{kind: expExecute, cmdID: s.cmdID, seq: out.seq, start: time.Now(), durable: true,
		describe: "P:" + portal, stmtKey: "S:" + p.stmt, formats: p.formats}
	if err := s.attachPlan(e, info.decision, info.text); err != nil {
		return err
	}
	if err := s.describeFor(e, portal, p); err != nil {
		return err
	}
	s.push(e)
	return s.forward(frame)
}
