package api

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"sluice.dev/sluice/libs/auditchain"
	"sluice.dev/sluice/libs/auditlog"
	"sluice.dev/sluice/libs/sessionindex"
	commonv1 "sluice.dev/sluice/proto/sluice/common/v1"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
)

func (s *Server) auditRoutes() {
	s.handle("GET /api/v1/sessions", "sessions", auditors, s.sessions)
	s.handle("GET /api/v1/sessions/{id}", "session", auditors, s.session)
	s.handle("GET /api/v1/audit/verify", "audit_verify", auditors, s.auditVerify)
	s.handle("POST /api/v1/audit/verify", "audit_verify", auditors, s.auditVerify)
	s.handle("GET /api/v1/audit/anchor", "audit_anchor", auditors, s.auditAnchor)
	s.handle("GET /api/v1/audit/tail", "audit_tail", auditors, s.auditTail)
	s.handle("GET /api/v1/audit/keys", "audit_keys", anyone, s.auditKeys)
}

// SessionJSON is a session summary.
type SessionJSON struct {
	ID         string     `json:"id"`
	Principal  string     `json:"principal"`
	Machine    bool       `json:"machine"`
	Target     string     `json:"target"`
	Protocol   string     `json:"protocol"`
	Client     string     `json:"client"`
	StartedAt  time.Time  `json:"started_at"`
	EndedAt    *time.Time `json:"ended_at,omitempty"`
	Commands   int64      `json:"commands"`
	Denied     int64      `json:"denied"`
	Held       int64      `json:"held"`
	Masked     int64      `json:"masked"`
	EndReason  string     `json:"end_reason,omitempty"`
	WorkerName string     `json:"worker,omitempty"`
	// State is open, ended, or lost: its worker is gone without ending it
	// (Lost says how); its records stop where the worker stopped, and,
	// once every event the worker stored is in its chain, a lost record
	// closes the chain (EndedAt is then when).
	State string `json:"state"`
	Lost  string `json:"lost,omitempty"`
}

// lost says why a session that has not ended never will ("" if it may
// still, or the workers' presence is not loaded yet).
func (s *Server) lost(sum *sessionv1.Summary) string {
	if lost := sum.GetLost(); lost != "" {
		return lost // the recorder closed its chain so
	}
	select {
	case <-s.workersReady:
		return s.workers.Lost(sum)
	default:
		return ""
	}
}

// sessionJSON renders a summary; lost is why it will never end ("" if it
// is open or ended).
func sessionJSON(s *sessionv1.Summary, lost string) SessionJSON {
	out := SessionJSON{ID: s.GetSessionId(), Principal: s.GetPrincipal().GetSubject(), Machine: s.GetPrincipal().GetMachine(),
		Target: s.GetTarget().GetName(), Protocol: s.GetProtocol(), Client: s.GetClientAddr(), StartedAt: s.GetStartedAt().AsTime().UTC(),
		Commands: s.GetCommands(), Denied: s.GetDenied(), Held: s.GetHeld(), Masked: s.GetMasked(), EndReason: s.GetEndReason(), WorkerName: s.GetWorker(),
		State: "open"}
	switch {
	case s.GetLost() != "":
		// Ended without its worker: a lost record closed its chain.
		t := s.GetEndedAt().AsTime().UTC()
		out.EndedAt, out.State, out.Lost = &t, "lost", s.GetLost()
	case s.GetEndedAt() != nil:
		t := s.GetEndedAt().AsTime().UTC()
		out.EndedAt, out.State = &t, "ended"
	case lost != "":
		out.State, out.Lost = "lost", lost
	}
	return out
}

// parseTime accepts RFC 3339 or a duration back from now ("1h").
func parseTime(v string) (time.Time, bool) {
	if v == "" {
		return time.Time{}, true
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, true
	}
	if d, err := time.ParseDuration(v); err == nil {
		return time.Now().Add(-d), true
	}
	return time.Time{}, false
}

