package api

import (
	"encoding/json"
	"io"
	"net/http"
	"time"

	"google.golang.org/protobuf/proto"

	"sluice.dev/sluice/libs/bus"

	approvalsv1 "sluice.dev/sluice/proto/sluice/approvals/v1"
	commonv1 "sluice.dev/sluice/proto/sluice/common/v1"
)

func (s *Server) approvalRoutes() {
	s.handle("GET /api/v1/approvals", "approvals", anyone, s.approvalList)
	s.handle("GET /api/v1/approvals/{id}", "approval", anyone, s.approvalGet)
	s.handle("POST /api/v1/approvals/{id}/approve", "approve", anyone, s.decide("approve"))
	s.handle("POST /api/v1/approvals/{id}/deny", "deny", anyone, s.decide("deny"))
	s.handle("POST /api/v1/grants", "grant_request", anyone, s.grantRequest)
	s.handle("POST /api/v1/grants/{id}/revoke", "grant_revoke", anyone, s.grantRevoke)
}

// ApprovalJSON is an approval request or grant as the API shows it.
type ApprovalJSON struct {
	ID          string `json:"id"`
	Type        string `json:"type"`
	State       string `json:"state"`
	Requester   string `json:"requester"`
	Machine     bool   `json:"machine"`
	Target      string `json:"target"`
	Session     string `json:"session,omitempty"`
	Command     string `json:"command,omitempty"`
	CommandSize int64  `json:"command_size,omitempty"`
	// RequesterWaiting: a held command's client is connected and waiting
	// (a request is withdrawn the moment its client leaves).
	RequesterWaiting bool       `json:"requester_waiting"`
	Role             string     `json:"role,omitempty"`
	Rule             string     `json:"rule,omitempty"`
	Reason           string     `json:"reason,omitempty"`
	ApproverGroups   []string   `json:"approver_groups"`
	Quorum           uint32     `json:"quorum"`
	ApprovedBy       []string   `json:"approved_by,omitempty"`
	DecidedBy        string     `json:"decided_by,omitempty"`
	DecisionReason   string     `json:"decision_reason,omitempty"`
	CreatedAt        time.Time  `json:"created_at"`
	ExpiresAt        *time.Time `json:"expires_at,omitempty"`
	StartsAt         *time.Time `json:"starts_at,omitempty"`
	EndsAt           *time.Time `json:"ends_at,omitempty"`
}

func ts(t interface{ AsTime() time.Time }, set bool) *time.Time {
	if !set {
		return nil
	}
	v := t.AsTime().UTC()
	return &v
}

// ApprovalToJSON converts an approval.
func ApprovalToJSON(a *approvalsv1.Approval) ApprovalJSON {
	return ApprovalJSON{
		ID: a.GetId(), Type: a.GetType(), State: a.GetState(), Requester: a.GetRequester().GetSubject(), Machine: a.GetRequester().GetMachine(),
		Target: a.GetTarget(), Session: a.GetSessionId(), Command: a.GetCommand(), CommandSize: a.GetCommandSize(),
		RequesterWaiting: a.GetType() == "command" && a.GetState() == "pending", Role: a.GetRole(), Rule: a.GetRule(), Reason: a.GetReason(),
		ApproverGroups: a.GetApproverGroups(), Quorum: a.GetQuorum(), ApprovedBy: a.GetApprovedBy(), DecidedBy: a.GetDecidedBy(),
		DecisionReason: a.GetDecisionReason(), CreatedAt: a.GetCreatedAt().AsTime().UTC(),
		ExpiresAt: ts(a.GetExpiresAt(), a.GetExpiresAt() != nil), StartsAt: ts(a.GetStartsAt(), a.GetStartsAt() != nil), EndsAt: ts(a.GetEndsAt(), a.GetEndsAt() != nil),
	}
}

func (s *Server) approvalReply(w http.ResponseWriter, r *http.Request, subject string, req proto.Message, status int) {
	var reply approvalsv1.ApprovalReply
	if !s.call(w, r, subject, req, &reply) {
		return
	}
	if e := reply.GetError(); e != nil {
		writeError(w, errorStatus(e.GetCode()), e.GetCode(), e.GetMessage())
		return
	}
	writeJSON(w, status, ApprovalToJSON(reply.GetApproval()))
}

func (s *Server) approvalList(w http.ResponseWriter, r *http.Request, p *commonv1.Principal) {
	var reply approvalsv1.ListReply
	if !s.call(w, r, bus.APIApprovalsList, &approvalsv1.ListRequest{State: r.URL.Query().Get("state")}, &reply) {
		return
	}
	if e := reply.GetError(); e != nil {
		writeError(w, errorStatus(e.GetCode()), e.GetCode(), e.GetMessage())
		return
	}
	out := []ApprovalJSON{}
	for _, a := range reply.GetApprovals() {
		out = append(out, ApprovalToJSON(a))
	}
	writeJSON(w, http.StatusOK, map[string]any{"approvals": out})
}

func (s *Server) approvalGet(w http.ResponseWriter, r *http.Request, _ *commonv1.Principal) {
	s.approvalReply(w, r, bus.APIApprovalsGet, &approvalsv1.Get{Id: r.PathValue("id")}, http.StatusOK)
}

type reasonBody struct {
	Reason string `json:"reason"`
}

func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	if err == nil && len(b) > 0 {
		err = json.Unmarshal(b, v)
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", "the body must be JSON")
		return false
	}
	return true
}

func (s *Server) decide(verdict string) func(http.ResponseWriter, *http.Request, *commonv1.Principal) {
	return func(w http.ResponseWriter, r *http.Request, p *commonv1.Principal) {
		var body reasonBody
		if !readJSON(w, r, &body) {
			return
		}
		s.approvalReply(w, r, bus.APIApprovalsDecide, &approvalsv1.Decide{Id: r.PathValue("id"), Verdict: verdict, Reason: body.Reason}, http.StatusOK)
	}
}

// GrantRequestJSON asks for time-boxed elevation.
type GrantRequestJSON struct {
	Target   string `json:"target"`
	Role     string `json:"role"`
	Duration string `json:"duration"`
	Reason   string `json:"reason"`
}

func (s *Server) grantRequest(w http.ResponseWriter, r *http.Request, p *commonv1.Principal) {
	var body GrantRequestJSON
	if !readJSON(w, r, &body) {
		return
	}
	d, err := time.ParseDuration(body.Duration)
	if err != nil || d <= 0 {
		writeError(w, http.StatusBadRequest, "bad_request", "duration is a positive Go duration such as 30m")
		return
	}
	s.approvalReply(w, r, bus.APIGrantsRequest, &approvalsv1.RequestGrant{Target: body.Target, Role: body.Role, DurationSeconds: int64(d.Seconds()), Reason: body.Reason}, http.StatusCreated)
}

func (s *Server) grantRevoke(w http.ResponseWriter, r *http.Request, p *commonv1.Principal) {
	var body reasonBody
	if !readJSON(w, r, &body) {
		return
	}
	s.approvalReply(w, r, bus.APIGrantsRevoke, &approvalsv1.Revoke{Id: r.PathValue("id"), Reason: body.Reason}, http.StatusOK)
}
