package auditlog

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	policyv1 "sluice.dev/sluice/proto/sluice/policy/v1"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
)

// OCSF maps a session event to an OCSF event. started (the session's
// Started event, for principal, client and target) may be nil.
//
//	started, auth_failed, ended     Authentication (3002): Logon, Logon (failed), Logoff
//	token_renewed, renewal_refused  Authentication (3002): Other, "Token Renewal"
//	command, decided, result,       Datastore Activity (6005) by statement for PostgreSQL,
//	masking                         API Activity (6003) for the other protocols
//	approval                        API Activity (6003): open, await, consume, withdraw
//	io                              API Activity (6003): Other, "Terminal I/O"
//	a gap record (see OCSFEntry)    Base Event (0): Other, "Events lost"
func OCSF(ev *sessionv1.Event, started *sessionv1.Started) map[string]any {
	s := sessionEvent{ev: ev, started: started}
	var e ocsfEvent
	switch b := ev.GetBody().(type) {
	case *sessionv1.Event_Started:
		s.started = b.Started
		e = s.logon()
	case *sessionv1.Event_AuthFailed:
		e = s.authFailed(b.AuthFailed)
	case *sessionv1.Event_Ended:
		e = s.logoff(b.Ended)
	case *sessionv1.Event_Command:
		e = s.command(b.Command)
	case *sessionv1.Event_Decided:
		e = s.decided(b.Decided)
	case *sessionv1.Event_Result:
		e = s.result(b.Result)
	case *sessionv1.Event_Masking:
		e = s.masking(b.Masking)
	case *sessionv1.Event_Approval:
		e = s.approval(b.Approval)
	case *sessionv1.Event_Io:
		e = s.io(b.Io)
	case *sessionv1.Event_TokenRenewed:
		e = s.renewed(b.TokenRenewed)
	case *sessionv1.Event_RenewalRefused:
		e = s.renewalRefused(b.RenewalRefused)
	default:
		e = s.api(activityOther, "Unknown session event", "session.event")
	}
	return e
}

// OCSFAll maps a session event to its OCSF events: the event itself and,
// for a command that carries earlier commands' results, one event per
// result (uid "<event id>/result/<command id>", stable across retries).
func OCSFAll(ev *sessionv1.Event, started *sessionv1.Started) []map[string]any {
	out := []map[string]any{OCSF(ev, started)}
	for _, r := range ev.GetCommand().GetResults() {
		re := &sessionv1.Event{Id: fmt.Sprintf("%s/result/%d", ev.GetId(), r.GetCommandId()), SessionId: ev.GetSessionId(), Seq: ev.GetSeq(),
			Time: ev.GetTime(), Body: &sessionv1.Event_Result{Result: r}}
		out = append(out, OCSF(re, started))
	}
	return out
}

// OCSFEntry maps an entry of AUDIT to its OCSF events, with the entry's
// stream position under unmapped.stream_seq: a session event (see
// OCSFAll) or a gap record. started may be nil.
func OCSFEntry(e Entry, started *sessionv1.Started) []map[string]any {
	var out []map[string]any
	switch {
	case e.Event == nil && e.Record.GetLost() != "":
		out = []map[string]any{ocsfLost(e)}
	case e.Event == nil:
		out = []map[string]any{ocsfGap(e)}
	default:
		out = OCSFAll(e.Event, started)
	}
	for _, o := range out {
		ocsfEvent(o).unmapped()["stream_seq"] = e.StreamSeq
	}
	return out
}

// ocsfGap reports events a worker lost before the recorder had them: the
// chain goes on, and the SIEM learns what is missing.
func ocsfGap(e Entry) map[string]any {
	session := e.Record.GetSessionId()
	out := newEvent(baseEvent, activityOther, "Events lost", e.Time, fmt.Sprintf("gap-%s-%d", session, e.Seq), logAudit, "recorder")
	out.metadata()["correlation_uid"] = session
	out.metadata()["sequence"] = e.Seq
	out.severity(high)
	out.status(failure, "events never reached the recorder")
	out["message"] = fmt.Sprintf("events %d to %d of session %s never reached the recorder", e.Seq, e.Record.GetGapTo(), session)
	u := out.unmapped()
	u["session"], u["seq"], u["gap_to"] = session, e.Seq, e.Record.GetGapTo()
	return out
}