// sessions answers one page of the sessions read model, newest first;
// "next" is the cursor of the following page (before=).
func (s *Server) sessions(w http.ResponseWriter, r *http.Request, _ *commonv1.Principal) {
	q := r.URL.Query()
	since, ok1 := parseTime(q.Get("since"))
	until, ok2 := parseTime(q.Get("until"))
	limit, err := strconv.Atoi(q.Get("limit"))
	if q.Get("limit") == "" {
		limit, err = 100, nil
	}
	flags := map[string]bool{}
	okFlags := true
	for _, name := range []string{"denied", "held", "masked"} {
		switch q.Get(name) {
		case "true":
			flags[name] = true
		case "", "false":
		default:
			okFlags = false
		}
	}
	var keep func(*sessionv1.Summary) bool
	switch q.Get("state") {
	case "":
	case "open":
		keep = func(sum *sessionv1.Summary) bool { return sum.GetEndedAt() == nil && s.lost(sum) == "" }
	case "ended":
		keep = func(sum *sessionv1.Summary) bool { return sum.GetEndedAt() != nil && sum.GetLost() == "" }
	case "lost":
		keep = func(sum *sessionv1.Summary) bool { return s.lost(sum) != "" }
	default:
		okFlags = false
	}
	if !ok1 || !ok2 || err != nil || limit <= 0 || limit > 1000 || !okFlags {
		writeError(w, http.StatusBadRequest, "bad_request", "since/until take RFC 3339 times or durations (1h); limit a number from 1 to 1000; denied, held and masked true or false; state open, ended or lost")
		return
	}
	loading := time.After(5 * time.Second)
	for _, ready := range []chan struct{}{s.sessionsReady, s.workersReady} {
		select {
		case <-ready:
		case <-r.Context().Done():
			return
		case <-loading:
			writeError(w, http.StatusServiceUnavailable, "unavailable", "the session index is still loading; try again")
			return
		}
	}
	page := s.sessionIndex.Query(sessionindex.Query{Principal: q.Get("principal"), Target: q.Get("target"), Protocol: q.Get("protocol"),
		Since: since, Until: until, Denied: flags["denied"], Held: flags["held"], Masked: flags["masked"], Keep: keep, Before: q.Get("before"), Limit: limit})
	out := make([]SessionJSON, 0, len(page.Sessions))
	for _, sum := range page.Sessions {
		out = append(out, sessionJSON(sum, s.lost(sum)))
	}
	writeJSON(w, http.StatusOK, map[string]any{"sessions": out, "next": page.Next})
}

func (s *Server) session(w http.ResponseWriter, r *http.Request, _ *commonv1.Principal) {
	id := strings.ToLower(r.PathValue("id"))
	var entries []auditlog.Entry
	err := auditlog.Read(r.Context(), s.cfg.Conn.JS, auditlog.Options{Session: id}, func(e auditlog.Entry) error {
		entries = append(entries, e)
		return nil
	})
	if err != nil {
		s.unavailable(w, "the audit stream cannot be read", err)
		return
	}
	if len(entries) == 0 {
		writeError(w, http.StatusNotFound, "not_found", "no session "+id)
		return
	}
	if r.URL.Query().Get("format") == "asciicast" {
		var b bytes.Buffer
		if _, err := auditlog.Asciicast(&b, entries); err != nil {
			writeError(w, http.StatusInternalServerError, "internal", err.Error())
			return
		}
		w.Header().Set("Content-Type", "application/x-asciicast")
		_, _ = w.Write(b.Bytes())
		return
	}
	if r.URL.Query().Get("format") == "text" {
		var b bytes.Buffer
		auditlog.Transcript(&b, entries)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write(b.Bytes())
		return
	}
	events := make([]map[string]any, len(entries))
	for i, e := range entries {
		events[i] = auditlog.JSON(e)
	}
	writeJSON(w, http.StatusOK, map[string]any{"session": id, "events": events})
}

// VerifyJSON is the report of GET /api/v1/audit/verify.
type VerifyJSON struct {
	OK       bool                 `json:"ok"`
	Records  int                  `json:"records"`
	Events   int                  `json:"events"`
	Sessions int                  `json:"sessions"`
	Keys     []string             `json:"keys"`
	Problems []auditchain.Problem `json:"problems"`
}

// VerifyRequest is the body of POST /api/v1/audit/verify (GET takes
// ?session= and no anchor).
type VerifyRequest struct {
	Session string `json:"session,omitempty"`
	// Anchors are checkpoints kept outside the stream (one per recorder):
	// each must be in the stream, and the keys they pin are the only ones
	// trusted.
	Anchors []*auditchain.Anchor `json:"anchors,omitempty"`
}

