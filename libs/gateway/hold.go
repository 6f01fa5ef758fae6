package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"sluice.dev/sluice/libs/approvalstate"
	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/recording"
	"sluice.dev/sluice/libs/visible"
	approvalsv1 "sluice.dev/sluice/proto/sluice/approvals/v1"
	policyv1 "sluice.dev/sluice/proto/sluice/policy/v1"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
)

// HoldRequest is a command the policy holds for review. The protocol has
// recorded the command (and waited for that record) before asking.
type HoldRequest struct {
	SessionID string
	// Token is the session's access token: the approvals service verifies
	// the requester from it, so a worker opens requests in nobody else's
	// name.
	Token  string
	Target string
	// Command is the whole command; the request keeps an excerpt, and Hash
	// (CommandHash of the command and its parameters) binds the approval
	// to all of it.
	Command string
	// Shown is what an approver reads when the command alone does not say
	// all that runs: the command with its bound parameters, its body, its
	// environment. Empty: the command. Unshown counts the bytes of what
	// decides the command that could not be kept to show (parameters
	// longer than an approver is shown): such a request is refused.
	Shown    string
	Unshown  int
	Hash     string
	CmdID    uint64
	Decision *policyv1.Decision
	Rec      *recording.Session
	// Notify tells the client at once which approval to ask for.
	Notify func(id string) error
	// Left is closed when the client stops waiting (it left, cancelled, or
	// its session ended); Why then says why, for the withdrawal.
	Left <-chan struct{}
	Why  func() string
}

// HoldOutcome is how a hold ended.
type HoldOutcome struct {
	ID string
	// Approved: the approval is consumed and its event (Seq) durable: the
	// command may run, once, exactly as held.
	Approved bool
	Seq      uint64
	// Refusal says why the command does not run (denied, expired, ...).
	Refusal string
	// Left: the client stopped waiting, and the request is withdrawn.
	Left string
	// RecordErr: an event could not be made durable; the session ends.
	RecordErr error
}

// CommandHash binds an approval to a command and its parameters.
func CommandHash(command, params string) string {
	h := sha256.New()
	h.Write([]byte(command))
	h.Write([]byte{0})
	h.Write([]byte(params))
	return hex.EncodeToString(h.Sum(nil))
}

// Hold opens an approval request for r, tells the client, waits (at most
// the hold timeout) while the client waits, and consumes the approval when
// it is granted.
func (k *Kernel) Hold(ctx context.Context, r HoldRequest) HoldOutcome {
	id, refusal := k.OpenHold(ctx, r)
	if id == "" {
		return HoldOutcome{Refusal: refusal}
	}
	if err := r.Notify(id); err != nil {
		return k.stopWaiting(r, id, "the client disconnected while the command was held")
	}
	out, pending := k.SettleHold(ctx, r, id, k.cfg.HoldTimeout+5*time.Second)
	if pending {
		// Past its time here, whatever the view says: it never runs.
		k.Withdraw(r.Token, r.SessionID, id, "not decided in time")
		_, _ = r.emit(id, "expired", "", nil)
		k.metrics.holds[holdExpired].Inc()
		return HoldOutcome{ID: id, Refusal: fmt.Sprintf("approval request %s was not decided in time", id)}
	}
	return out
}

// OpenHold opens an approval request for r and records it as pending. It
// returns the request's id, or no id and why none could be opened (the
// command does not run). Protocols whose client collects the outcome later
// (MCP) call it and SettleHold themselves; the others call Hold. A request
// that cannot be opened counts as a refused hold.
func (k *Kernel) OpenHold(ctx context.Context, r HoldRequest) (id, refusal string) {
	d := r.Decision
	shown := r.Command
	if r.Shown != "" {
		shown = r.Shown
	}
	// The approvals service keeps it as an approver must see it, every
	// character that would not show as itself written out.
	if size := max(len(shown), len(visible.Text(shown)), r.Unshown); size > approvalstate.MaxCommandExcerpt {
		// An approver would be shown part of it, and the approval would
		// run all of it.
		k.metrics.holds[holdRefused].Inc()
		what := "it is"
		if shown != r.Command || r.Unshown > 0 {
			what = "with what it runs with (bound parameters, a body, its environment) it is"
		}
		return "", fmt.Sprintf("%s; it needs approval, but %s %d bytes as an approver reads it, longer than an approver is shown (%d bytes): it cannot be approved as one command; split it, or ask for a grant",
			d.GetReason(), what, size, approvalstate.MaxCommandExcerpt)
	}
	var reply approvalsv1.ApprovalReply
	octx, cancel := context.WithTimeout(bus.WithCallerToken(ctx, r.Token), 5*time.Second)
	err := bus.Request(octx, k.cfg.Conn.NC, bus.APIApprovalsOpen, &approvalsv1.OpenRequest{
		SessionId: r.SessionID, Target: r.Target, Command: shown, CommandSize: int64(len(shown)),
		CommandHash: r.Hash, Rule: d.GetRule(), Reason: d.GetReason(), ApproverGroups: d.GetApprovers(), Quorum: d.GetQuorum(),
		TtlSeconds: int64(k.cfg.HoldTimeout.Seconds()), Protocol: k.cfg.Protocol,
	}, &reply)
	cancel()
	if err != nil || reply.GetError() != nil {
		msg := "the approvals service is unavailable"
		if reply.GetError() != nil {
			msg = reply.GetError().GetMessage()
		}
		k.metrics.holds[holdRefused].Inc()
		return "", d.GetReason() + "; it needs approval, but no approval request could be opened: " + msg
	}
	id = reply.GetApproval().GetId()
	_, _ = r.emit(id, "pending", "", nil)
	return id, ""
}

