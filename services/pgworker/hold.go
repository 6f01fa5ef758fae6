package pgworker

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"google.golang.org/protobuf/proto"

	"sluice.dev/sluice/libs/approvalstate"
	"sluice.dev/sluice/libs/bus"
	approvalsv1 "sluice.dev/sluice/proto/sluice/approvals/v1"
	policyv1 "sluice.dev/sluice/proto/sluice/policy/v1"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
)

// commandHash binds an approval to the exact command bytes and parameters.
func commandHash(text, params string) string {
	h := sha256.New()
	h.Write([]byte(text))
	h.Write([]byte{0})
	h.Write([]byte(params))
	return hex.EncodeToString(h.Sum(nil))
}

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
)

// awaitDecision waits for approval id to be decided, while watching the
// client: a client that disconnects or cancels (a CancelRequest with the
// session's key) stops waiting (left says which).
func (s *session) awaitDecision(ctx context.Context, id string) (*approvalsv1.Approval, int, error) {
	cancelled := make(chan struct{})
	s.holdMu.Lock()
	s.holdCancel = cancelled
	s.holdMu.Unlock()
	defer func() {
		s.holdMu.Lock()
		s.holdCancel = nil
		s.holdMu.Unlock()
	}()
	pres := s.watchClient()
	wctx, wcancel := context.WithTimeout(ctx, s.w.cfg.HoldTimeout+5*time.Second)
	left := make(chan int, 1)
	go func() {
		select {
		case <-pres.gone:
			left <- leftGone
		case <-cancelled:
			left <- leftCancelled
		case <-wctx.Done():
			left <- leftNot
			return
		}
		wcancel()
	}()
	a, err := s.w.approvals.Await(wctx, id)
	wcancel()
	why := <-left
	pres.stop()
	if why == leftNot {
		select {
		case <-pres.gone: // it left as the decision came: it does not run
			why = leftGone
		default:
		}
	}
	return a, why, err
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

// withdraw tells the approvals service (an event approvers see) and the
// audit log that nobody waits for request id any more: it never runs.
func (s *session) withdraw(cmdID uint64, id, reason string) {
	ctx, cancel := context.WithTimeout(bus.WithCallerToken(context.Background(), s.token), 5*time.Second)
	defer cancel()
	var reply approvalsv1.ApprovalReply
	err := bus.Request(ctx, s.w.cfg.Conn.NC, bus.APIApprovalsWithdraw, &approvalsv1.Withdraw{Id: id, SessionId: s.id, Reason: reason}, &reply)
	if err == nil && reply.GetError() != nil {
		err = fmt.Errorf("%s", reply.GetError().GetMessage())
	}
	if err != nil {
		// It still never runs: its session no longer waits for it.
		s.w.cfg.Log.Warn().Err(err).Str("session", s.id).Str("approval", id).Msg("held request not withdrawn; it expires unused")
	}
	_, _ = s.rec.Emit(&sessionv1.Event{Body: &sessionv1.Event_Approval{Approval: &sessionv1.Approval{CommandId: cmdID, ApprovalId: id, State: "withdrawn", Reason: reason}}})
}

// presence watches a client while its statement is held, when the client
// loop does not read: it notices the client leave without consuming what
// the client sends (pipelined messages stay buffered for the loop).
type presence struct {
	s    *session
	gone chan struct{}
	done chan struct{}
}

func (s *session) watchClient() *presence {
	p := &presence{s: s, gone: make(chan struct{}), done: make(chan struct{})}
	// No idle timeout while held: the hold has its own.
	_ = s.client.SetReadDeadline(time.Time{})
	go func() {
		defer close(p.done)
		br := s.cr.r
		for n := 1; ; {
			b, err := br.Peek(n)
			switch {
			case err == nil && b[0] == 'X':
				close(p.gone) // Terminate
				return
			case err == nil:
				// The client sent more: it is here. Wait for what follows,
				// as long as the buffer holds it.
				if n = br.Buffered() + 1; n > br.Size() {
					return
				}
			case errors.Is(err, bufio.ErrBufferFull), isTimeout(err):
				return // a full buffer, or stop
			default:
				close(p.gone)
				return
			}
		}
	}()
	return p
}

// stop ends the watch before the client loop reads again.
func (p *presence) stop() {
	_ = p.s.client.SetReadDeadline(time.Unix(1, 0))
	<-p.done
	_ = p.s.client.SetReadDeadline(time.Now().Add(p.s.w.cfg.IdleTimeout))
}

// await holds the session (nothing more is read from the client) while a
// human decides: it opens an approval request, tells the client at once
// with a notice, waits (bounded) and consumes the approval if granted.
func (s *session) await(ctx context.Context, d *policyv1.Decision, text, via, stmt, params string, cached bool) (heldOutcome, error) {
	seq, err := s.emitCommand(text, via, stmt, params, d, cached)
	if err != nil {
		return heldOutcome{}, s.notRecording()
	}
	if err := s.rec.WaitFor(ctx, seq); err != nil {
		return heldOutcome{}, s.notRecording()
	}
	cmdID := s.cmdID
	refuse := func(reason string) heldOutcome {
		c := proto.Clone(d).(*policyv1.Decision)
		c.Action, c.Reason = "deny", reason
		return heldOutcome{denial: c}
	}
	hash := commandHash(text, params)
	var reply approvalsv1.ApprovalReply
	// The approvals service verifies the requester from the session's own
	// token: a worker cannot open a request in anyone else's name.
	octx, cancel := context.WithTimeout(bus.WithCallerToken(ctx, s.token), 5*time.Second)
	// The request carries an excerpt; the hash binds the approval to the
	// whole command.
	excerpt := approvalstate.Excerpt(text)
	err = bus.Request(octx, s.w.cfg.Conn.NC, bus.APIApprovalsOpen, &approvalsv1.OpenRequest{
		SessionId: s.id, Target: s.targetRef.GetName(), Command: excerpt, CommandSize: int64(len(text)), CommandHash: hash,
		Rule: d.GetRule(), Reason: d.GetReason(), ApproverGroups: d.GetApprovers(), Quorum: d.GetQuorum(),
		TtlSeconds: int64(s.w.cfg.HoldTimeout.Seconds()),
	}, &reply)
	cancel()
	if err != nil || reply.GetError() != nil {
		msg := "the approvals service is unavailable"
		if reply.GetError() != nil {
			msg = reply.GetError().GetMessage()
		}
		return refuse(d.GetReason() + "; it needs approval, but no approval request could be opened: " + msg), nil
	}
	id := reply.GetApproval().GetId()
	_, _ = s.rec.Emit(&sessionv1.Event{Body: &sessionv1.Event_Approval{Approval: &sessionv1.Approval{CommandId: cmdID, ApprovalId: id, State: "pending"}}})
	notice := &pgproto3.NoticeResponse{
		Severity: "NOTICE", SeverityUnlocalized: "NOTICE", Code: "01000",
		Message: fmt.Sprintf("sluice: statement held for approval %s (rule %q): %s", id, d.GetRule(), d.GetReason()),
		Detail:  fmt.Sprintf("An approver (%s) runs: sluice approve %s", strings.Join(d.GetApprovers(), ", "), id),
		Hint:    fmt.Sprintf("Waiting up to %s. Once approved, exactly this statement runs, once.", s.w.cfg.HoldTimeout),
	}
	if err := s.writeClient(notice); err != nil {
		return heldOutcome{}, errClosed
	}
	a, left, err := s.awaitDecision(ctx, id)
	switch {
	case ctx.Err() != nil:
		s.withdraw(cmdID, id, "the session ended while the statement was held")
		return heldOutcome{}, errClosed
	case left == leftGone:
		s.withdraw(cmdID, id, "the client disconnected while the statement was held")
		s.shutdown("the client closed the connection while a statement was held", nil)
		return heldOutcome{}, errClosed
	case left == leftCancelled:
		s.withdraw(cmdID, id, "the client cancelled the statement")
		return heldOutcome{refusal: &pgproto3.ErrorResponse{
			Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: stateQueryCanceled,
			Message: "canceling statement due to user request",
			Detail:  fmt.Sprintf("sluice: approval request %s is withdrawn; the statement did not run", id),
		}}, nil
	case err != nil:
		_, _ = s.rec.Emit(&sessionv1.Event{Body: &sessionv1.Event_Approval{Approval: &sessionv1.Approval{CommandId: cmdID, ApprovalId: id, State: "expired"}}})
		return refuse(fmt.Sprintf("approval request %s was not decided in time", id)), nil
	}
	event := &sessionv1.Approval{CommandId: cmdID, ApprovalId: id, State: a.GetState(), Approvers: a.GetApprovedBy(), Reason: a.GetDecisionReason()}
	switch a.GetState() {
	case "approved":
	case "denied":
		_, _ = s.rec.Emit(&sessionv1.Event{Body: &sessionv1.Event_Approval{Approval: event}})
		return refuse(fmt.Sprintf("approval request %s was denied by %s: %s", id, a.GetDecidedBy(), orNone(a.GetDecisionReason()))), nil
	case "withdrawn":
		_, _ = s.rec.Emit(&sessionv1.Event{Body: &sessionv1.Event_Approval{Approval: event}})
		return refuse(fmt.Sprintf("approval request %s was withdrawn: %s", id, a.GetDecisionReason())), nil
	default:
		_, _ = s.rec.Emit(&sessionv1.Event{Body: &sessionv1.Event_Approval{Approval: event}})
		return refuse(fmt.Sprintf("approval request %s %s", id, a.GetState())), nil
	}
	var consumed approvalsv1.ApprovalReply
	cctx, ccancel := context.WithTimeout(bus.WithCallerToken(ctx, s.token), 5*time.Second)
	err = bus.Request(cctx, s.w.cfg.Conn.NC, bus.APIApprovalsConsume, &approvalsv1.Consume{Id: id, SessionId: s.id, CommandHash: hash}, &consumed)
	ccancel()
	if err != nil || consumed.GetError() != nil {
		msg := "the approvals service is unavailable"
		if consumed.GetError() != nil {
			msg = consumed.GetError().GetMessage()
		}
		return refuse("the approval could not be used: " + msg), nil
	}
	event.State = "consumed"
	seq, err = s.rec.Emit(&sessionv1.Event{Body: &sessionv1.Event_Approval{Approval: event}})
	if err != nil {
		return heldOutcome{}, s.notRecording()
	}
	// The approval is the write-ahead record of what now runs.
	if err := s.rec.WaitFor(ctx, seq); err != nil {
		return heldOutcome{}, s.notRecording()
	}
	return heldOutcome{approved: true, seq: seq}, nil
}

func orNone(s string) string {
	if s == "" {
		return "no reason given"
	}
	return s
}

// hold handles a simple Query the policy holds for review.
func (s *session) hold(ctx context.Context, d *policyv1.Decision, text, via string, frame []byte, cached bool) error {
	// The reader's buffer is not reused while the client is not read, but
	// keep a copy of the exact bytes that will run.
	frame = append([]byte(nil), frame...)
	out, err := s.await(ctx, d, text, via, "", "", cached)
	if err != nil {
		return err
	}
	if !out.approved {
		return s.probeError(out.errorFor(s.id))
	}
	s.commands.Add(1)
	s.notePrepared(d, text)
	s.noteCursors(d)
	e := &expect{kind: expQuery, cmdID: s.cmdID, seq: out.seq, start: time.Now(), durable: true}
	if err := s.attachPlan(e, d, text); err != nil {
		return err
	}
	s.push(e)
	return s.forward(frame)
}

// holdExecute handles an Execute of a statement the policy holds: the
// approval binds to the statement text and the bound parameters.
func (s *session) holdExecute(ctx context.Context, info *stmtInfo, portal string, p *portalInfo, frame []byte) error {
	frame = append([]byte(nil), frame...)
	out, err := s.await(ctx, info.decision, info.text, "execute", p.stmt, p.paramsHash, info.cached)
	if err != nil {
		return err
	}
	if !out.approved {
		// Fail this Execute as the server would: a Parse that fails, under
		// a name of our own, makes the server skip to the client's Sync.
		s.denied.Add(1)
		s.commands.Add(1)
		marker := s.nextMarker()
		s.push(&expect{kind: expProbeParse, cmdID: s.cmdID, denial: out.errorFor(s.id), marker: marker})
		return writeMsg(s.sw, &s.sout, &pgproto3.Parse{Name: marker, Query: probeSQL(marker)})
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
