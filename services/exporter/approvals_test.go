package exporter_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/controlstate"
	"sluice.dev/sluice/libs/eventstore"
	"sluice.dev/sluice/libs/testkit"
	approvalsv1 "sluice.dev/sluice/proto/sluice/approvals/v1"
	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
	"sluice.dev/sluice/services/approvals"
	"sluice.dev/sluice/services/exporter"
	"sluice.dev/sluice/services/identity/identitytest"
)

// Approvals are decided outside any session; the SIEM still learns who
// approved or denied which command of whom, and why, and who changed the
// configuration: a search for the approver finds the decision.
func TestExportApprovalDecisionsAndConfiguration(t *testing.T) {
	_, conn := testkit.NATS(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	require.NoError(t, bus.Provision(ctx, conn.JS, bus.Topology{}))
	idp := identitytest.Start(ctx, t, conn)
	kv, err := controlstate.Bucket(ctx, conn.JS)
	require.NoError(t, err)
	groups, _ := proto.Marshal(&controlv1.ApproverGroupsSet{Groups: []*controlv1.ApproverGroup{{Name: "approvers", Groups: []string{"approvers"}}}})
	_, err = kv.Put(ctx, controlstate.KeyApprovers, groups)
	require.NoError(t, err)
	go func() { _ = approvals.New(approvals.Config{Conn: conn, Log: zerolog.Nop()}).Run(ctx) }()

	alice, bob := idp.Token("alice", "engineers"), idp.Token("bob", "approvers")
	call := func(who, subject string, req proto.Message) *approvalsv1.Approval {
		t.Helper()
		var r approvalsv1.ApprovalReply
		testkit.Eventually(t, 10*time.Second, func() error {
			if err := bus.Request(identitytest.As(ctx, who), conn.NC, subject, req, &r); err != nil {
				return err
			}
			if r.GetError() != nil {
				return fmt.Errorf("%s", r.GetError().GetMessage())
			}
			return nil
		})
		return r.GetApproval()
	}
	// The worker opens requests with the session's token (alice's).
	open := func(command string) *approvalsv1.Approval {
		return call(alice, bus.APIApprovalsOpen, &approvalsv1.OpenRequest{SessionId: "01JGSESSION", Target: "demo", Command: command,
			CommandHash: "h-" + command, Rule: "review-deletes", Reason: "deletes need a second pair of eyes", ApproverGroups: []string{"approvers"}, Quorum: 1})
	}
	approved, denied := open("DELETE FROM customers WHERE id = 1"), open("DELETE FROM customers")
	const approveReason, denyReason = "ticket OPS-42: the WHERE clause names one row", "no WHERE clause: it would delete every customer"
	call(bob, bus.APIApprovalsDecide, &approvalsv1.Decide{Id: approved.GetId(), Verdict: "approve", Reason: approveReason})
	call(bob, bus.APIApprovalsDecide, &approvalsv1.Decide{Id: denied.GetId(), Verdict: "deny", Reason: denyReason})

	// A configuration change, as the control service appends it.
	store := eventstore.New(conn.JS, bus.StreamControl, bus.SubjectControl)
	_, err = store.Append(ctx, "policy", "default", eventstore.Position{}, eventstore.NewEvent("applied", &controlv1.PolicySetApplied{
		Digest: "p1", Revision: 1, SourceFile: "sluice.yaml", AppliedBy: "carol",
		Rules: []*controlv1.Rule{{Name: "review-deletes", Action: "review"}}}))
	require.NoError(t, err)

	sys, hec := newReceiver(), newReceiver()
	var noFailures atomic.Int32
	ectx, ecancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- exporter.Run(ectx, exporter.Config{Conn: conn, Log: zerolog.Nop(), Batch: 50, Sinks: []exporter.Sink{
			&exporter.Syslog{Addr: syslogServer(t, sys)}, &exporter.HEC{URL: hecServer(t, hec, &noFailures), Token: "test-token"},
		}})
	}()
	defer func() { ecancel(); require.NoError(t, <-done) }()

	// What a SIEM analyst searches for finds each decision, on both sinks.
	for _, r := range []*receiver{sys, hec} {
		var approval, denial, config map[string]any
		testkit.Eventually(t, 20*time.Second, func() error {
			a, d, c := r.find("bob", approveReason), r.find("bob", denyReason), r.find("carol", "control.config.apply")
			if len(a) != 1 || len(d) != 1 || len(c) != 1 {
				return fmt.Errorf("approval %d, denial %d, configuration %d exported", len(a), len(d), len(c))
			}
			approval, denial, config = ocsfBody(t, a[0]), ocsfBody(t, d[0]), ocsfBody(t, c[0])
			return nil
		})
		for ev, activity := range map[*map[string]any]float64{&approval: 3, &denial: 3, &config: 1} {
			e := *ev
			assert.EqualValues(t, 6003, e["class_uid"], "API Activity")
			assert.Equal(t, activity, e["activity_id"], "a decision updates a request; the first policy is created")
			assert.Equal(t, 6003*100+activity, e["type_uid"])
			assert.Equal(t, "1.1.0", e["metadata"].(map[string]any)["version"])
		}
		for ev, want := range map[*map[string]any]struct {
			id, decision, reason string
		}{&approval: {approved.GetId(), "approve", approveReason}, &denial: {denied.GetId(), "deny", denyReason}} {
			e := *ev
			assert.Equal(t, "bob", e["actor"].(map[string]any)["user"].(map[string]any)["name"], "the approver is the actor")
			assert.Equal(t, "approvals.request.decide", e["api"].(map[string]any)["operation"])
			a := e["unmapped"].(map[string]any)["approval"].(map[string]any)
			assert.Equal(t, want.id, a["id"])
			assert.Equal(t, want.decision, a["decision"])
			assert.Equal(t, want.reason, a["reason"])
			assert.Equal(t, "bob", a["approver"])
			assert.Equal(t, "alice", a["requester"], "the requester, from the request the decision names")
			assert.Contains(t, a["command"], "DELETE FROM customers")
			assert.Contains(t, e["message"], want.reason)
		}
		assert.Equal(t, "carol", config["actor"].(map[string]any)["user"].(map[string]any)["name"])
		assert.EqualValues(t, 1, config["unmapped"].(map[string]any)["config"].(map[string]any)["revision"])
		// The requests themselves went out too.
		assert.Len(t, r.find("approvals.request.open", "alice", "review-deletes"), 2)
	}
	// Syslog names the session the request held, and flags the denial.
	d := sys.find(denyReason)[0]
	assert.Contains(t, d, `session="01JGSESSION"`)
	assert.True(t, strings.HasPrefix(d, "<108>1 "), "a denial is a warning: %.40s", d)
}

// ocsfBody is the OCSF event of a syslog line or HEC body.
func ocsfBody(t *testing.T, s string) map[string]any {
	t.Helper()
	if i := strings.Index(s, "] {"); i >= 0 {
		s = s[i+2:]
	}
	var m map[string]any
	require.NoError(t, json.Unmarshal([]byte(s), &m), s)
	return m
}
