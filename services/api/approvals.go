package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"google.golang.org/protobuf/proto"

	"sluice.dev/sluice/libs/bus"

	approvalsv1 "sluice.dev/sluice/proto/sluice/approvals/v1"
	commonv1 "sluice.dev/sluice/proto/sluice/common/v1"
)

func (s *Server) approvalRoutes() {
	s.handle("GET /api/v1/approvals", "approvals", anyone, s.approvalList)
	s.handle("GET /api/v1/approvals/events", "approval_events", anyone, s.approvalEvents)
	s.handle("GET /api/v1/approvals/{id}", "approval", anyone, s.approvalGet)
	s.handle("POST /api/v1/approvals/{id}/approve", "approve", anyone, s.decide("approve"))
	s.handle("POST /api/v1/approvals/{id}/deny", "deny", anyone, s.decide("deny"))
	s.handle("GET /api/v1/grants", "grants", anyone, s.grantList)
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
	Protocol    string `json:"protocol,omitempty"`
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
	// RequestID: a grant approved with a held command names it; GrantID: a
	// held command approved with a grant names that.
	RequestID string `json:"request_id,omitempty"`
	GrantID   string `json:"grant_id,omitempty"`
	// UpdatedAt is when it last changed; Retired says it has left the hot
	// view for the history.
	UpdatedAt *time.Time `json:"updated_at,omitempty"`
	Retired   bool       `json:"retired,omitempty"`
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
		Target: a.GetTarget(), Protocol: a.GetProtocol(), Session: a.GetSessionId(), Command: a.GetCommand(), CommandSize: a.GetCommandSize(),
		RequesterWaiting: a.GetType() == "command" && a.GetState() == "pending", Role: a.GetRole(), Rule: a.GetRule(), Reason: a.GetReason(),
		ApproverGroups: a.GetApproverGroups(), Quorum: a.GetQuorum(), ApprovedBy: a.GetApprovedBy(), DecidedBy: a.GetDecidedBy(),
		DecisionReason: a.GetDecisionReason(), CreatedAt: a.GetCreatedAt().AsTime().UTC(),
		ExpiresAt: ts(a.GetExpiresAt(), a.GetExpiresAt() != nil), StartsAt: ts(a.GetStartsAt(), a.GetStartsAt() != nil), EndsAt: ts(a.GetEndsAt(), a.GetEndsAt() != nil),
		RequestID: a.GetRequestId(), GrantID: a.GetGrantId(),
		UpdatedAt: ts(a.GetUpdatedAt(), a.GetUpdatedAt() != nil), Retired: a.GetRetired(),
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

// approvalList lists the requests and grants the caller may see in a state
// (default pending). Pending ones are all in one answer; for the others, the
// recent ones come first, then the history a page at a time: limit= (1 to
// 1000, default 100), and before= the "next" of the previous page.
func (s *Server) approvalList(w http.ResponseWriter, r *http.Request, p *commonv1.Principal) {
	q := r.URL.Query()
	limit := 0
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			writeError(w, http.StatusBadRequest, "bad_request", "limit is a number from 1 to 1000")
			return
		}
		limit = n
	}
	reply, ok := s.listApprovals(w, r, &approvalsv1.ListRequest{State: q.Get("state"), Limit: int32(limit), Before: q.Get("before")})
	if !ok {
		return
	}
	out := []ApprovalJSON{}
	for _, a := range reply.GetApprovals() {
		out = append(out, ApprovalToJSON(a))
	}
	writeJSON(w, http.StatusOK, map[string]any{"approvals": out, "next": reply.GetNext()})
}

// listApprovals asks the approvals service for the requests the caller may
// see; it answers the client itself when that fails.
func (s *Server) listApprovals(w http.ResponseWriter, r *http.Request, req *approvalsv1.ListRequest) (*approvalsv1.ListReply, bool) {
	var reply approvalsv1.ListReply
	if !s.call(w, r, bus.APIApprovalsList, req, &reply) {
		return nil, false
	}
	if e := reply.GetError(); e != nil {
		writeError(w, errorStatus(e.GetCode()), e.GetCode(), e.GetMessage())
		return nil, false
	}
	return &reply, true
}

// grantList lists grants the caller may see: by default those in force
// now (state=active); state=pending, approved, denied, revoked or all as for
// approvals. target= narrows to one target.
func (s *Server) grantList(w http.ResponseWriter, r *http.Request, _ *commonv1.Principal) {
	state := r.URL.Query().Get("state")
	if state == "" {
		state = "active"
	}
	ask := state
	if state == "active" {
		ask = "approved"
	}
	reply, ok := s.listApprovals(w, r, &approvalsv1.ListRequest{State: ask})
	if !ok {
		return
	}
	now := time.Now()
	target := r.URL.Query().Get("target")
	out := []ApprovalJSON{}
	for _, a := range reply.GetApprovals() {
		if a.GetType() != "grant" || (target != "" && a.GetTarget() != target) {
			continue
		}
		if state == "active" && (a.GetEndsAt() == nil || !now.Before(a.GetEndsAt().AsTime())) {
			continue
		}
		out = append(out, ApprovalToJSON(a))
	}
	writeJSON(w, http.StatusOK, map[string]any{"grants": out})
}

