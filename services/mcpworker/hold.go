package mcpworker

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"sluice.dev/sluice/libs/gateway"
	policyv1 "sluice.dev/sluice/proto/sluice/policy/v1"
)

// MaxWait bounds how long one call waits for an approval before it answers
// pending; the agent collects the outcome later with collect_result.
const MaxWait = 120 * time.Second

// progressEvery is how often a waiting call tells a client that asked for
// progress that it still waits.
const progressEvery = 2 * time.Second

// held is a call waiting for its approval, in the session that made it.
type held struct {
	// busy: one call at a time collects it.
	busy  sync.Mutex
	id    string
	cmdID uint64
	call  *call
	d     *policyv1.Decision
	r     gateway.HoldRequest
}

// hold opens the approval request of a call the policy holds, and waits
// for the outcome as long as the caller asked (at most MaxWait).
func (w *Worker) hold(ctx context.Context, s *session, req *mcp.CallToolRequest, c *call, id uint64, d *policyv1.Decision, wait time.Duration) callResult {
	r := gateway.HoldRequest{
		SessionID: s.id, Token: s.CallerToken(), Target: c.target.GetName(), Command: c.text, Shown: c.shown, Unshown: c.unshown,
		Hash: gateway.CommandHash(c.hashKind+"\x00"+c.text, c.paramsHash), CmdID: id, Decision: d, Rec: s.rec,
	}
	s.mu.Lock()
	full := len(s.pending) >= w.cfg.MaxPending
	s.mu.Unlock()
	if full {
		s.denied.Add(1)
		return callResult{Status: statusRefused, Tool: c.tool, Target: c.target.GetName(), Decision: info(d), Error: &callError{Code: "too_many_held",
			Message: fmt.Sprintf("this MCP session already has %d held calls waiting to be collected; collect them first", w.cfg.MaxPending)}}
	}
	approval, refusal := w.k.OpenHold(ctx, r)
	if approval == "" {
		s.denied.Add(1)
		return callResult{Status: statusRefused, Tool: c.tool, Target: c.target.GetName(), Decision: info(d), Error: &callError{Code: "approval_unavailable", Message: refusal}}
	}
	h := &held{id: approval, cmdID: id, call: c, d: d, r: r}
	s.mu.Lock()
	s.pending[approval] = h
	s.mu.Unlock()
	return w.settle(ctx, s, req, h, wait)
}

// settle waits up to wait for a held call's outcome: it runs the call once
// approved, says why not when refused, and answers pending when the wait
// runs out first.
func (w *Worker) settle(ctx context.Context, s *session, req *mcp.CallToolRequest, h *held, wait time.Duration) callResult {
	if !h.busy.TryLock() {
		c := h.call
		return callResult{Status: statusPending, Tool: c.tool, Target: c.target.GetName(), Decision: info(h.d),
			Error: &callError{Code: "busy", Message: "another call is already waiting for this approval"}, Approval: &approvalInfo{ID: h.id, State: "pending"}}
	}
	defer h.busy.Unlock()
	wait = min(max(wait, 0), MaxWait)
	deadline := time.Now().Add(wait)
	progress := req.Params.GetProgressToken()
	step := wait
	if progress != nil {
		step = min(wait, progressEvery)
	}
	h.r.Token = s.CallerToken()
	for n := 1; ; n++ {
		out, pending := w.k.SettleHold(ctx, h.r, h.id, max(min(step, time.Until(deadline)), 0))
		if pending && time.Now().Before(deadline) && ctx.Err() == nil {
			if progress != nil {
				_ = req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{ProgressToken: progress, Progress: float64(n),
					Message: fmt.Sprintf("waiting for approval %s (approvers: %v)", h.id, h.d.GetApprovers())})
			}
			continue
		}
		if pending {
			return w.pendingResult(h)
		}
		s.mu.Lock()
		delete(s.pending, h.id)
		s.mu.Unlock()
		c := h.call
		switch {
		case out.RecordErr != nil:
			go s.End(gateway.EndShutdown, "the audit stream is not accepting records")
			return unavailable(c, "the audit stream is not accepting records; nothing runs unrecorded")
		case out.Left != "":
			return callResult{Status: statusRefused, Tool: c.tool, Target: c.target.GetName(), Decision: info(h.d),
				Error: &callError{Code: "withdrawn", Message: out.Left}}
		case !out.Approved:
			s.denied.Add(1)
			return callResult{Status: statusRefused, Tool: c.tool, Target: c.target.GetName(), Decision: info(h.d),
				Error: &callError{Code: "not_approved", Message: out.Refusal}, Approval: &approvalInfo{ID: h.id, State: w.approvalState(h.id)}}
		}
		if ended, why := s.isEnded(); ended {
			return failed(c, "session_ended", why)
		}
		res := c.run(ctx, h.cmdID, h.d)
		res.Decision = info(h.d)
		res.Approval = &approvalInfo{ID: h.id, State: "consumed"}
		return res
	}
}

func (w *Worker) approvalState(id string) string {
	if a, ok := w.k.Approvals.Get(id); ok {
		return a.GetState()
	}
	return ""
}

// pendingResult tells the agent what it waits for and how to go on.
func (w *Worker) pendingResult(h *held) callResult {
	c := h.call
	ai := &approvalInfo{ID: h.id, State: "pending", Rule: h.d.GetRule(), Reason: h.d.GetReason(),
		ApproverGroups: h.d.GetApprovers(), Quorum: max(h.d.GetQuorum(), 1), ApproveWith: "sluice approve " + h.id,
		CollectWith: &collectAt{Tool: toolCollect, Arguments: map[string]any{"approval_id": h.id, "wait_seconds": 60}}}
	if a, ok := w.k.Approvals.Get(h.id); ok && a.GetExpiresAt() != nil {
		t := a.GetExpiresAt().AsTime().UTC()
		ai.ExpiresAt = &t
	}
	return callResult{Status: statusPending, Tool: c.tool, Target: c.target.GetName(), Decision: info(h.d), Approval: ai}
}

// collect is collect_result: the outcome of a held call of this session.
func (w *Worker) collect(ctx context.Context, s *session, req *mcp.CallToolRequest, approvalID string, wait time.Duration) (callResult, bool) {
	ctx, stop := s.bind(ctx)
	defer stop()
	select {
	case s.running <- struct{}{}:
		defer func() { <-s.running }()
	default:
		return callResult{Status: statusError, Tool: toolCollect, Error: &callError{Code: "busy",
			Message: fmt.Sprintf("this MCP session already runs %d calls; wait for one to finish", maxRunning)}}, true
	}
	s.mu.Lock()
	h, ok := s.pending[approvalID]
	s.mu.Unlock()
	if !ok {
		return callResult{}, false
	}
	return w.settle(ctx, s, req, h, wait), true
}