func (r HoldRequest) emit(id, state, reason string, approvers []string) (uint64, error) {
	return r.Rec.Emit(&sessionv1.Event{Body: &sessionv1.Event_Approval{Approval: &sessionv1.Approval{
		CommandId: r.CmdID, ApprovalId: id, State: state, Approvers: approvers, Reason: reason}}})
}

// SettleHold waits up to wait, while the client waits, for the decision on
// request id (opened by OpenHold for r) and consumes the approval when it
// is granted. pending reports that wait ran out while the request is still
// undecided and unexpired: nothing was consumed or withdrawn, and the
// caller may settle it again later. A request past its expiry is expired.
// Every outcome but pending is counted (sluice_holds_total), once.
func (k *Kernel) SettleHold(ctx context.Context, r HoldRequest, id string, wait time.Duration) (out HoldOutcome, pending bool) {
	wctx, wcancel := context.WithTimeout(ctx, wait)
	go func() {
		select {
		case <-r.Left:
			wcancel()
		case <-wctx.Done():
		}
	}()
	a, err := k.Approvals.Await(wctx, id)
	wcancel()
	switch {
	case left(r.Left) || ctx.Err() != nil:
		return k.stopWaiting(r, id, r.why(ctx)), false
	case err != nil:
		cur, ok := k.Approvals.Get(id)
		switch {
		case !ok:
			// Not in this worker's view: opened a moment ago, or decided
			// long ago and retired to the history.
			return k.settleUnseen(ctx, r, id)
		case cur.GetState() == "pending":
			return k.undecided(r, id, cur)
		}
		// Decided just as the wait ran out: as decided.
		a = cur
	}
	if a.GetState() != "approved" {
		return k.refused(r, id, a), false
	}
	if left(r.Left) {
		return k.stopWaiting(r, id, r.why(ctx)), false
	}
	if refusal := k.Consume(ctx, r.Token, id, r.SessionID, r.Hash); refusal != "" {
		k.metrics.holds[holdRefused].Inc()
		return HoldOutcome{ID: id, Refusal: refusal}, false
	}
	return k.consumed(ctx, r, id, a), false
}

// settleUnseen asks the approvals service about a request this worker's
// view does not hold, by consuming it as the session's principal: an
// approved request is used then and there; any other answer carries the
// request as it stands (the requester's own), or says the service cannot
// tell yet (still pending).
func (k *Kernel) settleUnseen(ctx context.Context, r HoldRequest, id string) (HoldOutcome, bool) {
	if left(r.Left) {
		return k.stopWaiting(r, id, r.why(ctx)), false
	}
	reply, err := k.consume(ctx, r.Token, id, r.SessionID, r.Hash)
	a := reply.GetApproval()
	switch {
	case err != nil, reply.GetError().GetCode() == "not_found":
		return HoldOutcome{ID: id}, true // unreachable, or not yet stored: ask again later
	case reply.GetError() == nil:
		return k.consumed(ctx, r, id, a), false
	case a == nil:
		k.metrics.holds[holdRefused].Inc()
		return HoldOutcome{ID: id, Refusal: "the approval could not be used: " + reply.GetError().GetMessage()}, false
	case a.GetState() == "pending":
		return k.undecided(r, id, a)
	}
	return k.refused(r, id, a), false
}

// undecided settles a request still pending: it waits on while unexpired,
// and is recorded and counted as expired past its expiry.
func (k *Kernel) undecided(r HoldRequest, id string, a *approvalsv1.Approval) (HoldOutcome, bool) {
	if time.Now().Before(a.GetExpiresAt().AsTime()) {
		return HoldOutcome{ID: id}, true
	}
	_, _ = r.emit(id, "expired", "", nil)
	k.metrics.holds[holdExpired].Inc()
	return HoldOutcome{ID: id, Refusal: fmt.Sprintf("approval request %s was not decided in time", id)}, false
}

