package auditlog_test

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"sluice.dev/sluice/libs/auditlog"
	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/eventstore"
	approvalsv1 "sluice.dev/sluice/proto/sluice/approvals/v1"
	auditv1 "sluice.dev/sluice/proto/sluice/audit/v1"
	commonv1 "sluice.dev/sluice/proto/sluice/common/v1"
	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
	policyv1 "sluice.dev/sluice/proto/sluice/policy/v1"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
)

var at = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

var (
	alice = &commonv1.Principal{Subject: "alice", Email: "alice@example.com", Groups: []string{"engineers"}, Issuer: "https://idp.example.com",
		ExpiresAt: timestamppb.New(at.Add(time.Hour))}
	bob   = &commonv1.Principal{Subject: "bob", Email: "bob@example.com", Groups: []string{"approvers"}, Issuer: "https://idp.example.com"}
	robot = &commonv1.Principal{Subject: "ci-deploy", Groups: []string{"ci"}, Machine: true, ClientId: "ci-deploy"}
)

func started(protocol string) *sessionv1.Started {
	return &sessionv1.Started{Principal: alice, Target: &commonv1.Target{Name: "demo", Kind: protocol, Labels: map[string]string{"env": "prod"}},
		Protocol: protocol, ClientAddr: "10.1.2.3:51234", ClientApplication: "psql", TlsVersion: "TLS 1.3", Worker: "pg-1", ClientUser: "alice"}
}

func event(body any) *sessionv1.Event {
	ev := &sessionv1.Event{Id: "01JGSESSIONEVENT", SessionId: "01JGSESSION", Seq: 7, Time: timestamppb.New(at)}
	switch b := body.(type) {
	case *sessionv1.Started:
		ev.Body = &sessionv1.Event_Started{Started: b}
	case *sessionv1.AuthFailed:
		ev.Body = &sessionv1.Event_AuthFailed{AuthFailed: b}
	case *sessionv1.Ended:
		ev.Body = &sessionv1.Event_Ended{Ended: b}
	case *sessionv1.Command:
		ev.Body = &sessionv1.Event_Command{Command: b}
	case *sessionv1.Decided:
		ev.Body = &sessionv1.Event_Decided{Decided: b}
	case *sessionv1.Result:
		ev.Body = &sessionv1.Event_Result{Result: b}
	case *sessionv1.Masking:
		ev.Body = &sessionv1.Event_Masking{Masking: b}
	case *sessionv1.Approval:
		ev.Body = &sessionv1.Event_Approval{Approval: b}
	case *sessionv1.TerminalIO:
		ev.Body = &sessionv1.Event_Io{Io: b}
	case *sessionv1.TokenRenewed:
		ev.Body = &sessionv1.Event_TokenRenewed{TokenRenewed: b}
	case *sessionv1.RenewalRefused:
		ev.Body = &sessionv1.Event_RenewalRefused{RenewalRefused: b}
	}
	return ev
}

func decision(action, rule, reason string) *policyv1.Decision {
	return &policyv1.Decision{Action: action, Rule: rule, Reason: reason, Revision: 4, Approvers: []string{"approvers"}, Quorum: 1,
		Statements: []*policyv1.Statement{{Kind: "write", Command: "DELETE", Writes: []string{"public.customers"}}}}
}

// asJSON is the event as the SIEM reads it.
func asJSON(t *testing.T, v any) map[string]any {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	return m
}

func line(t *testing.T, v any) string {
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return string(b)
}

// get reads a dotted path ("actor.user.name", "resources.0.uid").
func get(m any, path string) any {
	for _, k := range strings.Split(path, ".") {
		switch x := m.(type) {
		case map[string]any:
			m = x[k]
		case []any:
			i := 0
			for _, c := range k {
				i = i*10 + int(c-'0')
			}
			if i >= len(x) {
				return nil
			}
			m = x[i]
		default:
			return nil
		}
	}
	return m
}