// ocsfLost reports a session whose worker is gone without ending it: the
// recorder closed its chain, and the SIEM learns that it ended, and how.
func ocsfLost(e Entry) map[string]any {
	session := e.Record.GetSessionId()
	out := newEvent(baseEvent, activityOther, "Session lost", e.Record.GetRecordedAt().AsTime(), fmt.Sprintf("lost-%s", session), logAudit, "recorder")
	out.metadata()["correlation_uid"] = session
	out.metadata()["sequence"] = e.Seq
	out.severity(medium)
	out.status(failure, "the session's worker is gone")
	out["message"] = fmt.Sprintf("session %s was lost: %s; nothing of it is recorded after event %d", session, e.Record.GetLost(), e.Seq-1)
	u := out.unmapped()
	u["session"], u["seq"], u["lost"] = session, e.Seq, e.Record.GetLost()
	return out
}

// sessionEvent maps one event of a session.
type sessionEvent struct {
	ev      *sessionv1.Event
	started *sessionv1.Started
}

func (s sessionEvent) protocol() string { return s.started.GetProtocol() }

func (s sessionEvent) base(c class, activity int, activityName string) ocsfEvent {
	e := newEvent(c, activity, activityName, s.ev.GetTime().AsTime(), s.ev.GetId(), logAudit, "recorder")
	md := e.metadata()
	md["correlation_uid"] = s.ev.GetSessionId()
	md["sequence"] = s.ev.GetSeq()
	return e
}

// user is the session's principal.
func (s sessionEvent) user() map[string]any { return userOf(s.started.GetPrincipal()) }

// actor is the session's principal in its session.
func (s sessionEvent) actor() map[string]any {
	sess := map[string]any{"uid": s.ev.GetSessionId(), "is_remote": true}
	if iss := s.started.GetPrincipal().GetIssuer(); iss != "" {
		sess["issuer"] = iss
	}
	if exp := s.started.GetPrincipal().GetExpiresAt(); exp != nil {
		sess["expiration_time"] = exp.AsTime().UnixMilli()
	}
	return map[string]any{"user": s.user(), "session": sess}
}

func (s sessionEvent) source() map[string]any { return endpointOf(s.started.GetClientAddr()) }

func (s sessionEvent) target() string { return s.started.GetTarget().GetName() }

// service is the target the session connects to.
func (s sessionEvent) service(name string) map[string]any {
	if name == "" {
		name = "unknown"
	}
	svc := map[string]any{"name": name, "uid": name}
	if l := s.started.GetTarget().GetLabels(); len(l) > 0 && name == s.target() {
		svc["labels"] = labels(l)
	}
	return svc
}

// authentication events.

func (s sessionEvent) logon() ocsfEvent {
	st := s.started
	e := s.base(authentication, logon, "")
	s.authFields(e, st.GetTarget().GetName())
	e["message"] = fmt.Sprintf("%s connected to %s over %s", st.GetPrincipal().GetSubject(), s.target(), st.GetProtocol())
	u := e.unmapped()
	u["protocol"], u["worker"] = st.GetProtocol(), st.GetWorker()
	for k, v := range map[string]string{"client_application": st.GetClientApplication(), "client_user": st.GetClientUser(),
		"tls_version": st.GetTlsVersion(), "tls_cipher": st.GetTlsCipher()} {
		if v != "" {
			u[k] = v
		}
	}
	return e
}

func (s sessionEvent) authFields(e ocsfEvent, target string) {
	e["user"], e["actor"], e["src_endpoint"] = s.user(), s.actor(), s.source()
	e["service"] = s.service(target)
	e["session"] = s.actor()["session"]
	// Every connection presents an access token from an OpenID provider.
	e["auth_protocol_id"], e["auth_protocol"] = 4, "OpenID"
	e["logon_type_id"], e["logon_type"] = 3, "Network"
	e["is_remote"] = true
}