// refused records and counts the outcome of a request decided otherwise
// than approved (or approved and already used).
func (k *Kernel) refused(r HoldRequest, id string, a *approvalsv1.Approval) HoldOutcome {
	switch a.GetState() {
	case "denied":
		_, _ = r.emit(id, a.GetState(), a.GetDecisionReason(), a.GetApprovedBy())
		k.metrics.holds[holdDenied].Inc()
		reason := a.GetDecisionReason()
		if reason == "" {
			reason = "no reason given"
		}
		return HoldOutcome{ID: id, Refusal: fmt.Sprintf("approval request %s was denied by %s: %s", id, a.GetDecidedBy(), reason)}
	case "withdrawn":
		_, _ = r.emit(id, a.GetState(), a.GetDecisionReason(), a.GetApprovedBy())
		k.metrics.holds[holdWithdrawn].Inc()
		return HoldOutcome{ID: id, Refusal: fmt.Sprintf("approval request %s was withdrawn: %s", id, a.GetDecisionReason())}
	}
	_, _ = r.emit(id, a.GetState(), a.GetDecisionReason(), a.GetApprovedBy())
	if a.GetState() == "expired" {
		k.metrics.holds[holdExpired].Inc()
	} else {
		k.metrics.holds[holdRefused].Inc() // consumed already, revoked: not usable
	}
	return HoldOutcome{ID: id, Refusal: fmt.Sprintf("approval request %s %s", id, a.GetState())}
}

// consumed records the use of approval id (a, as approved), durably, before
// the command runs.
func (k *Kernel) consumed(ctx context.Context, r HoldRequest, id string, a *approvalsv1.Approval) HoldOutcome {
	seq, err := r.emit(id, "consumed", a.GetDecisionReason(), a.GetApprovedBy())
	if err != nil {
		k.metrics.holds[holdRefused].Inc()
		return HoldOutcome{ID: id, RecordErr: err}
	}
	// The approval is the write-ahead record of what now runs.
	if err := r.Rec.WaitFor(ctx, seq); err != nil && errors.Is(err, recording.ErrNotRecording) {
		k.metrics.holds[holdRefused].Inc()
		return HoldOutcome{ID: id, RecordErr: err}
	}
	if left(r.Left) || ctx.Err() != nil {
		return k.stopWaiting(r, id, r.why(ctx))
	}
	k.metrics.holds[holdApproved].Inc()
	return HoldOutcome{ID: id, Approved: true, Seq: seq}
}

// Consume uses approval id, once, for the command hash names, as the
// principal token proves (the approvals service checks that it asked, for
// that session and that command). It returns why not, or "".
func (k *Kernel) Consume(ctx context.Context, token, id, session, hash string) string {
	consumed, err := k.consume(ctx, token, id, session, hash)
	if err != nil || consumed.GetError() != nil {
		msg := "the approvals service is unavailable"
		if consumed.GetError() != nil {
			msg = consumed.GetError().GetMessage()
		}
		return "the approval could not be used: " + msg
	}
	return ""
}

// consume asks the approvals service to use approval id once, as the
// principal token proves.
func (k *Kernel) consume(ctx context.Context, token, id, session, hash string) (*approvalsv1.ApprovalReply, error) {
	var reply approvalsv1.ApprovalReply
	cctx, cancel := context.WithTimeout(bus.WithCallerToken(ctx, token), 5*time.Second)
	defer cancel()
	err := bus.Request(cctx, k.cfg.Conn.NC, bus.APIApprovalsConsume, &approvalsv1.Consume{Id: id, SessionId: session, CommandHash: hash}, &reply)
	return &reply, err
}

func left(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func (r HoldRequest) why(ctx context.Context) string {
	if r.Why != nil {
		if w := r.Why(); w != "" {
			return w
		}
	}
	if ctx.Err() != nil {
		return "the session ended while the command was held"
	}
	return "the client stopped waiting"
}

// stopWaiting withdraws request id (an event approvers see, and one in the
// session's record): nobody waits for it, and it never runs. The hold
// counts as left.
func (k *Kernel) stopWaiting(r HoldRequest, id, reason string) HoldOutcome {
	k.metrics.holds[holdLeft].Inc()
	k.Withdraw(r.Token, r.SessionID, id, reason)
	_, _ = r.Rec.Emit(&sessionv1.Event{Body: &sessionv1.Event_Approval{Approval: &sessionv1.Approval{CommandId: r.CmdID, ApprovalId: id, State: "withdrawn", Reason: reason}}})
	return HoldOutcome{ID: id, Left: reason}
}

// AbandonedHold counts a held command nobody waits for any more that the
// protocol withdrew itself rather than through Hold or SettleHold (an MCP
// session that ended before its held calls were collected) as left.
func (k *Kernel) AbandonedHold() { k.metrics.holds[holdLeft].Inc() }

// Withdraw tells the approvals service that nobody waits for request id.
func (k *Kernel) Withdraw(token, session, id, reason string) {
	ctx, cancel := context.WithTimeout(bus.WithCallerToken(context.Background(), token), 5*time.Second)
	defer cancel()
	var reply approvalsv1.ApprovalReply
	err := bus.Request(ctx, k.cfg.Conn.NC, bus.APIApprovalsWithdraw, &approvalsv1.Withdraw{Id: id, SessionId: session, Reason: reason}, &reply)
	if err == nil && reply.GetError() != nil {
		err = fmt.Errorf("%s", reply.GetError().GetMessage())
	}
	if err != nil {
		// It still never runs: its session no longer waits for it.
		k.cfg.Log.Warn().Err(err).Str("session", session).Str("approval", id).Msg("held request not withdrawn; it expires unused")
	}
}