type want struct {
	class, activity int
	fields          map[string]any
	contains        []string
}

func check(t *testing.T, ev map[string]any, w want) {
	t.Helper()
	requireValidOCSF(t, ev)
	m := asJSON(t, ev)
	assert.EqualValues(t, w.class, m["class_uid"])
	assert.EqualValues(t, w.activity, m["activity_id"])
	assert.EqualValues(t, w.class*100+w.activity, m["type_uid"])
	assert.Equal(t, auditlog.OCSFVersion, get(m, "metadata.version"))
	assert.Equal(t, "Sluice", get(m, "metadata.product.name"))
	for path, v := range w.fields {
		assert.EqualValues(t, v, get(m, path), path)
	}
	l := line(t, ev)
	for _, s := range w.contains {
		assert.Contains(t, l, s)
	}
}

func TestOCSFSessionEvents(t *testing.T) {
	pg := started("postgres")
	for name, tc := range map[string]struct {
		ev      *sessionv1.Event
		started *sessionv1.Started
		want    want
	}{
		"started": {event(pg), nil, want{3002, 1, map[string]any{
			"user.name": "alice", "user.email_addr": "alice@example.com", "user.groups.0.name": "engineers",
			"actor.session.uid": "01JGSESSION", "src_endpoint.ip": "10.1.2.3", "src_endpoint.port": 51234,
			"service.name": "demo", "auth_protocol": "OpenID", "status": "Success", "metadata.correlation_uid": "01JGSESSION",
			"metadata.uid": "01JGSESSIONEVENT", "metadata.log_name": "AUDIT", "time": at.UnixMilli(),
		}, nil}},
		"auth_failed": {event(&sessionv1.AuthFailed{Protocol: "postgres", ClientAddr: "[2001:db8::1]:6000", Code: "token_expired",
			Reason: "the access token expired", Target: "demo"}), nil, want{3002, 1, map[string]any{
			"status": "Failure", "status_code": "token_expired", "status_detail": "the access token expired",
			"src_endpoint.ip": "2001:db8::1", "service.name": "demo", "severity": "Medium", "user.name": "unknown",
		}, nil}},
		"ended": {event(&sessionv1.Ended{Reason: "the client closed the session", Commands: 3, Denied: 1}), pg, want{3002, 2, map[string]any{
			"user.name": "alice", "unmapped.denied": 1, "activity_name": "Logoff",
		}, []string{"the client closed the session"}}},
		"ended without its start": {event(&sessionv1.Ended{Reason: "gone"}), nil, want{3002, 2, map[string]any{"user.name": "unknown"}, nil}},
		"command allowed": {event(&sessionv1.Command{CommandId: 2, Text: "SELECT name FROM customers", Decision: &policyv1.Decision{
			Action: "allow", Rule: "allow-engineer-reads", Revision: 4, Statements: []*policyv1.Statement{{Kind: "read", Command: "SELECT", Reads: []string{"public.customers"}}}}}),
			pg, want{6005, 4, map[string]any{
				"query_info.query_string": "SELECT name FROM customers", "database.name": "demo", "table.name": "public.customers",
				"actor.user.name": "alice", "actor.authorizations.0.decision": "allow", "actor.authorizations.0.policy.name": "allow-engineer-reads",
				"actor.authorizations.0.policy.version": "4", "unmapped.disposition": "Allowed", "status": "Success",
			}, nil}},
		"command denied": {event(&sessionv1.Command{CommandId: 3, Text: "DELETE FROM customers", Decision: decision("deny", "deny-unbounded-deletes", "a DELETE needs a WHERE")}),
			pg, want{6005, 7, map[string]any{
				"status": "Failure", "status_detail": "a DELETE needs a WHERE", "severity": "Medium",
				"actor.authorizations.0.policy.name": "deny-unbounded-deletes", "actor.authorizations.0.policy.version": "4",
				"unmapped.disposition": "Blocked", "unmapped.decision.revision": 4,
			}, nil}},
		"command held": {event(&sessionv1.Command{CommandId: 4, Text: "DELETE FROM customers WHERE id = 1", Decision: decision("review", "review-deletes", "deletes need a second pair of eyes")}),
			pg, want{6005, 7, map[string]any{"status_id": 99, "status": "Held for approval", "unmapped.disposition": "Held for approval",
				"actor.authorizations.0.policy.name": "review-deletes"}, nil}},
		"decided": {event(&sessionv1.Decided{CommandId: 3, Decision: decision("deny", "deny-unbounded-deletes", "a DELETE needs a WHERE")}),
			pg, want{6005, 7, map[string]any{"actor.authorizations.0.policy.version": "4", "status": "Failure"},
				[]string{"deny-unbounded-deletes", "policy revision 4"}}},
		"result": {event(&sessionv1.Result{CommandId: 2, CommandTag: "SELECT 1", Rows: 1, DurationUs: 2500}), pg, want{6005, 4, map[string]any{
			"duration": 2, "unmapped.rows": 1, "status": "Success"}, nil}},
		"result with an error": {event(&sessionv1.Result{CommandId: 2, CommandTag: "", ErrorCode: "42P01", ErrorMessage: "relation \"nope\" does not exist"}),
			pg, want{6005, 4, map[string]any{"status": "Failure", "status_code": "42P01"}, nil}},
		"masking": {event(&sessionv1.Masking{CommandId: 2, Counts: []*sessionv1.MaskCount{{Column: "customers.ssn", Detector: "ssn", Count: 3}}}),
			pg, want{6005, 1, map[string]any{"unmapped.masked_values": 3, "unmapped.masked.0.column": "customers.ssn"}, nil}},
		"approval opened": {event(&sessionv1.Approval{CommandId: 4, ApprovalId: "01JGAPPROVAL", State: "pending"}), pg, want{6003, 1, map[string]any{
			"api.operation": "approvals.request.open", "resources.0.uid": "01JGAPPROVAL", "resources.0.owner.name": "alice", "actor.user.name": "alice"}, nil}},
		"approval consumed": {event(&sessionv1.Approval{CommandId: 4, ApprovalId: "01JGAPPROVAL", State: "consumed", Approvers: []string{"bob"}, Reason: "ticket OPS-42"}),
			pg, want{6003, 3, map[string]any{"api.operation": "approvals.request.consume", "unmapped.approval.approvers.0": "bob",
				"unmapped.approval.reason": "ticket OPS-42"}, []string{"approved by bob", "ticket OPS-42"}}},
		"approval denied": {event(&sessionv1.Approval{CommandId: 4, ApprovalId: "01JGAPPROVAL", State: "denied", Reason: "too broad"}),
			pg, want{6003, 2, map[string]any{"api.operation": "approvals.request.await", "status": "Failure", "status_detail": "too broad"}, nil}},
		"approval expired": {event(&sessionv1.Approval{CommandId: 4, ApprovalId: "01JGAPPROVAL", State: "expired"}),
			pg, want{6003, 2, map[string]any{"status": "Failure", "unmapped.approval.state": "expired"}, nil}},
		"approval withdrawn": {event(&sessionv1.Approval{CommandId: 4, ApprovalId: "01JGAPPROVAL", State: "withdrawn", Reason: "the client cancelled the statement"}),
			pg, want{6003, 4, map[string]any{"api.operation": "approvals.request.withdraw"}, []string{"the client cancelled the statement"}}},
		"terminal io": {event(&sessionv1.TerminalIO{Stream: "o", Data: []byte("secret output"), OffsetMs: 10}), started("ssh"),
			want{6003, 99, map[string]any{"activity_name": "Terminal I/O", "unmapped.bytes": 13}, nil}},
		"kubernetes command": {event(&sessionv1.Command{CommandId: 1, Text: "GET /api/v1/namespaces/default/pods", Decision: &policyv1.Decision{
			Action: "allow", Rule: "allow-reads", Revision: 2, Statements: []*policyv1.Statement{{Kind: "read", Command: "list"}}}}),
			started("kubernetes"), want{6003, 2, map[string]any{"api.operation": "list", "resources.0.name": "demo"}, nil}},
		"mcp call": {event(&sessionv1.Command{CommandId: 1, Text: "SELECT name FROM customers", Via: "run_sql", Target: &commonv1.Target{Name: "demo", Kind: "postgres"},
			Decision: &policyv1.Decision{Action: "allow", Rule: "allow-reads", Revision: 2, Statements: []*policyv1.Statement{{Kind: "read", Command: "SELECT"}},
				Mcp: &policyv1.MCPInput{Tool: "run_sql", Client: "agent/1"}}}),
			&sessionv1.Started{Principal: alice, Protocol: "mcp", ClientAddr: "10.1.2.3:5000"},
			want{6003, 2, map[string]any{"api.operation": "SELECT", "unmapped.target": "demo", "unmapped.via": "run_sql",
				"actor.authorizations.0.policy.name": "allow-reads", "message": "SELECT name FROM customers"}, nil}},
		"token renewed": {event(&sessionv1.TokenRenewed{ExpiresAt: timestamppb.New(at.Add(2 * time.Hour)), PreviousExpiresAt: timestamppb.New(at.Add(time.Hour))}),
			pg, want{3002, 99, map[string]any{"activity_name": "Token Renewal", "user.name": "alice", "status": "Success",
				"session.expiration_time": at.Add(2 * time.Hour).UnixMilli(), "unmapped.previous_expires_at": "2026-01-02T04:04:05Z"}, nil}},
		"renewal refused": {event(&sessionv1.RenewalRefused{Code: "forbidden", Reason: "the token names another principal", Subject: "mallory", Issuer: "https://idp.example.com"}),
			pg, want{3002, 99, map[string]any{"status": "Failure", "status_code": "forbidden", "severity": "High", "user.name": "alice",
				"unmapped.presented_subject": "mallory"}, nil}},
		"machine identity": {event(&sessionv1.Started{Principal: robot, Target: &commonv1.Target{Name: "demo"}, Protocol: "postgres", ClientAddr: "/tmp/.s.PGSQL"}),
			nil, want{3002, 1, map[string]any{"user.type": "System", "src_endpoint.name": "/tmp/.s.PGSQL"}, nil}},
	} {
		t.Run(name, func(t *testing.T) {
			out := auditlog.OCSF(tc.ev, tc.started)
			check(t, out, tc.want)
			assert.NotContains(t, line(t, out), "secret output", "terminal data never leaves the audit log")
		})
	}
}