func (s *Server) auditVerify(w http.ResponseWriter, r *http.Request, _ *commonv1.Principal) {
	req := VerifyRequest{Session: r.URL.Query().Get("session")}
	if r.Method == http.MethodPost && !readJSON(w, r, &req) {
		return
	}
	for _, a := range req.Anchors {
		if a == nil {
			writeError(w, http.StatusBadRequest, "bad_request", "anchors: null")
			return
		}
		if err := a.Check(); err != nil {
			writeError(w, http.StatusBadRequest, "bad_request", "anchor: "+err.Error())
			return
		}
	}
	keys, err := auditlog.Keys(r.Context(), s.cfg.Conn.JS)
	if err != nil {
		s.unavailable(w, "the recorder keys cannot be read", err)
		return
	}
	session := strings.ToLower(req.Session)
	v, problems, err := auditlog.Verify(r.Context(), s.cfg.Conn.JS, session, keys, req.Anchors...)
	if err != nil {
		s.unavailable(w, "the audit stream cannot be read", err)
		return
	}
	out := VerifyJSON{OK: len(problems) == 0, Records: v.Records, Events: v.Events, Sessions: len(v.Sessions()), Problems: problems}
	if out.Problems == nil {
		out.Problems = []auditchain.Problem{}
	}
	for k := range keys {
		out.Keys = append(out.Keys, k)
	}
	writeJSON(w, http.StatusOK, out)
}

// auditAnchor returns the anchor of the newest checkpoint, to keep outside
// the stream (see auditchain.Anchor).
func (s *Server) auditAnchor(w http.ResponseWriter, r *http.Request, _ *commonv1.Principal) {
	cp, seq, err := auditlog.LastCheckpoint(r.Context(), s.cfg.Conn.JS)
	if errors.Is(err, auditlog.ErrNoCheckpoint) {
		writeError(w, http.StatusNotFound, "not_found", "the audit stream holds no checkpoint yet")
		return
	}
	if err != nil {
		s.unavailable(w, "the audit stream cannot be read", err)
		return
	}
	keys, err := auditlog.Keys(r.Context(), s.cfg.Conn.JS)
	if err != nil {
		s.unavailable(w, "the recorder keys cannot be read", err)
		return
	}
	writeJSON(w, http.StatusOK, auditchain.AnchorOf(cp, seq, keys[cp.GetKeyId()]))
}

func (s *Server) auditKeys(w http.ResponseWriter, r *http.Request, _ *commonv1.Principal) {
	keys, err := auditlog.Keys(r.Context(), s.cfg.Conn.JS)
	if err != nil {
		s.unavailable(w, "the recorder keys cannot be read", err)
		return
	}
	out := map[string]string{}
	for id, k := range keys {
		out[id] = base64.StdEncoding.EncodeToString(k)
	}
	writeJSON(w, http.StatusOK, map[string]any{"keys": out})
}

// auditTail streams the audit log as newline-delimited JSON (or OCSF).
func (s *Server) auditTail(w http.ResponseWriter, r *http.Request, _ *commonv1.Principal) {
	q := r.URL.Query()
	format := q.Get("format")
	if format == "" {
		format = "json"
	}
	if format != "json" && format != "ocsf" {
		writeError(w, http.StatusBadRequest, "bad_request", "format is json or ocsf")
		return
	}
	since, ok := parseTime(q.Get("since"))
	startSeq, err := strconv.ParseUint(q.Get("start_seq"), 10, 64)
	if q.Get("start_seq") == "" {
		err = nil
	}
	if !ok || err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", "since takes an RFC 3339 time or a duration; start_seq a number")
		return
	}
	follow := q.Get("follow") == "true"
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	enc := json.NewEncoder(w)
	sc := auditlog.NewContext(s.cfg.Conn.JS)
	ctx := r.Context()
	_ = auditlog.Read(ctx, s.cfg.Conn.JS, auditlog.Options{StartSeq: startSeq, StartTime: since, Follow: follow}, func(e auditlog.Entry) error {
		var vs []any
		if format == "ocsf" {
			if e.Event == nil {
				return nil
			}
			for _, o := range auditlog.OCSFEntry(e, sc.Started(ctx, e)) {
				vs = append(vs, o)
			}
		} else {
			vs = append(vs, auditlog.JSON(e))
		}
		for _, v := range vs {
			if err := enc.Encode(v); err != nil {
				return err
			}
		}
		if flusher != nil {
			flusher.Flush()
		}
		return nil
	})
}
