package api

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"sluice.dev/sluice/libs/bus"
	commonv1 "sluice.dev/sluice/proto/sluice/common/v1"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
)

// POST /api/v1/sessions/{id}/renew extends a live session with the bearer
// token, a fresh one of the session's own principal. The token is the whole
// authorization (no role is needed): the API passes it to the worker
// replica that holds the session, which verifies it itself and accepts only
// the principal the session started with, recording every attempt.

func (s *Server) renewRoutes() {
	s.handle("POST /api/v1/sessions/{id}/renew", "session_renew", anyone, s.renewSession)
	s.handle("POST /api/v1/sessions/{id}/kill", "session_kill", admins, s.killSession)
}

// killSession ends a live session, of any protocol: the API passes the
// caller's token to every worker replica; the one that holds the session
// verifies the caller is an administrator itself and ends it, telling the
// client why. The session's Ended event names who ended it.
func (s *Server) killSession(w http.ResponseWriter, r *http.Request, _ *commonv1.Principal) {
	id, ok := liveSessionID(w, r)
	if !ok {
		return
	}
	var body reasonBody
	if !readJSON(w, r, &body) {
		return
	}
	var reply sessionv1.KillReply
	if !s.askHolder(w, r, id, bus.SubjectKill, &sessionv1.KillRequest{SessionId: id, Reason: body.Reason}, &reply, "nothing to end") {
		return
	}
	if e := reply.GetError(); e != nil {
		writeError(w, errorStatus(e.GetCode()), e.GetCode(), e.GetMessage())
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"session": id, "ended": true})
}

// RenewJSON is the answer of a renewal.
type RenewJSON struct {
	Session   string    `json:"session"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
}

func (s *Server) renewSession(w http.ResponseWriter, r *http.Request, _ *commonv1.Principal) {
	id, ok := liveSessionID(w, r)
	if !ok {
		return
	}
	var reply sessionv1.RenewReply
	if !s.askHolder(w, r, id, bus.SubjectPGRenew, &sessionv1.RenewRequest{SessionId: id}, &reply, "start a new one") {
		return
	}
	if e := reply.GetError(); e != nil {
		writeError(w, renewStatus(e.GetCode()), e.GetCode(), e.GetMessage())
		return
	}
	out := RenewJSON{Session: id}
	if reply.GetExpiresAt() != nil {
		out.ExpiresAt = reply.GetExpiresAt().AsTime().UTC()
	}
	writeJSON(w, http.StatusOK, out)
}

// liveSessionID is the session id of the request's path; it answers the
// client itself and reports false when the id cannot be one.
func liveSessionID(w http.ResponseWriter, r *http.Request) (string, bool) {
	id := strings.ToLower(r.PathValue("id"))
	if !sessionID(id) {
		writeError(w, http.StatusBadRequest, "bad_request", "a session id is a ULID (sluice sessions list shows them; psql: the sluice.session_id parameter)")
		return "", false
	}
	return id, true
}

// askHolder sends req about session id to every worker replica on
// subject; only the one that holds the session answers (the others stay
// silent), into reply. The recorder's index tells an ended session at once
// (the client is told so, and ended says what that means), and how long an
// answer is worth waiting for: a session it does not know yet is a few
// seconds old at most, or does not exist. It answers the client itself and
// reports false when no answer came.
func (s *Server) askHolder(w http.ResponseWriter, r *http.Request, id, subject string, req, reply proto.Message, ended string) bool {
	wait := 3 * time.Second
	sum, known := s.sessionSummary(r.Context(), id)
	if known {
		if lost := sum.GetLost(); lost != "" {
			writeError(w, http.StatusGone, "session_lost", "the session is lost ("+lost+"); "+ended)
			return false
		}
		if sum.GetEndedAt() != nil {
			writeError(w, http.StatusGone, "session_ended", "the session has ended ("+sum.GetEndReason()+"); "+ended)
			return false
		}
		wait = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(r.Context(), wait)
	defer cancel()
	err := bus.Request(ctx, s.cfg.Conn.NC, subject, req, reply)
	switch {
	case errors.Is(err, bus.ErrNoResponders):
		writeError(w, http.StatusServiceUnavailable, "service_unavailable", "no worker is running")
		return false
	case err != nil:
		// The holder is asked all the same: only its silence is proof
		// (the presence this replica follows could be behind).
		if why := s.lost(sum); why != "" {
			writeError(w, http.StatusGone, "session_lost", "the session is lost ("+why+"); "+ended)
		} else {
			writeError(w, http.StatusNotFound, "not_found", "no worker holds an open session "+id)
		}
		return false
	}
	return true
}

// renewStatus maps a worker's refusal to an HTTP status.
func renewStatus(code string) int {
	switch code {
	case "session_ended":
		return http.StatusGone
	case "principal_changed", "not_later":
		return http.StatusConflict
	}
	return errorStatus(code)
}

// sessionSummary reads the recorder's index entry of a session.
func (s *Server) sessionSummary(ctx context.Context, id string) (*sessionv1.Summary, bool) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	kv, err := s.cfg.Conn.JS.KeyValue(ctx, bus.BucketSessions)
	if err != nil {
		return nil, false
	}
	e, err := kv.Get(ctx, id)
	if err != nil {
		if !errors.Is(err, jetstream.ErrKeyNotFound) {
			s.cfg.Log.Debug().Err(err).Msg("session index unreadable")
		}
		return nil, false
	}
	var sum sessionv1.Summary
	if proto.Unmarshal(e.Value(), &sum) != nil {
		return nil, false
	}
	return &sum, true
}

// sessionID reports whether id can be a session id: a lowercase ULID.
func sessionID(id string) bool {
	if len(id) != 26 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'z') {
			return false
		}
	}
	return true
}
