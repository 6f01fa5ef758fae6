package auditlog

import (
	"net"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	commonv1 "sluice.dev/sluice/proto/sluice/common/v1"
)

// OCSFVersion is the OCSF schema version the events follow. Every
// attribute set is one the schema defines for the event's class (no
// profile is applied); what the schema has no attribute for goes under
// unmapped.
const OCSFVersion = "1.1.0"

// class is an OCSF event class with the captions of its activities, so an
// event's names always agree with its ids.
type class struct {
	uid, category      int
	name, categoryName string
	activities         map[int]string
}

// The classes Sluice emits. A gap (events lost before the recorder) fits no
// activity class, so it is a Base Event, which the schema defines for that.
var (
	baseEvent      = class{0, 0, "Base Event", "Uncategorized", map[int]string{0: "Unknown", 99: "Other"}}
	authentication = class{3002, 3, "Authentication", "Identity & Access Management",
		map[int]string{0: "Unknown", 1: "Logon", 2: "Logoff", 99: "Other"}}
	apiActivity = class{6003, 6, "API Activity", "Application Activity",
		map[int]string{0: "Unknown", 1: "Create", 2: "Read", 3: "Update", 4: "Delete", 99: "Other"}}
	datastoreActivity = class{6005, 6, "Datastore Activity", "Application Activity",
		map[int]string{0: "Unknown", 1: "Read", 2: "Update", 3: "Connect", 4: "Query", 5: "Write", 6: "Create", 7: "Delete", 99: "Other"}}
)

// Activity ids, by class.
const (
	activityOther = 99

	logon  = 1
	logoff = 2

	apiCreate = 1
	apiRead   = 2
	apiUpdate = 3
	apiDelete = 4

	dsRead   = 1
	dsUpdate = 2
	dsQuery  = 4
	dsWrite  = 5
	dsCreate = 6
	dsDelete = 7
)

// Severity and status ids (the same in every class).
const (
	informational = 1
	low           = 2
	medium        = 3
	high          = 4

	success     = 1
	failure     = 2
	statusOther = 99
)

var severityNames = map[int]string{informational: "Informational", low: "Low", medium: "Medium", high: "High"}

// Where an event was logged (metadata.log_name), so a SIEM can tell the
// recorded sessions from the approvals and configuration history.
const (
	logAudit     = "AUDIT"
	logApprovals = "APPROVALS"
	logControl   = "CONTROL"
)

// ocsfEvent is one OCSF event being built.
type ocsfEvent map[string]any

// newEvent starts an event of class c: informational and successful until
// said otherwise. uid is the stable event id (metadata.uid), so a SIEM can
// deduplicate redeliveries.
func newEvent(c class, activity int, activityName string, at time.Time, uid, logName, provider string) ocsfEvent {
	e := ocsfEvent{
		"time":            at.UnixMilli(),
		"timezone_offset": 0,
		"metadata": map[string]any{
			"uid":          uid,
			"version":      OCSFVersion,
			"product":      product,
			"log_name":     logName,
			"log_provider": provider,
		},
	}
	e.class(c, activity, activityName)
	e.severity(informational)
	e.status(success, "")
	return e
}

// class sets the classification; activityName names an Other activity.
func (e ocsfEvent) class(c class, activity int, activityName string) {
	caption, ok := c.activities[activity]
	if !ok {
		activity, caption = activityOther, "Other"
	}
	e["class_uid"], e["class_name"] = c.uid, c.name
	e["category_uid"], e["category_name"] = c.category, c.categoryName
	e["activity_id"], e["activity_name"] = activity, caption
	if activity == activityOther && activityName != "" {
		e["activity_name"] = activityName
	}
	e["type_uid"], e["type_name"] = c.uid*100+activity, c.name+": "+caption
}

func (e ocsfEvent) severity(id int) {
	e["severity_id"], e["severity"] = id, severityNames[id]
}

// status sets the outcome; detail says why, for a failure or an Other.
func (e ocsfEvent) status(id int, detail string) {
	switch id {
	case success:
		e["status_id"], e["status"] = id, "Success"
	case failure:
		e["status_id"], e["status"] = id, "Failure"
	default:
		e["status_id"], e["status"] = statusOther, detail
	}
	if detail != "" {
		e["status_detail"] = detail
	} else {
		delete(e, "status_detail")
	}
}

func (e ocsfEvent) metadata() map[string]any { return e["metadata"].(map[string]any) }

// unmapped holds what OCSF 1.1.0 has no attribute for.
func (e ocsfEvent) unmapped() map[string]any {
	u, ok := e["unmapped"].(map[string]any)
	if !ok {
		u = map[string]any{}
		e["unmapped"] = u
	}
	return u
}

// product is the reporting product; its version is the build's, when the
// binary knows it.
var product = func() map[string]any {
	p := map[string]any{"name": "Sluice", "vendor_name": "Sluice"}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		p["version"] = bi.Main.Version
	}
	return p
}()

// userOf is the OCSF user of a verified principal: its subject as name and
// uid (what approvers and auditors search for), its email, groups and
// issuer.
func userOf(p *commonv1.Principal) map[string]any {
	if p.GetSubject() == "" {
		return unknownUser()
	}
	u := map[string]any{"uid": p.GetSubject(), "name": p.GetSubject(), "type_id": 1, "type": "User"}
	if p.GetMachine() {
		u["type_id"], u["type"] = 3, "System"
	}
	if strings.Contains(p.GetEmail(), "@") {
		u["email_addr"] = p.GetEmail()
	}
	if p.GetIssuer() != "" {
		u["domain"] = p.GetIssuer()
	}
	if len(p.GetGroups()) > 0 {
		groups := make([]map[string]any, len(p.GetGroups()))
		for i, g := range p.GetGroups() {
			groups[i] = map[string]any{"name": g}
		}
		u["groups"] = groups
	}
	return u
}

// subjectUser is a user known only by its subject (an approver's vote in a
// session record, who applied a configuration).
func subjectUser(subject string) map[string]any {
	if subject == "" {
		return unknownUser()
	}
	return map[string]any{"uid": subject, "name": subject, "type_id": 1, "type": "User"}
}

// unknownUser stands for a user the event does not name (a failed
// authentication): the classes that require a user get one that says so.
func unknownUser() map[string]any {
	return map[string]any{"name": "unknown", "type_id": 0, "type": "Unknown"}
}

// systemUser is Sluice itself acting (an expiry, a superseded request).
func systemUser(component string) map[string]any {
	return map[string]any{"uid": component, "name": "sluice-" + component, "type_id": 3, "type": "System"}
}

// endpointOf is the network endpoint of a client address ("host:port").
func endpointOf(addr string) map[string]any {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	ep := map[string]any{}
	if ip := net.ParseIP(strings.Trim(host, "[]")); ip != nil {
		ep["ip"] = ip.String()
	} else if host != "" {
		ep["name"] = host
	} else {
		ep["name"] = "unknown"
	}
	if p, err := strconv.Atoi(port); err == nil && p >= 0 && p <= 65535 {
		ep["port"] = p
	}
	return ep
}

// serviceEndpoint is the source of a request that only one component may
// send (NATS permissions say which), when its network address is unknown.
func serviceEndpoint(component string) map[string]any {
	return map[string]any{"svc_name": component}
}