func (s sessionEvent) authFailed(a *sessionv1.AuthFailed) ocsfEvent {
	e := s.base(authentication, logon, "")
	e.severity(medium)
	e.status(failure, a.GetReason())
	e["status_code"] = a.GetCode()
	e["user"] = unknownUser()
	e["src_endpoint"] = endpointOf(a.GetClientAddr())
	e["service"] = s.service(a.GetTarget())
	e["auth_protocol_id"], e["auth_protocol"] = 4, "OpenID"
	e["logon_type_id"], e["logon_type"] = 3, "Network"
	e["is_remote"] = true
	e["message"] = fmt.Sprintf("authentication failed from %s to %s over %s: %s: %s", a.GetClientAddr(), a.GetTarget(), a.GetProtocol(), a.GetCode(), a.GetReason())
	e.unmapped()["protocol"] = a.GetProtocol()
	return e
}

func (s sessionEvent) logoff(en *sessionv1.Ended) ocsfEvent {
	e := s.base(authentication, logoff, "")
	s.authFields(e, s.target())
	e["message"] = fmt.Sprintf("session ended (%s): %d command(s), %d denied", en.GetReason(), en.GetCommands(), en.GetDenied())
	u := e.unmapped()
	u["reason"], u["commands"], u["denied"] = en.GetReason(), en.GetCommands(), en.GetDenied()
	u["bytes_in"], u["bytes_out"] = en.GetBytesIn(), en.GetBytesOut()
	return e
}

// renewalActivity names the renewal of a session's token, which OCSF 1.1.0
// has no Authentication activity for (its renewals are Kerberos tickets).
const renewalActivity = "Token Renewal"

// renewed: the session's principal presented a fresher token of its own;
// the session now ends when that one expires.
func (s sessionEvent) renewed(r *sessionv1.TokenRenewed) ocsfEvent {
	e := s.base(authentication, activityOther, renewalActivity)
	s.authFields(e, s.target())
	sess := e["session"].(map[string]any)
	u := e.unmapped()
	if r.GetExpiresAt() != nil {
		sess["expiration_time"] = r.GetExpiresAt().AsTime().UnixMilli()
		u["expires_at"] = r.GetExpiresAt().AsTime().UTC().Format(time.RFC3339Nano)
	}
	if r.GetPreviousExpiresAt() != nil {
		u["previous_expires_at"] = r.GetPreviousExpiresAt().AsTime().UTC().Format(time.RFC3339Nano)
	}
	e["message"] = fmt.Sprintf("%s renewed session %s with a fresh token", s.started.GetPrincipal().GetSubject(), s.ev.GetSessionId())
	return e
}

// renewalRefused: a token presented to renew the session was refused; the
// session keeps the token it had. A token of another principal is an
// attempt on someone else's session.
func (s sessionEvent) renewalRefused(r *sessionv1.RenewalRefused) ocsfEvent {
	e := s.base(authentication, activityOther, renewalActivity)
	s.authFields(e, s.target())
	e.status(failure, r.GetReason())
	e["status_code"] = r.GetCode()
	e.severity(medium)
	if r.GetCode() == "forbidden" {
		e.severity(high)
	}
	u := e.unmapped()
	if r.GetSubject() != "" {
		u["presented_subject"], u["presented_issuer"] = r.GetSubject(), r.GetIssuer()
	}
	e["message"] = fmt.Sprintf("renewal of session %s refused: %s: %s", s.ev.GetSessionId(), r.GetCode(), r.GetReason())
	return e
}

// commands: Datastore Activity for PostgreSQL, API Activity for the
// protocols whose commands are API calls.