// A command that carries earlier results gives one event per result, each
// valid, with a stable id; an AUDIT entry gets its stream position.
func TestOCSFEntry(t *testing.T) {
	ev := event(&sessionv1.Command{CommandId: 3, Text: "SELECT 2", Decision: &policyv1.Decision{Action: "allow", Rule: "r", Revision: 1},
		Results: []*sessionv1.Result{{CommandId: 2, CommandTag: "INSERT 0 1", Rows: 1}}})
	out := auditlog.OCSFEntry(auditlog.Entry{StreamSeq: 42, Event: ev, Record: &auditv1.Record{SessionId: "01JGSESSION"}}, started("postgres"))
	require.Len(t, out, 2)
	for _, o := range out {
		requireValidOCSF(t, o)
		assert.EqualValues(t, 42, get(asJSON(t, o), "unmapped.stream_seq"))
	}
	assert.Equal(t, "01JGSESSIONEVENT/result/2", get(asJSON(t, out[1]), "metadata.uid"))
	assert.EqualValues(t, 5, get(asJSON(t, out[1]), "activity_id"), "an INSERT's result is a Write")
	assert.Equal(t, "Allowed", get(asJSON(t, out[0]), "unmapped.disposition"), "the ruling survives the stream position")

	// A gap record: events lost before the recorder.
	gap := auditlog.OCSFEntry(auditlog.Entry{StreamSeq: 43, Time: at, Seq: 5, Record: &auditv1.Record{SessionId: "01JGSESSION", Seq: 5, GapTo: 9}}, nil)
	require.Len(t, gap, 1)
	check(t, gap[0], want{0, 99, map[string]any{"severity": "High", "status": "Failure", "unmapped.gap_to": 9,
		"metadata.uid": "gap-01JGSESSION-5"}, []string{"events 5 to 9"}})

	// A lost record: the session's worker is gone, its chain closed.
	lost := auditlog.OCSFEntry(auditlog.Entry{StreamSeq: 44, Time: at, Seq: 12, Record: &auditv1.Record{SessionId: "01JGSESSION", Seq: 12,
		Lost: "its worker vm-7 stopped without ending it", RecordedAt: timestamppb.New(at)}}, nil)
	require.Len(t, lost, 1)
	check(t, lost[0], want{0, 99, map[string]any{"severity": "Medium", "status": "Failure", "unmapped.lost": "its worker vm-7 stopped without ending it",
		"metadata.uid": "lost-01JGSESSION", "metadata.correlation_uid": "01JGSESSION", "unmapped.stream_seq": 44},
		[]string{"session 01JGSESSION was lost", "after event 11"}})
}