func (s *Server) approvalGet(w http.ResponseWriter, r *http.Request, _ *commonv1.Principal) {
	s.approvalReply(w, r, bus.APIApprovalsGet, &approvalsv1.Get{Id: r.PathValue("id")}, http.StatusOK)
}

type reasonBody struct {
	Reason string `json:"reason"`
}

// DecideJSON is the body of an approval or a denial. With an approval of a
// held command, Grant and For also grant the requester that role on the
// command's target in the command's session for that long (a Go duration).
type DecideJSON struct {
	Reason string `json:"reason"`
	Grant  string `json:"grant,omitempty"`
	For    string `json:"for,omitempty"`
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
		var body DecideJSON
		if !readJSON(w, r, &body) {
			return
		}
		req := &approvalsv1.Decide{Id: r.PathValue("id"), Verdict: verdict, Reason: body.Reason, GrantRole: body.Grant}
		if body.Grant != "" || body.For != "" {
			d, err := time.ParseDuration(body.For)
			if err != nil || d <= 0 || body.Grant == "" {
				writeError(w, http.StatusBadRequest, "bad_request", "a grant with an approval needs a role (grant) and a positive Go duration (for), such as 10m")
				return
			}
			req.GrantSeconds = int64(d / time.Second)
		}
		s.approvalReply(w, r, bus.APIApprovalsDecide, req, http.StatusOK)
	}
}

// GrantRequestJSON asks for time-boxed elevation.
type GrantRequestJSON struct {
	Target   string `json:"target"`
	Role     string `json:"role"`
	Duration string `json:"duration"`
	Reason   string `json:"reason"`
	// Session, when set, confines the grant to one of the caller's sessions.
	Session string `json:"session,omitempty"`
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
	s.approvalReply(w, r, bus.APIGrantsRequest, &approvalsv1.RequestGrant{Target: body.Target, Role: body.Role, DurationSeconds: int64(d.Seconds()), Reason: body.Reason, SessionId: body.Session}, http.StatusCreated)
}

func (s *Server) grantRevoke(w http.ResponseWriter, r *http.Request, p *commonv1.Principal) {
	var body reasonBody
	if !readJSON(w, r, &body) {
		return
	}
	s.approvalReply(w, r, bus.APIGrantsRevoke, &approvalsv1.Revoke{Id: r.PathValue("id"), Reason: body.Reason}, http.StatusOK)
}

// approvalEvents streams the approvals the caller may see in a state
// (default pending) as server-sent events: the whole list at once, then
// again whenever it changes, so that an inbox updates without reloading.
// The approvals service authorizes every look with the caller's token, so
// the stream ends with an error event once the token no longer holds.
func (s *Server) approvalEvents(w http.ResponseWriter, r *http.Request, _ *commonv1.Principal) {
	flusher, ok := w.(http.Flusher)
	if !ok {
		writeError(w, http.StatusInternalServerError, "internal", "streaming is not supported here")
		return
	}
	state := r.URL.Query().Get("state")
	if state == "" {
		state = "pending"
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	send := func(event string, v any) bool {
		b, err := json.Marshal(v)
		if err != nil {
			return false
		}
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, b); err != nil {
			return false
		}
		flusher.Flush()
		return true
	}
	poll := time.NewTicker(approvalEventsPoll)
	defer poll.Stop()
	var last []byte
	lastSent := time.Now()
	for {
		var reply approvalsv1.ListReply
		err := bus.Request(r.Context(), s.cfg.Conn.NC, bus.APIApprovalsList, &approvalsv1.ListRequest{State: state}, &reply)
		switch {
		case r.Context().Err() != nil:
			return
		case err != nil:
			// A moment without the service is not the end of the stream.
			s.cfg.Log.Debug().Err(err).Msg("approval events: the approvals service did not answer")
		case reply.GetError() != nil:
			send("error", map[string]string{"error": reply.GetError().GetCode(), "reason": reply.GetError().GetMessage()})
			return
		default:
			out := []ApprovalJSON{}
			for _, a := range reply.GetApprovals() {
				out = append(out, ApprovalToJSON(a))
			}
			b, _ := json.Marshal(out)
			if !bytes.Equal(b, last) {
				if !send("approvals", map[string]any{"approvals": out}) {
					return
				}
				last, lastSent = b, time.Now()
			}
		}
		if time.Since(lastSent) > 15*time.Second {
			if _, err := io.WriteString(w, ": keep-alive\n\n"); err != nil {
				return
			}
			flusher.Flush()
			lastSent = time.Now()
		}
		select {
		case <-r.Context().Done():
			return
		case <-poll.C:
		}
	}
}

// approvalEventsPoll is how often an approval stream looks for changes.
const approvalEventsPoll = time.Second