// statementActivity picks the Datastore Activity of a statement.
func statementActivity(kind, command string) int {
	c := strings.ToUpper(command)
	switch {
	case strings.HasPrefix(c, "INSERT") || strings.HasPrefix(c, "COPY") && kind == "write":
		return dsWrite
	case strings.HasPrefix(c, "UPDATE") || strings.HasPrefix(c, "MERGE"):
		return dsUpdate
	case strings.HasPrefix(c, "DELETE") || strings.HasPrefix(c, "DROP") || strings.HasPrefix(c, "TRUNCATE"):
		return dsDelete
	case strings.HasPrefix(c, "CREATE"):
		return dsCreate
	case kind == "write":
		return dsWrite
	default:
		return dsQuery
	}
}

// apiVerbActivity picks the API Activity of a Kubernetes-style verb.
func apiVerbActivity(verb string) int {
	switch strings.ToLower(verb) {
	// Kubernetes verbs and HTTP methods; SQL commands (an MCP call).
	case "get", "list", "watch", "read", "select", "show", "explain":
		return apiRead
	case "create", "post", "insert":
		return apiCreate
	case "update", "patch", "put", "merge":
		return apiUpdate
	case "delete", "deletecollection", "truncate":
		return apiDelete
	}
	return activityOther
}

// datastore starts a PostgreSQL event: the database is the target.
func (s sessionEvent) datastore(activity int, activityName string) ocsfEvent {
	e := s.base(datastoreActivity, activity, activityName)
	e["actor"], e["src_endpoint"] = s.actor(), s.source()
	name := s.target()
	if name == "" {
		name = "unknown"
	}
	e["database"] = map[string]any{"name": name, "uid": name, "type_id": 1, "type": "Relational"}
	e["type_id"], e["type"] = 1, "Database"
	return e
}

// api starts an event of a protocol whose commands are API calls.
func (s sessionEvent) api(activity int, activityName, operation string) ocsfEvent {
	e := s.base(apiActivity, activity, activityName)
	e["actor"], e["src_endpoint"] = s.actor(), s.source()
	api := map[string]any{"operation": operation}
	if p := s.protocol(); p != "" {
		api["service"] = map[string]any{"name": p}
	}
	e["api"] = api
	if t := s.target(); t != "" {
		e["resources"] = []map[string]any{{"type": "target", "uid": t, "name": t}}
	}
	return e
}

// commandEvent starts the event of a command, decided or not.
func (s sessionEvent) commandEvent(d *policyv1.Decision) ocsfEvent {
	kind, command := "", ""
	if st := d.GetStatements(); len(st) > 0 {
		kind, command = st[0].GetKind(), st[0].GetCommand()
	}
	if s.protocol() == "postgres" || s.protocol() == "" {
		e := s.datastore(statementActivity(kind, command), "")
		if t := firstTable(d); t != "" {
			e["table"] = map[string]any{"name": t, "uid": t}
		}
		return e
	}
	if command == "" {
		command = s.protocol() + ".command"
	}
	return s.api(apiVerbActivity(command), "Command", command)
}

func firstTable(d *policyv1.Decision) string {
	for _, st := range d.GetStatements() {
		if w := st.GetWrites(); len(w) > 0 {
			return w[0]
		}
		if r := st.GetReads(); len(r) > 0 {
			return r[0]
		}
	}
	return ""
}

func (s sessionEvent) command(c *sessionv1.Command) ocsfEvent {
	e := s.commandEvent(c.GetDecision())
	uid := fmt.Sprintf("%s/%d", s.ev.GetSessionId(), c.GetCommandId())
	if _, ok := e["database"]; ok {
		e["query_info"] = map[string]any{"uid": uid, "query_string": c.GetText()}
	}
	e["message"] = c.GetText()
	u := e.unmapped()
	u["command_id"] = c.GetCommandId()
	for k, v := range map[string]string{"via": c.GetVia(), "statement_name": c.GetStatementName(), "parameters_hash": c.GetParametersHash()} {
		if v != "" {
			u[k] = v
		}
	}
	if c.GetTextEscaped() {
		u["text_escaped"] = true
	}
	if t := c.GetTarget().GetName(); t != "" {
		// A session that spans targets (mcp) names each command's.
		u["target"] = t
	}
	if d := c.GetDecision(); d != nil {
		ruling(e, d, c.GetCached())
	}
	return e
}

