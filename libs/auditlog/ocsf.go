package auditlog

import (
	"fmt"
	"strings"

	commonv1 "sluice.dev/sluice/proto/sluice/common/v1"
	policyv1 "sluice.dev/sluice/proto/sluice/policy/v1"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
)

// OCSF classes used (schema 1.1 and later).
const (
	classAuthentication = 3002
	classSSHActivity    = 4007
	classAPIActivity    = 6003
	classDatastore      = 6005
	ocsfVersion         = "1.3.0"
)

type ocsfClass struct {
	class, category         int
	className, categoryName string
}

var (
	authentication = ocsfClass{classAuthentication, 3, "Authentication", "Identity & Access Management"}
	sshActivity    = ocsfClass{classSSHActivity, 4, "SSH Activity", "Network Activity"}
	apiActivity    = ocsfClass{classAPIActivity, 6, "API Activity", "Application Activity"}
	datastore      = ocsfClass{classDatastore, 6, "Datastore Activity", "Application Activity"}
)

// OCSF maps a session event to an OCSF event. started (the session's
// Started event, for principal and target) may be nil. metadata.uid is the
// event id, stable across redeliveries, so a SIEM can deduplicate.
func OCSF(ev *sessionv1.Event, started *sessionv1.Started) map[string]any {
	out := map[string]any{
		"time": ev.GetTime().AsTime().UnixMilli(),
		"metadata": map[string]any{
			"uid":             ev.GetId(),
			"version":         ocsfVersion,
			"product":         map[string]any{"name": "Sluice", "vendor_name": "Sluice"},
			"correlation_uid": ev.GetSessionId(),
			"sequence":        ev.GetSeq(),
		},
		"severity_id": 1,
		"severity":    "Informational",
		"status_id":   1,
		"status":      "Success",
	}
	set := func(c ocsfClass, activity int, activityName string) {
		out["class_uid"], out["class_name"] = c.class, c.className
		out["category_uid"], out["category_name"] = c.category, c.categoryName
		out["activity_id"], out["activity_name"] = activity, activityName
		out["type_uid"] = c.class*100 + activity
	}
	protocol := started.GetProtocol()
	if started != nil {
		out["actor"] = map[string]any{"user": user(started.GetPrincipal()), "session": map[string]any{"uid": ev.GetSessionId()}}
		out["src_endpoint"] = map[string]any{"ip": hostOf(started.GetClientAddr())}
		if protocol == "postgres" {
			out["database"] = map[string]any{"name": started.GetTarget().GetName(), "type": "PostgreSQL"}
		}
	}
	switch b := ev.GetBody().(type) {
	case *sessionv1.Event_Started:
		set(authentication, 1, "Logon")
		out["user"] = user(b.Started.GetPrincipal())
		out["service"] = map[string]any{"name": b.Started.GetTarget().GetName()}
		out["auth_protocol"] = "OIDC"
	case *sessionv1.Event_AuthFailed:
		set(authentication, 1, "Logon")
		out["status_id"], out["status"] = 2, "Failure"
		out["status_code"], out["status_detail"] = b.AuthFailed.GetCode(), b.AuthFailed.GetReason()
		out["src_endpoint"] = map[string]any{"ip": hostOf(b.AuthFailed.GetClientAddr())}
		out["service"] = map[string]any{"name": b.AuthFailed.GetTarget()}
		out["auth_protocol"] = "OIDC"
		out["severity_id"], out["severity"] = 3, "Medium"
	case *sessionv1.Event_Ended:
		set(authentication, 2, "Logoff")
		out["message"] = b.Ended.GetReason()
	case *sessionv1.Event_Command:
		kind, command := "", ""
		if d := b.Command.GetDecision(); d != nil {
			if len(d.GetStatements()) > 0 {
				kind, command = d.GetStatements()[0].GetKind(), d.GetStatements()[0].GetCommand()
			}
			disposition(out, d)
		}
		activity(protocol, set, kind, command)
		out["message"] = b.Command.GetText()
		if protocol == "postgres" {
			out["query_info"] = map[string]any{"query_string": b.Command.GetText()}
		} else {
			out["command_line"] = b.Command.GetText()
		}
	case *sessionv1.Event_Decided:
		d := b.Decided.GetDecision()
		kind, command := "", ""
		if len(d.GetStatements()) > 0 {
			kind, command = d.GetStatements()[0].GetKind(), d.GetStatements()[0].GetCommand()
		}
		activity(protocol, set, kind, command)
		disposition(out, d)
	case *sessionv1.Event_Result:
		activity(protocol, set, "", b.Result.GetCommandTag())
		out["duration"] = b.Result.GetDurationUs() / 1000
		out["count"] = b.Result.GetRows()
		if b.Result.GetErrorCode() != "" {
			out["status_id"], out["status"] = 2, "Failure"
			out["status_code"], out["status_detail"] = b.Result.GetErrorCode(), b.Result.GetErrorMessage()
		}
	default:
		activity(protocol, set, "", "")
		out["activity_id"], out["activity_name"] = 99, "Other"
	}
	return out
}

// activity picks the class and activity of a command by protocol and, for
// SQL, by the statement.
func activity(protocol string, set func(ocsfClass, int, string), kind, command string) {
	switch protocol {
	case "ssh":
		set(sshActivity, 99, "Other")
		return
	case "kubernetes", "mcp":
		set(apiActivity, 99, "Other")
		return
	}
	c := strings.ToUpper(command)
	switch {
	case strings.HasPrefix(c, "INSERT") || strings.HasPrefix(c, "COPY") && kind == "write":
		set(datastore, 5, "Write")
	case strings.HasPrefix(c, "UPDATE") || strings.HasPrefix(c, "MERGE"):
		set(datastore, 2, "Update")
	case strings.HasPrefix(c, "DELETE") || strings.HasPrefix(c, "DROP") || strings.HasPrefix(c, "TRUNCATE"):
		set(datastore, 7, "Delete")
	case strings.HasPrefix(c, "CREATE"):
		set(datastore, 6, "Create")
	case kind == "write":
		set(datastore, 5, "Write")
	default:
		set(datastore, 4, "Query")
	}
}

func user(p *commonv1.Principal) map[string]any {
	u := map[string]any{"uid": p.GetSubject(), "name": p.GetSubject()}
	if p.GetEmail() != "" {
		u["email_addr"] = p.GetEmail()
	}
	if len(p.GetGroups()) > 0 {
		groups := make([]map[string]any, len(p.GetGroups()))
		for i, g := range p.GetGroups() {
			groups[i] = map[string]any{"name": g}
		}
		u["groups"] = groups
	}
	if p.GetMachine() {
		u["type_id"], u["type"] = 3, "System"
	} else {
		u["type_id"], u["type"] = 1, "User"
	}
	return u
}

func hostOf(addr string) string {
	if i := strings.LastIndex(addr, ":"); i > 0 {
		return strings.Trim(addr[:i], "[]")
	}
	return addr
}

// disposition records how the policy ruled.
func disposition(out map[string]any, d *policyv1.Decision) {
	switch d.GetAction() {
	case "allow":
		out["disposition_id"], out["disposition"] = 1, "Allowed"
	case "deny":
		out["disposition_id"], out["disposition"] = 2, "Blocked"
		out["status_id"], out["status"] = 2, "Failure"
		out["severity_id"], out["severity"] = 3, "Medium"
	default:
		out["disposition_id"], out["disposition"] = 99, "Held for approval"
	}
	out["policy"] = map[string]any{"name": d.GetRule(), "version": d.GetRevision(), "desc": d.GetReason()}
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
