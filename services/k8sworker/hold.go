package k8sworker

import (
	"context"
	"fmt"
	"strings"

	"sluice.dev/sluice/libs/gateway"
	approvalsv1 "sluice.dev/sluice/proto/sluice/approvals/v1"
	policyv1 "sluice.dev/sluice/proto/sluice/policy/v1"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
)

// review decides what becomes of a request the policy holds. kubectl
// cannot wait for a person, so a held request is refused at once with the
// approval to ask for; the same request (method, path, query and body),
// sent again by the same principal once approved, runs, once. It returns
// whether the request may run now, or what to tell the client.
func (s *session) review(ctx context.Context, d *policyv1.Decision, id uint64, text, shown, hash string) (string, bool) {
	w := s.w
	token := s.CallerToken()
	approved, pending := w.approvalFor(s, hash)
	if approved != nil {
		if refusal := w.k.Consume(ctx, token, approved.GetId(), approved.GetSessionId(), hash); refusal == "" {
			seq, err := s.emit(&sessionv1.Event{Body: &sessionv1.Event_Approval{Approval: &sessionv1.Approval{CommandId: id,
				ApprovalId: approved.GetId(), State: "consumed", Approvers: approved.GetApprovedBy(), Reason: approved.GetDecisionReason()}}})
			// The approval is the write-ahead record of what now runs.
			if err == nil && s.rec.WaitFor(ctx, seq) == nil {
				return "", true
			}
			return "sluice: the approved request could not be recorded; it did not run", false
		} else {
			s.denied.Add(1)
			return "sluice: " + refusal, false
		}
	}
	s.denied.Add(1)
	if pending != nil {
		_, _ = s.emit(&sessionv1.Event{Body: &sessionv1.Event_Approval{Approval: &sessionv1.Approval{CommandId: id,
			ApprovalId: pending.GetId(), State: "pending"}}})
		return held(pending.GetId(), d), false
	}
	approval, refusal := w.k.OpenHold(ctx, gateway.HoldRequest{SessionID: s.id, Token: token, Target: s.target.GetName(), Command: text,
		Shown: shown, Hash: hash, CmdID: id, Decision: d, Rec: s.rec})
	if approval == "" {
		return "sluice: " + refusal, false
	}
	return held(approval, d), false
}

func held(id string, d *policyv1.Decision) string {
	return fmt.Sprintf("sluice: held for approval %s (rule %q): %s. An approver (%s) runs: sluice approve %s; "+
		"then run the same command again: exactly this request runs, once", id, d.GetRule(), d.GetReason(), strings.Join(d.GetApprovers(), ", "), id)
}

// approvalFor finds this principal's approval for exactly this request on
// this target: one approved and unused, else one still pending.
func (w *Worker) approvalFor(s *session, hash string) (approved, pending *approvalsv1.Approval) {
	for _, a := range w.k.Approvals.List(func(a *approvalsv1.Approval) bool {
		return a.GetType() == "command" && a.GetProtocol() == "kubernetes" && a.GetTarget() == s.target.GetName() &&
			a.GetCommandHash() == hash && a.GetRequester().GetSubject() == s.principal.GetSubject() &&
			a.GetRequester().GetIssuer() == s.principal.GetIssuer()
	}) {
		switch a.GetState() {
		case "approved":
			approved = a
		case "pending":
			pending = a
		}
	}
	return approved, pending
}