func (s sessionEvent) decided(d *sessionv1.Decided) ocsfEvent {
	e := s.commandEvent(d.GetDecision())
	e.unmapped()["command_id"] = d.GetCommandId()
	ruling(e, d.GetDecision(), d.GetCached())
	e["message"] = fmt.Sprintf("command %d %s", d.GetCommandId(), rulingText(d.GetDecision()))
	return e
}

// Dispositions of a ruling, as OCSF names them.
const (
	dispositionAllowed = "Allowed"
	dispositionBlocked = "Blocked"
	dispositionHeld    = "Held for approval"
)

// ruling records how the policy ruled: the decision and the rule with its
// policy revision as the actor's authorization (where OCSF 1.1.0 puts an
// access decision), the outcome as status, the rest under unmapped.
func ruling(e ocsfEvent, d *policyv1.Decision, cached bool) {
	policy := map[string]any{"name": d.GetRule(), "uid": d.GetRule(), "version": strconv.FormatUint(d.GetRevision(), 10)}
	if d.GetRule() == "" {
		policy["name"], policy["uid"] = "none", "none"
	}
	if d.GetReason() != "" {
		policy["desc"] = d.GetReason()
	}
	if actor, ok := e["actor"].(map[string]any); ok {
		actor["authorizations"] = []map[string]any{{"decision": d.GetAction(), "policy": policy}}
	}
	disposition := dispositionAllowed
	switch d.GetAction() {
	case "allow":
	case "deny":
		disposition = dispositionBlocked
		e.status(failure, d.GetReason())
		e.severity(medium)
	case "review":
		disposition = dispositionHeld
		e.status(statusOther, dispositionHeld)
		if d.GetReason() != "" {
			e["status_detail"] = d.GetReason()
		}
		e.severity(low)
	default:
		// An action this version does not know: say so rather than guess.
		disposition = d.GetAction()
		e.status(statusOther, d.GetAction())
	}
	decision := map[string]any{"action": d.GetAction(), "rule": d.GetRule(), "revision": d.GetRevision(), "reason": d.GetReason(), "cached": cached}
	if len(d.GetApprovers()) > 0 {
		decision["approvers"], decision["quorum"] = d.GetApprovers(), d.GetQuorum()
	}
	if d.GetError() != nil {
		decision["error"] = d.GetError().GetCode()
	}
	u := e.unmapped()
	u["disposition"], u["decision"] = disposition, decision
	if st := d.GetStatements(); len(st) > 0 {
		var statements []map[string]any
		for _, s := range st {
			statements = append(statements, map[string]any{"kind": s.GetKind(), "command": s.GetCommand(), "reads": s.GetReads(), "writes": s.GetWrites()})
		}
		u["statements"] = statements
	}
}

func rulingText(d *policyv1.Decision) string {
	t := fmt.Sprintf("%s by rule %s (policy revision %d)", strings.ToUpper(d.GetAction()), d.GetRule(), d.GetRevision())
	if d.GetAction() != "allow" && d.GetReason() != "" {
		t += ": " + d.GetReason()
	}
	return t
}

func (s sessionEvent) result(r *sessionv1.Result) ocsfEvent {
	var e ocsfEvent
	if s.protocol() == "postgres" || s.protocol() == "" {
		e = s.datastore(statementActivity("", r.GetCommandTag()), "")
	} else {
		e = s.api(apiVerbActivity(r.GetCommandTag()), "Command result", s.protocol()+".result")
	}
	e["duration"] = r.GetDurationUs() / 1000
	e["message"] = fmt.Sprintf("command %d: %s, %d row(s)", r.GetCommandId(), r.GetCommandTag(), r.GetRows())
	if r.GetErrorCode() != "" {
		e.status(failure, r.GetErrorMessage())
		e["status_code"] = r.GetErrorCode()
		e["message"] = fmt.Sprintf("command %d: error %s: %s", r.GetCommandId(), r.GetErrorCode(), r.GetErrorMessage())
	}
	u := e.unmapped()
	u["command_id"], u["command_tag"], u["rows"], u["duration_us"] = r.GetCommandId(), r.GetCommandTag(), r.GetRows(), r.GetDurationUs()
	return e
}

