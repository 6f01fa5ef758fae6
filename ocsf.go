package auditlog

import (
	"strings"

	commonv1 "sluice.dev/sluice/proto/sluice/common/v1"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
)

// OCSF class and category ids used (OCSF 1.1+).
const (
	classAuthentication = 3002
	classSSHActivity    = 4007
	classAPIActivity    = 6003
	classDatastore      = 6005
	ocsfVersion         = "1.3.0"
)

// OCSF maps a session event to an OCSF event. The session's Started event
// (for principal and target context) may be nil. The metadata.uid is the
// event id, stable across redeliveries.
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
	protocol := started.GetProtocol()
	if started != nil {
		out["actor"] = map[string]any{"user": user(started.GetPrincipal()), "session": map[string]any{"uid": ev.GetSessionId()}}
		out["src_endpoint"] = map[string]any{"ip": hostOf(started.GetClientAddr())}
	}
	set := func(class, category int, className, categoryName string, activity int, activityName string) {
		out["class_uid"], out["class_name"] = class, className
		out["category_uid"], out["category_name"] = category, categoryName
		out["activity_id"], out["activity_name"] = activity, activityName
		out["type_uid"] = class*100 + activity
	}
	switch b := ev.GetBody().(type) {
	case *sessionv1.Event_Started:
		set(classAuthentication, 3, "Authentication", "Identity & Access Management", 1, "Logon")
		out["user"] = user(b.Started.GetPrincipal())
		out["actor"] = map[string]any{"user": user(b.Started.GetPrincipal()), "session": map[string]any{"uid": ev.GetSessionId()}}
		out["src_endpoint"] = map[string]any{"ip": hostOf(b.Started.GetClientAddr())}
		out["service"] = map[string]any{"name": b.Started.GetTarget().GetName()}
		out["auth_protocol"] = "OIDC"
		out["is_mfa"] = false
	case *sessionv1.Event_AuthFailed:
		set(classAuthentication, 3, "Authentication", "Identity & Access Management", 1, "Logon")
		out["status_id"], out["status"] = 2, "Failure"
		out["status_code"], out["status_detail"] = b.AuthFailed.GetCode(), b.AuthFailed.GetReason()
		out["src_endpoint"] = map[string]any{"ip": hostOf(b.AuthFailed.GetClientAddr())}
		out["service"] = map[string]any{"name": b.AuthFailed.GetTarget()}
		out["auth_protocol"] = "OIDC"
		out["severity_id"], out["severity"] = 3, "Medium"
	case *sessionv1.Event_Ended:
		set(classAuthentication, 3, "Authentication", "Identity & Access Management", 2, "Logoff")
		out["message"] = b.Ended.GetReason()
	case *sessionv1.Event_Command:
		activityFor(protocol, set, "", "")
		out["message"] = b.Command.GetText()
		if protocol == "postgres" {
			out["query_info"] = map[string]any{"query_string": b.Command.GetText()}
			out["database"] = map[string]any{"name": started.GetTarget().GetName(), "type": "PostgreSQL"}
		} else {
			out["command_line"] = b.Command.GetText()
		}
	case *sessionv1.Event_Decided:
		d := b.Decided.GetDecision()
		kind, command := "", ""
		if len(d.GetStatements()) > 0 {
			kind, command = d.GetStatements()[0].GetKind(), d.GetStatements()[0].GetCommand()
		}
		activityFor(protocol, set, kind, command)
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
		if protocol == "postgres" {
			out["database"] = map[string]any{"name": started.GetTarget().GetName(), "type": "PostgreSQL"}
		}
	case *sessionv1.Event_Result:
		activityFor(protocol, set, "", b.Result.GetCommandTag())
		out["duration"] = b.Result.GetDurationUs() / 1000
		out["count"] = b.Result.GetRows()
		if b.Result.GetErrorCode() != "" {
			out["status_id"], out["status"] = 2, "Failure"
			out["status_code"], out["status_detail"] = b.Result.GetErrorCode(), b.Result.GetErrorMessage()
		}
	default:
		activityFor(protocol, set, "", "")
		out["activity_name"] = "Other"
	}
	return out
}

func activityFor(protocol string, set func(int, int, string, string, int, string), kind, command string) {
	switch protocol {
	case "ssh":
		set(classSSHActivity, 4, "SSH Activity", "Network Activity", 99, "Other")
	case "kubernetes", "mcp":
		set(classAPIActivity, 6, "API Activity", "Application Activity", 99, "Other")
	default:
		id, name := 4, "Query"
		c := strings.ToUpper(command)
		switch {
		case strings.HasPrefix(c, "INSERT"), strings.HasPrefix(c, "COPY") && kind == "write":
			id, name = 5, "Write"
		case strings.HasPrefix(c, "UPDATE"), strings.HasPrefix(c, "MERGE"):
			id, name = 2, "Update"
		case strings.HasPrefix(c, "DELETE"), strings.HasPrefix(c, "DROP"), strings.HasPrefix(c, "TRUNCATE"):
			id, name = 7, "Delete"
		case strings.HasPrefix(c, "CREATE"):
			id, name = 6, "Create"
		case kind == "write":
			id, name = 5, "Write"
		case kind == "read":
			id, name = 4, "Query"
		}
		set(classDatastore, 6, "Datastore Activity", "Application Activity", id, name)
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
