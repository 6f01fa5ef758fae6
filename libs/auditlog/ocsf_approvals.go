package auditlog

import (
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	approvalsv1 "sluice.dev/sluice/proto/sluice/approvals/v1"
	commonv1 "sluice.dev/sluice/proto/sluice/common/v1"
)

// Who sends each approvals request: NATS lets only workers open, consume
// and withdraw, only the API decide for a verified caller, request and
// revoke grants, and only the Slack bot decide for a Slack user.
const (
	fromWorker    = "pgworker"
	fromAPI       = "api"
	fromSlack     = "slack"
	fromApprovals = "approvals"
)

// approvalFact maps an APPROVALS event: the actor is whoever acted (the
// requester, the approver, the revoker, or the approvals service for an
// expiry), the resource is the request or grant, and unmapped.approval
// holds the decision with the request it decides.
func approvalFact(f Fact, m proto.Message, req *approvalsv1.Approval) ocsfEvent {
	a := approvalFields(f, req)
	var e ocsfEvent
	actor := func(p *commonv1.Principal) { e["actor"] = map[string]any{"user": userOf(p)} }
	switch ev := m.(type) {
	case *approvalsv1.RequestOpened:
		e = factEvent(f, apiCreate, "", "approvals.request.open", "")
		actor(ev.GetRequester())
		e["actor"].(map[string]any)["session"] = map[string]any{"uid": ev.GetSessionId()}
		e["src_endpoint"] = serviceEndpoint(fromWorker)
		a["decision"] = "open"
		e["message"] = fmt.Sprintf("%s asked for approval of a command on %s (request %s, rule %s): %s",
			ev.GetRequester().GetSubject(), ev.GetTarget(), ev.GetId(), ev.GetRule(), oneLine(ev.GetCommand()))
	case *approvalsv1.RequestApproved:
		e = decisionEvent(f, a, ev.GetApprover(), "approve", ev.GetReason(), ev.GetGranted())
	case *approvalsv1.RequestDenied:
		e = decisionEvent(f, a, ev.GetApprover(), "deny", ev.GetReason(), false)
	case *approvalsv1.GrantApproved:
		e = decisionEvent(f, a, ev.GetApprover(), "approve", ev.GetReason(), ev.GetGranted())
		setTime(a, "starts_at", ev.GetStartsAt())
		setTime(a, "ends_at", ev.GetEndsAt())
	case *approvalsv1.GrantDenied:
		e = decisionEvent(f, a, ev.GetApprover(), "deny", ev.GetReason(), false)
	case *approvalsv1.RequestExpired:
		e = factEvent(f, apiUpdate, "", "approvals."+f.Event.Aggregate+".expire", "")
		e["actor"] = map[string]any{"user": systemUser(fromApprovals), "invoked_by": fromApprovals}
		e["src_endpoint"] = serviceEndpoint(fromApprovals)
		a["decision"], a["state"] = "expire", "expired"
		e["message"] = fmt.Sprintf("%s expired undecided", describe(a))
	case *approvalsv1.RequestWithdrawn:
		e = factEvent(f, apiDelete, "", "approvals.request.withdraw", "")
		e["actor"] = map[string]any{"user": userOf(req.GetRequester()), "session": map[string]any{"uid": ev.GetSessionId()}}
		e["src_endpoint"] = serviceEndpoint(fromWorker)
		if ev.GetSupersededBy() != "" {
			// The approvals service withdrew it when the requester sent the
			// same statement again.
			e["actor"].(map[string]any)["invoked_by"] = fromApprovals
			e["src_endpoint"] = serviceEndpoint(fromApprovals)
			a["superseded_by"] = ev.GetSupersededBy()
		}
		a["decision"], a["state"], a["reason"] = "withdraw", "withdrawn", ev.GetReason()
		e["message"] = fmt.Sprintf("%s withdrawn: %s", describe(a), ev.GetReason())
	case *approvalsv1.RequestConsumed:
		e = factEvent(f, apiUpdate, "", "approvals.request.consume", "")
		e["actor"] = map[string]any{"user": userOf(req.GetRequester()), "session": map[string]any{"uid": ev.GetSessionId()}}
		e["src_endpoint"] = serviceEndpoint(fromWorker)
		a["decision"], a["state"] = "consume", "consumed"
		e["message"] = fmt.Sprintf("%s used: the approved command ran", describe(a))
	case *approvalsv1.GrantRequested:
		e = factEvent(f, apiCreate, "", "approvals.grant.request", "")
		actor(ev.GetRequester())
		e["src_endpoint"] = serviceEndpoint(fromAPI)
		a["decision"] = "request"
		e["message"] = fmt.Sprintf("%s asked for role %s on %s for %s (grant %s): %s", ev.GetRequester().GetSubject(), ev.GetRole(),
			ev.GetTarget(), time.Duration(ev.GetDurationSeconds())*time.Second, ev.GetId(), ev.GetReason())
	case *approvalsv1.GrantRevoked:
		e = factEvent(f, apiDelete, "", "approvals.grant.revoke", "")
		actor(ev.GetBy())
		e["src_endpoint"] = serviceEndpoint(fromAPI)
		e.severity(low)
		a["decision"], a["state"], a["reason"], a["revoked_by"] = "revoke", "revoked", ev.GetReason(), ev.GetBy().GetSubject()
		e["message"] = fmt.Sprintf("%s revoked %s: %s", ev.GetBy().GetSubject(), describe(a), ev.GetReason())
	default:
		return unknownFact(f, "not an approvals event")
	}
	resource := map[string]any{"type": map[string]string{"request": "approval_request", "grant": "grant"}[f.Event.Aggregate],
		"uid": f.Event.AggregateID, "name": f.Event.AggregateID}
	if r := req.GetRequester(); r != nil {
		resource["owner"] = userOf(r)
	}
	if t := req.GetTarget(); t != "" {
		resource["labels"] = []string{"target=" + t}
	}
	e["resources"] = []map[string]any{resource}
	e.unmapped()["approval"] = a
	return e
}