// masking summarizes the values masked in what a command read.
func (s sessionEvent) masking(m *sessionv1.Masking) ocsfEvent {
	var e ocsfEvent
	if s.protocol() == "postgres" || s.protocol() == "" {
		e = s.datastore(dsRead, "")
	} else {
		e = s.api(apiRead, "", s.protocol()+".mask")
	}
	var total int64
	var counts []map[string]any
	for _, c := range m.GetCounts() {
		total += c.GetCount()
		field := c.GetField()
		if field == "" {
			field = c.GetColumn()
		}
		counts = append(counts, map[string]any{"column": c.GetColumn(), "field": field, "detector": c.GetDetector(), "count": c.GetCount()})
	}
	e["message"] = fmt.Sprintf("masked %d value(s) in the result of command %d", total, m.GetCommandId())
	u := e.unmapped()
	u["command_id"], u["masked"], u["masked_values"] = m.GetCommandId(), counts, total
	return e
}

// approval is the session's side of a held command: the worker opened a
// request, learned its outcome, consumed or withdrew it.
func (s sessionEvent) approval(a *sessionv1.Approval) ocsfEvent {
	activity, operation := apiRead, "approvals.request.await"
	switch a.GetState() {
	case "pending":
		activity, operation = apiCreate, "approvals.request.open"
	case "consumed":
		activity, operation = apiUpdate, "approvals.request.consume"
	case "withdrawn":
		activity, operation = apiDelete, "approvals.request.withdraw"
	}
	e := s.base(apiActivity, activity, "")
	e["actor"], e["src_endpoint"] = s.actor(), s.source()
	e["api"] = map[string]any{"operation": operation, "service": map[string]any{"name": "approvals"}}
	e["resources"] = []map[string]any{{"type": "approval_request", "uid": a.GetApprovalId(), "name": a.GetApprovalId(), "owner": s.user()}}
	msg := fmt.Sprintf("approval request %s for command %d of %s: %s", a.GetApprovalId(), a.GetCommandId(), s.started.GetPrincipal().GetSubject(), a.GetState())
	if len(a.GetApprovers()) > 0 {
		msg += " (approved by " + strings.Join(a.GetApprovers(), ", ") + ")"
	}
	if a.GetReason() != "" {
		msg += ": " + a.GetReason()
	}
	e["message"] = msg
	switch a.GetState() {
	case "denied", "expired":
		// The held command does not run.
		e.status(failure, orState(a.GetReason(), a.GetState()))
		e.severity(low)
	}
	approval := map[string]any{"id": a.GetApprovalId(), "state": a.GetState(), "command_id": a.GetCommandId(),
		"requester": s.started.GetPrincipal().GetSubject()}
	if len(a.GetApprovers()) > 0 {
		approval["approvers"] = a.GetApprovers()
	}
	if a.GetReason() != "" {
		approval["reason"] = a.GetReason()
	}
	e.unmapped()["approval"] = approval
	return e
}

func orState(reason, state string) string {
	if reason != "" {
		return reason
	}
	return "the request was " + state
}

// io records that terminal data passed, never the data: replaying it is
// the audit log's job, not the SIEM's.
func (s sessionEvent) io(t *sessionv1.TerminalIO) ocsfEvent {
	stream := map[string]string{"o": "output", "i": "input", "r": "resize"}[t.GetStream()]
	if stream == "" {
		stream = t.GetStream()
	}
	e := s.api(activityOther, "Terminal I/O", "terminal."+stream)
	size := t.GetSize()
	if size == 0 {
		size = int64(len(t.GetData()))
	}
	e["message"] = fmt.Sprintf("terminal %s: %d byte(s)", stream, size)
	u := e.unmapped()
	u["stream"], u["bytes"], u["offset_ms"] = stream, size, t.GetOffsetMs()
	return e
}