// fact builds an event as the event store stores it.
func fact(t *testing.T, stream, aggregate, id, name string, version uint64, m proto.Message) auditlog.Fact {
	t.Helper()
	data, err := proto.Marshal(m)
	require.NoError(t, err)
	return auditlog.Fact{Stream: stream, Event: eventstore.Event{ID: "01JGEVENT" + strings.ToUpper(name), Type: string(m.ProtoReflect().Descriptor().FullName()),
		Aggregate: aggregate, AggregateID: id, Name: name, Data: data, Time: at, Sequence: 11, Version: version}}
}

func TestOCSFApprovals(t *testing.T) {
	opened := &approvalsv1.RequestOpened{Id: "01JGREQ", Requester: alice, SessionId: "01JGSESSION", Target: "demo",
		Command: "DELETE FROM customers WHERE id = 1", CommandHash: "h1", Rule: "review-deletes", Reason: "deletes need a second pair of eyes",
		ApproverGroups: []string{"approvers"}, Quorum: 1, OpenedAt: timestamppb.New(at), ExpiresAt: timestamppb.New(at.Add(5 * time.Minute))}
	grant := &approvalsv1.GrantRequested{Id: "01JGGRANT", Requester: alice, Target: "demo", Role: "dba", DurationSeconds: 1800,
		Reason: "incident INC-7", ApproverGroups: []string{"approvers"}, Quorum: 1, RequestedAt: timestamppb.New(at)}
	request := auditlog.NewRequests(nil)
	reqOpened := fact(t, bus.StreamApprovals, "request", "01JGREQ", "opened", 1, opened)
	grantOpened := fact(t, bus.StreamApprovals, "grant", "01JGGRANT", "requested", 1, grant)
	// The cache learns requests from their first event, as the exporter
	// sees them pass.
	require.NotNil(t, request.Of(t.Context(), reqOpened))
	require.NotNil(t, request.Of(t.Context(), grantOpened))
	slackBob := &commonv1.Principal{Subject: "bob@example.com", Email: "bob@example.com", ClientId: "slack"}

	for name, tc := range map[string]struct {
		f    auditlog.Fact
		want want
	}{
		"request opened": {reqOpened, want{6003, 1, map[string]any{
			"actor.user.name": "alice", "actor.session.uid": "01JGSESSION", "api.operation": "approvals.request.open",
			"src_endpoint.svc_name": "pgworker", "resources.0.uid": "01JGREQ", "unmapped.approval.command": opened.Command,
			"unmapped.approval.rule": "review-deletes", "metadata.log_name": "APPROVALS",
		}, nil}},
		"request approved": {fact(t, bus.StreamApprovals, "request", "01JGREQ", "approved", 2, &approvalsv1.RequestApproved{Id: "01JGREQ",
			Approver: bob, Reason: "ticket OPS-42, WHERE clause checked", Granted: true, At: timestamppb.New(at)}), want{6003, 3, map[string]any{
			"actor.user.name": "bob", "actor.user.groups.0.name": "approvers", "api.operation": "approvals.request.decide",
			"src_endpoint.svc_name": "api", "resources.0.owner.name": "alice", "unmapped.approval.approver": "bob",
			"unmapped.approval.decision": "approve", "unmapped.approval.state": "approved", "unmapped.approval.requester": "alice",
			"unmapped.approval.reason": "ticket OPS-42, WHERE clause checked", "unmapped.approval.id": "01JGREQ",
		}, []string{"bob approved request 01JGREQ by alice on demo (DELETE FROM customers WHERE id = 1): ticket OPS-42"}}},
		"request vote short of quorum": {fact(t, bus.StreamApprovals, "request", "01JGREQ", "approved", 2, &approvalsv1.RequestApproved{Id: "01JGREQ",
			Approver: bob, Reason: "fine by me", At: timestamppb.New(at)}), want{6003, 3, map[string]any{"unmapped.approval.state": "pending", "unmapped.approval.granted": false}, nil}},
		"request denied from slack": {fact(t, bus.StreamApprovals, "request", "01JGREQ", "denied", 2, &approvalsv1.RequestDenied{Id: "01JGREQ",
			Approver: slackBob, Reason: "too broad", At: timestamppb.New(at)}), want{6003, 3, map[string]any{
			"actor.user.name": "bob@example.com", "src_endpoint.svc_name": "slack", "unmapped.approval.decision": "deny",
			"unmapped.approval.state": "denied", "severity": "Low"}, []string{"bob@example.com denied request 01JGREQ", "too broad"}}},
		"request expired": {fact(t, bus.StreamApprovals, "request", "01JGREQ", "expired", 2, &approvalsv1.RequestExpired{Id: "01JGREQ", At: timestamppb.New(at)}),
			want{6003, 3, map[string]any{"actor.user.type": "System", "actor.invoked_by": "approvals", "api.operation": "approvals.request.expire",
				"unmapped.approval.state": "expired"}, nil}},
		"request withdrawn": {fact(t, bus.StreamApprovals, "request", "01JGREQ", "withdrawn", 2, &approvalsv1.RequestWithdrawn{Id: "01JGREQ",
			SessionId: "01JGSESSION", Reason: "the client cancelled the statement", At: timestamppb.New(at)}), want{6003, 4, map[string]any{
			"actor.user.name": "alice", "api.operation": "approvals.request.withdraw", "src_endpoint.svc_name": "pgworker"}, []string{"the client cancelled"}}},
		"request superseded": {fact(t, bus.StreamApprovals, "request", "01JGREQ", "withdrawn", 2, &approvalsv1.RequestWithdrawn{Id: "01JGREQ",
			SessionId: "01JGSESSION", SupersededBy: "01JGREQ2", Reason: "sent again", At: timestamppb.New(at)}), want{6003, 4, map[string]any{
			"actor.invoked_by": "approvals", "src_endpoint.svc_name": "approvals", "unmapped.approval.superseded_by": "01JGREQ2"}, nil}},
		"request consumed": {fact(t, bus.StreamApprovals, "request", "01JGREQ", "consumed", 3, &approvalsv1.RequestConsumed{Id: "01JGREQ",
			SessionId: "01JGSESSION", At: timestamppb.New(at)}), want{6003, 3, map[string]any{"actor.user.name": "alice",
			"api.operation": "approvals.request.consume", "unmapped.approval.state": "consumed"}, nil}},
		"grant requested": {grantOpened, want{6003, 1, map[string]any{"actor.user.name": "alice", "api.operation": "approvals.grant.request",
			"resources.0.type": "grant", "unmapped.approval.role": "dba", "unmapped.approval.duration_seconds": 1800}, []string{"incident INC-7"}}},
		"grant approved": {fact(t, bus.StreamApprovals, "grant", "01JGGRANT", "approved", 2, &approvalsv1.GrantApproved{Id: "01JGGRANT", Approver: bob,
			Reason: "on call", Granted: true, StartsAt: timestamppb.New(at), EndsAt: timestamppb.New(at.Add(30 * time.Minute)), At: timestamppb.New(at)}),
			want{6003, 3, map[string]any{"actor.user.name": "bob", "unmapped.approval.state": "approved", "unmapped.approval.ends_at": "2026-01-02T03:34:05Z"},
				[]string{"bob approved grant 01JGGRANT of role dba by alice on demo: on call"}}},
		"grant denied": {fact(t, bus.StreamApprovals, "grant", "01JGGRANT", "denied", 2, &approvalsv1.GrantDenied{Id: "01JGGRANT", Approver: bob,
			Reason: "not on call", At: timestamppb.New(at)}), want{6003, 3, map[string]any{"unmapped.approval.decision": "deny"}, []string{"not on call"}}},
		"grant revoked": {fact(t, bus.StreamApprovals, "grant", "01JGGRANT", "revoked", 3, &approvalsv1.GrantRevoked{Id: "01JGGRANT", By: bob,
			Reason: "incident closed", At: timestamppb.New(at)}), want{6003, 4, map[string]any{"actor.user.name": "bob", "api.operation": "approvals.grant.revoke",
			"unmapped.approval.revoked_by": "bob"}, []string{"incident closed"}}},
		"grant expired": {fact(t, bus.StreamApprovals, "grant", "01JGGRANT", "expired", 2, &approvalsv1.RequestExpired{Id: "01JGGRANT", At: timestamppb.New(at)}),
			want{6003, 3, map[string]any{"api.operation": "approvals.grant.expire", "resources.0.type": "grant"}, nil}},
	} {
		t.Run(name, func(t *testing.T) {
			out := auditlog.OCSFFact(tc.f, request.Of(t.Context(), tc.f))
			check(t, out, tc.want)
			assert.Equal(t, tc.f.Event.ID, get(asJSON(t, out), "metadata.uid"))
		})
	}

	// A decision whose request is unknown still names the approver.
	out := auditlog.OCSFFact(fact(t, bus.StreamApprovals, "request", "01JGOTHER", "approved", 2, &approvalsv1.RequestApproved{Id: "01JGOTHER",
		Approver: bob, Reason: "ok", Granted: true}), nil)
	check(t, out, want{6003, 3, map[string]any{"actor.user.name": "bob", "unmapped.approval.id": "01JGOTHER"}, nil})
}