// decisionEvent is an approver's vote: approve or deny, with its reason.
func decisionEvent(f Fact, a map[string]any, approver *commonv1.Principal, verdict, reason string, granted bool) ocsfEvent {
	e := factEvent(f, apiUpdate, "", "approvals.request.decide", "")
	e["actor"] = map[string]any{"user": userOf(approver)}
	from := fromAPI
	if approver.GetClientId() == "slack" {
		from = fromSlack
	}
	e["src_endpoint"] = serviceEndpoint(from)
	a["decision"], a["approver"], a["reason"] = verdict, approver.GetSubject(), reason
	switch {
	case verdict == "deny":
		a["state"] = "denied"
		e.severity(low)
		e["message"] = fmt.Sprintf("%s denied %s: %s", approver.GetSubject(), describe(a), orNone(reason))
	case granted:
		a["state"], a["granted"] = "approved", true
		e["message"] = fmt.Sprintf("%s approved %s: %s", approver.GetSubject(), describe(a), orNone(reason))
	default:
		a["state"], a["granted"] = "pending", false
		e["message"] = fmt.Sprintf("%s voted to approve %s (more votes needed): %s", approver.GetSubject(), describe(a), orNone(reason))
	}
	return e
}

// approvalFields are what the request or grant asked for.
func approvalFields(f Fact, req *approvalsv1.Approval) map[string]any {
	a := map[string]any{"id": f.Event.AggregateID, "kind": map[string]string{"request": "command", "grant": "grant"}[f.Event.Aggregate],
		"event": f.Event.Name, "state": "pending"}
	if req == nil {
		return a
	}
	set := func(k, v string) {
		if v != "" {
			a[k] = v
		}
	}
	set("requester", req.GetRequester().GetSubject())
	set("target", req.GetTarget())
	set("session", req.GetSessionId())
	set("command", req.GetCommand())
	set("command_hash", req.GetCommandHash())
	set("rule", req.GetRule())
	set("request_reason", req.GetReason())
	set("role", req.GetRole())
	if req.GetDurationSeconds() > 0 {
		a["duration_seconds"] = req.GetDurationSeconds()
	}
	if len(req.GetApproverGroups()) > 0 {
		a["approver_groups"], a["quorum"] = req.GetApproverGroups(), req.GetQuorum()
	}
	setTime(a, "expires_at", req.GetExpiresAt())
	return a
}

func setTime(a map[string]any, k string, t *timestamppb.Timestamp) {
	if t != nil {
		a[k] = t.AsTime().UTC().Format(time.RFC3339Nano)
	}
}

// describe names a request or grant for a message: what was asked, by
// whom, where.
func describe(a map[string]any) string {
	var b strings.Builder
	if a["kind"] == "grant" {
		fmt.Fprintf(&b, "grant %s", a["id"])
		if role, ok := a["role"]; ok {
			fmt.Fprintf(&b, " of role %s", role)
		}
	} else {
		fmt.Fprintf(&b, "request %s", a["id"])
	}
	if r, ok := a["requester"]; ok {
		fmt.Fprintf(&b, " by %s", r)
	}
	if t, ok := a["target"]; ok {
		fmt.Fprintf(&b, " on %s", t)
	}
	if c, ok := a["command"].(string); ok {
		fmt.Fprintf(&b, " (%s)", oneLine(c))
	}
	return b.String()
}

func orNone(s string) string {
	if s == "" {
		return "no reason given"
	}
	return s
}
