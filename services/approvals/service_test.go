package approvals_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"sluice.dev/sluice/libs/approvalstate"
	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/controlstate"
	"sluice.dev/sluice/libs/testkit"
	approvalsv1 "sluice.dev/sluice/proto/sluice/approvals/v1"
	commonv1 "sluice.dev/sluice/proto/sluice/common/v1"
	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
	"sluice.dev/sluice/services/approvals"
)

var (
	alice = &commonv1.Principal{Subject: "alice", Groups: []string{"engineers"}}
	bob   = &commonv1.Principal{Subject: "bob", Groups: []string{"approvers"}}
	carol = &commonv1.Principal{Subject: "carol", Groups: []string{"approvers"}}
	dave  = &commonv1.Principal{Subject: "dave", Groups: []string{"engineers"}}
)

type env struct {
	conn *bus.Conn
	ctx  context.Context
	view *approvalstate.View
}

func setup(t *testing.T) *env {
	_, conn := testkit.NATS(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	require.NoError(t, bus.Provision(ctx, conn.JS, bus.Topology{}))
	kv, err := controlstate.Bucket(ctx, conn.JS)
	require.NoError(t, err)
	groups, _ := proto.Marshal(&controlv1.ApproverGroupsSet{Groups: []*controlv1.ApproverGroup{{Name: "approvers", Groups: []string{"approvers"}}}})
	_, err = kv.Put(ctx, controlstate.KeyApprovers, groups)
	require.NoError(t, err)
	target, _ := proto.Marshal(&controlv1.TargetConfigured{Spec: &controlv1.TargetSpec{Name: "demo", Kind: "postgres"}})
	_, err = kv.Put(ctx, controlstate.TargetKey("demo"), target)
	require.NoError(t, err)
	go func() { _ = approvals.New(approvals.Config{Conn: conn, Log: zerolog.Nop()}).Run(ctx) }()
	v := approvalstate.NewView()
	go func() { _ = v.Follow(ctx, conn.JS) }()
	e := &env{conn: conn, ctx: ctx, view: v}
	testkit.Eventually(t, 10*time.Second, func() error {
		_, err := e.call(approvals.SubjectList, &approvalsv1.ListRequest{})
		return err
	})
	return e
}

func (e *env) call(subject string, req proto.Message) (*approvalsv1.ApprovalReply, error) {
	if subject == approvals.SubjectList {
		var r approvalsv1.ListReply
		return nil, bus.Request(e.ctx, e.conn.NC, subject, req, &r)
	}
	var r approvalsv1.ApprovalReply
	err := bus.Request(e.ctx, e.conn.NC, subject, req, &r)
	return &r, err
}

func (e *env) open(t *testing.T, quorum uint32, ttl time.Duration) *approvalsv1.Approval {
	r, err := e.call(approvals.SubjectOpen, &approvalsv1.OpenRequest{Requester: alice, SessionId: "s1", Target: "demo",
		Command: "DELETE FROM customers", CommandHash: "h1", Rule: "review-unbounded-writes", ApproverGroups: []string{"approvers"},
		Quorum: quorum, TtlSeconds: int64(ttl.Seconds())})
	require.NoError(t, err)
	require.Nil(t, r.GetError())
	return r.GetApproval()
}

func (e *env) decide(t *testing.T, id string, who *commonv1.Principal, verdict string) *approvalsv1.ApprovalReply {
	r, err := e.call(approvals.SubjectDecide, &approvalsv1.Decide{Id: id, Approver: who, Verdict: verdict, Reason: "test"})
	require.NoError(t, err)
	return r
}

func (e *env) consume(t *testing.T, id, session, hash string, who *commonv1.Principal) *approvalsv1.ApprovalReply {
	r, err := e.call(approvals.SubjectConsume, &approvalsv1.Consume{Id: id, SessionId: session, CommandHash: hash, Principal: who})
	require.NoError(t, err)
	return r
}

func code(r *approvalsv1.ApprovalReply) string { return r.GetError().GetCode() }

func TestQuorumSelfApprovalAndSingleUse(t *testing.T) {
	e := setup(t)
	a := e.open(t, 2, time.Minute)
	assert.Equal(t, "pending", a.GetState())

	assert.Equal(t, "self_approval", code(e.decide(t, a.Id, alice, "approve")))
	assert.Equal(t, "forbidden", code(e.decide(t, a.Id, dave, "approve")), "not an approver")
	r := e.decide(t, a.Id, bob, "approve")
	require.Nil(t, r.GetError())
	assert.Equal(t, "pending", r.GetApproval().GetState(), "one of two votes")
	assert.Equal(t, "already_voted", code(e.decide(t, a.Id, bob, "approve")))
	assert.Equal(t, "not_approved", code(e.consume(t, a.Id, "s1", "h1", alice)), "no quorum yet")
	r = e.decide(t, a.Id, carol, "approve")
	require.Nil(t, r.GetError())
	assert.Equal(t, "approved", r.GetApproval().GetState())
	assert.Equal(t, []string{"bob", "carol"}, r.GetApproval().GetApprovedBy())

	// Bound to session, command and principal.
	assert.Equal(t, "mismatch", code(e.consume(t, a.Id, "other-session", "h1", alice)))
	assert.Equal(t, "mismatch", code(e.consume(t, a.Id, "s1", "another-command", alice)))
	assert.Equal(t, "mismatch", code(e.consume(t, a.Id, "s1", "h1", dave)))
	r = e.consume(t, a.Id, "s1", "h1", alice)
	require.Nil(t, r.GetError())
	assert.Equal(t, "consumed", r.GetApproval().GetState())
	assert.Equal(t, "consumed", code(e.consume(t, a.Id, "s1", "h1", alice)), "single use")
}

func TestDenyAndExpiry(t *testing.T) {
	e := setup(t)
	a := e.open(t, 1, time.Minute)
	r := e.decide(t, a.Id, bob, "deny")
	require.Nil(t, r.GetError())
	assert.Equal(t, "denied", r.GetApproval().GetState())
	assert.Equal(t, "not_pending", code(e.decide(t, a.Id, carol, "approve")))

	b := e.open(t, 1, time.Second)
	testkit.Eventually(t, 10*time.Second, func() error {
		got, ok := e.view.Get(b.Id)
		if !ok || got.GetState() != "expired" {
			return fmt.Errorf("not expired yet")
		}
		return nil
	})
	assert.Equal(t, "not_pending", code(e.decide(t, b.Id, bob, "approve")))
	assert.Equal(t, "not_approved", code(e.consume(t, b.Id, "s1", "h1", alice)))
}

// A worker's followed view sees a held request's outcome (the way a held
// statement learns it).
func TestAwaitSeesTheOutcome(t *testing.T) {
	e := setup(t)
	a := e.open(t, 1, time.Minute)
	view := approvalstate.NewView()
	go func() { _ = view.Follow(e.ctx, e.conn.JS) }()
	done := make(chan *approvalsv1.Approval, 1)
	go func() {
		got, err := view.Await(e.ctx, a.Id)
		assert.NoError(t, err)
		done <- got
	}()
	time.Sleep(100 * time.Millisecond)
	require.Nil(t, e.decide(t, a.Id, bob, "approve").GetError())
	select {
	case got := <-done:
		assert.Equal(t, "approved", got.GetState())
	case <-time.After(10 * time.Second):
		t.Fatal("no outcome")
	}
}

func TestGrantLifecycle(t *testing.T) {
	e := setup(t)
	r, err := e.call(approvals.SubjectGrant, &approvalsv1.RequestGrant{Requester: alice, Target: "demo", Role: "writer", DurationSeconds: 2, Reason: "backfill"})
	require.NoError(t, err)
	require.Nil(t, r.GetError())
	id := r.GetApproval().GetId()
	grants, _, _ := e.view.Grants("alice", "demo", time.Now())
	assert.Empty(t, grants, "not yet approved")

	r, err = e.call(approvals.SubjectGrant, &approvalsv1.RequestGrant{Requester: alice, Target: "nowhere", Role: "writer", DurationSeconds: 60, Reason: "x"})
	require.NoError(t, err)
	assert.Equal(t, "not_found", code(r))

	require.Nil(t, e.decide(t, id, bob, "approve").GetError())
	testkit.Eventually(t, 5*time.Second, func() error {
		g, _, next := e.view.Grants("alice", "demo", time.Now())
		if len(g) != 1 || g[0].GetRole() != "writer" || next.IsZero() {
			return fmt.Errorf("grants %v", g)
		}
		return nil
	})
	// It ends by itself.
	time.Sleep(2100 * time.Millisecond)
	g, _, _ := e.view.Grants("alice", "demo", time.Now())
	assert.Empty(t, g)

	// Revocation ends a grant early.
	r, _ = e.call(approvals.SubjectGrant, &approvalsv1.RequestGrant{Requester: alice, Target: "demo", Role: "writer", DurationSeconds: 3600, Reason: "y"})
	id = r.GetApproval().GetId()
	require.Nil(t, e.decide(t, id, bob, "approve").GetError())
	rr, err := e.call(approvals.SubjectRevoke, &approvalsv1.Revoke{Id: id, By: dave, Reason: "no"})
	require.NoError(t, err)
	assert.Equal(t, "forbidden", code(rr))
	rr, err = e.call(approvals.SubjectRevoke, &approvalsv1.Revoke{Id: id, By: alice, Reason: "done early"})
	require.NoError(t, err)
	require.Nil(t, rr.GetError())
	testkit.Eventually(t, 5*time.Second, func() error {
		if g, _, _ := e.view.Grants("alice", "demo", time.Now()); len(g) != 0 {
			return fmt.Errorf("still granted")
		}
		return nil
	})
}