func TestOCSFConfiguration(t *testing.T) {
	target := &controlv1.TargetSpec{Name: "demo", Kind: "postgres", Labels: map[string]string{"env": "prod"},
		Endpoint: &controlv1.TargetSpec_Postgres{Postgres: &controlv1.PostgresTarget{Host: "db.internal", Port: 5432, Database: "demo", User: "app",
			Password: &controlv1.Credential{Source: &controlv1.Credential_Sealed{Sealed: []byte("ciphertext-never-exported")}}}}}
	for name, tc := range map[string]struct {
		f    auditlog.Fact
		want want
	}{
		"target created": {fact(t, bus.StreamControl, "target", "demo", "configured", 1, &controlv1.TargetConfigured{Spec: target, Digest: "d1", AppliedBy: "carol"}),
			want{6003, 1, map[string]any{"actor.user.name": "carol", "api.operation": "control.config.apply", "resources.0.type": "target",
				"resources.0.name": "demo", "unmapped.config.address": "db.internal:5432", "unmapped.config.credential": "sealed",
				"metadata.log_name": "CONTROL"}, []string{"carol created target demo (postgres)"}}},
		"target updated": {fact(t, bus.StreamControl, "target", "demo", "configured", 2, &controlv1.TargetConfigured{Spec: target, Digest: "d2", AppliedBy: "carol"}),
			want{6003, 3, map[string]any{"unmapped.config.op": "updated"}, nil}},
		"target removed": {fact(t, bus.StreamControl, "target", "demo", "removed", 3, &controlv1.TargetRemoved{Name: "demo", AppliedBy: "carol"}),
			want{6003, 4, map[string]any{"resources.0.name": "demo"}, []string{"carol removed target demo"}}},
		"policy applied": {fact(t, bus.StreamControl, "policy", "default", "applied", 4, &controlv1.PolicySetApplied{Digest: "p4", Revision: 4,
			SourceFile: "sluice.yaml", AppliedBy: "carol", Rules: []*controlv1.Rule{{Name: "deny-unbounded-deletes", Action: "deny"}, {Name: "review-deletes", Action: "review"}}}),
			want{6003, 3, map[string]any{"resources.0.version": "4", "unmapped.config.revision": 4, "unmapped.config.rules.0.name": "deny-unbounded-deletes"},
				[]string{"carol applied policy revision 4 (2 rule(s)) from sluice.yaml"}}},
		"approver groups set": {fact(t, bus.StreamControl, "approvers", "default", "set", 1, &controlv1.ApproverGroupsSet{AppliedBy: "carol",
			Groups: []*controlv1.ApproverGroup{{Name: "approvers", Groups: []string{"approvers"}, Subjects: []string{"erin@example.com"}}}}),
			want{6003, 1, map[string]any{"unmapped.config.groups.0.subjects.0": "erin@example.com"}, nil}},
		"identity configured": {fact(t, bus.StreamControl, "identity", "default", "configured", 2, &controlv1.IdentityProviderConfigured{AppliedBy: "carol",
			Providers: []*controlv1.IdentityProvider{{Name: "corp", Issuer: "https://idp.example.com", Audience: "sluice"}}}),
			want{6003, 3, map[string]any{"unmapped.config.providers.0.issuer": "https://idp.example.com"}, nil}},
		"access configured by break-glass": {fact(t, bus.StreamControl, "access", "default", "configured", 1, &controlv1.AccessConfigured{
			Admins: []string{"sluice-admins"}, Auditors: []string{"auditors"}, GrantApprovers: "approvers", AppliedBy: "break-glass"}),
			want{6003, 1, map[string]any{"actor.user.type": "Admin", "api.operation": "control.config.breakglass", "src_endpoint.svc_name": "admin"}, nil}},
	} {
		t.Run(name, func(t *testing.T) {
			out := auditlog.OCSFFact(tc.f, nil)
			check(t, out, tc.want)
			assert.NotContains(t, line(t, out), "ciphertext", "no credential leaves the control plane")
			assert.NotContains(t, line(t, auditlog.FactJSON(tc.f)), base64.StdEncoding.EncodeToString([]byte("ciphertext-never-exported")))
		})
	}
}

// An event this version cannot read is exported, not dropped.
func TestOCSFUnknownFact(t *testing.T) {
	f := auditlog.Fact{Stream: bus.StreamApprovals, Event: eventstore.Event{ID: "01JGX", Type: "sluice.approvals.v1.SomethingNew",
		Aggregate: "request", AggregateID: "01JGREQ", Name: "renamed", Time: at}}
	check(t, auditlog.OCSFFact(f, nil), want{6003, 99, map[string]any{"metadata.uid": "01JGX"}, []string{"SomethingNew"}})
}
