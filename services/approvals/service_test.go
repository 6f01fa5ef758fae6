package approvals_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"sluice.dev/sluice/libs/approvalstate"
	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/controlstate"
	"sluice.dev/sluice/libs/devissuer"
	"sluice.dev/sluice/libs/testkit"
	approvalsv1 "sluice.dev/sluice/proto/sluice/approvals/v1"
	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
	"sluice.dev/sluice/services/approvals"
	"sluice.dev/sluice/services/identity/identitytest"
)

// Callers are identified by their tokens, never by a principal in a body.
type caller string

var alice, bob, carol, dave caller

type env struct {
	conn *bus.Conn
	ctx  context.Context
	view *approvalstate.View
	idp  *identitytest.IdP
}

func setup(t *testing.T) *env { return setupWith(t, approvals.Config{}) }

// setupWith runs the service with cfg (its connection and log set here).
func setupWith(t *testing.T, cfg approvals.Config) *env {
	_, conn := testkit.NATS(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	require.NoError(t, bus.Provision(ctx, conn.JS, bus.Topology{}))
	idp := identitytest.Start(ctx, t, conn)
	alice, dave = caller(idp.Token("alice", "engineers")), caller(idp.Token("dave", "engineers"))
	bob, carol = caller(idp.Token("bob", "approvers")), caller(idp.Token("carol", "approvers"))
	kv, err := controlstate.Bucket(ctx, conn.JS)
	require.NoError(t, err)
	groups, _ := proto.Marshal(&controlv1.ApproverGroupsSet{Groups: []*controlv1.ApproverGroup{{Name: "approvers", Groups: []string{"approvers"}, Subjects: []string{"erin@example.com"}},
		{Name: "reviewers", Groups: []string{"reviewers"}}}})
	_, err = kv.Put(ctx, controlstate.KeyApprovers, groups)
	require.NoError(t, err)
	access, _ := proto.Marshal(&controlv1.AccessConfigured{Admins: []string{"admins"}, Auditors: []string{"auditors"}, GrantApprovers: "approvers"})
	_, err = kv.Put(ctx, controlstate.KeyAccess, access)
	require.NoError(t, err)
	target, _ := proto.Marshal(&controlv1.TargetConfigured{Spec: &controlv1.TargetSpec{Name: "demo", Kind: "postgres"}})
	_, err = kv.Put(ctx, controlstate.TargetKey("demo"), target)
	require.NoError(t, err)
	cfg.Conn, cfg.Log = conn, zerolog.Nop()
	go func() { _ = approvals.New(cfg).Run(ctx) }()
	v := approvalstate.NewView()
	go func() { _ = v.Follow(ctx, conn.JS) }()
	e := &env{conn: conn, ctx: ctx, view: v, idp: idp}
	testkit.Eventually(t, 10*time.Second, func() error {
		r, err := e.list(alice, "all")
		if err == nil && r.GetError() != nil {
			err = fmt.Errorf("%s", r.GetError().GetMessage())
		}
		return err
	})
	return e
}

func (e *env) list(who caller, state string) (*approvalsv1.ListReply, error) {
	var r approvalsv1.ListReply
	err := bus.Request(identitytest.As(e.ctx, string(who)), e.conn.NC, bus.APIApprovalsList, &approvalsv1.ListRequest{State: state}, &r)
	return &r, err
}

func (e *env) call(who caller, subject string, req proto.Message) (*approvalsv1.ApprovalReply, error) {
	var r approvalsv1.ApprovalReply
	err := bus.Request(identitytest.As(e.ctx, string(who)), e.conn.NC, subject, req, &r)
	return &r, err
}

func (e *env) open(t *testing.T, quorum uint32, ttl time.Duration) *approvalsv1.Approval {
	r, err := e.call(alice, bus.APIApprovalsOpen, &approvalsv1.OpenRequest{SessionId: "s1", Target: "demo",
		Command: "DELETE FROM customers", CommandHash: "h1", Rule: "review-unbounded-writes", ApproverGroups: []string{"approvers"},
		Quorum: quorum, TtlSeconds: int64(ttl.Seconds())})
	require.NoError(t, err)
	require.Nil(t, r.GetError())
	return r.GetApproval()
}

func (e *env) decide(t *testing.T, id string, who caller, verdict string) *approvalsv1.ApprovalReply {
	r, err := e.call(who, bus.APIApprovalsDecide, &approvalsv1.Decide{Id: id, Verdict: verdict, Reason: "test"})
	require.NoError(t, err)
	return r
}

func (e *env) consume(t *testing.T, id, session, hash string, who caller) *approvalsv1.ApprovalReply {
	r, err := e.call(who, bus.APIApprovalsConsume, &approvalsv1.Consume{Id: id, SessionId: session, CommandHash: hash})
	require.NoError(t, err)
	return r
}

func code(r *approvalsv1.ApprovalReply) string { return r.GetError().GetCode() }

func TestQuorumSelfApprovalAndSingleUse(t *testing.T) {
	e := setup(t)
	a := e.open(t, 2, time.Minute)
	assert.Equal(t, "pending", a.GetState())

	assert.Equal(t, "alice", a.GetRequester().GetSubject(), "the requester is the token's subject")
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
	r, err := e.call(alice, bus.APIGrantsRequest, &approvalsv1.RequestGrant{Target: "demo", Role: "writer", DurationSeconds: 2, Reason: "backfill"})
	require.NoError(t, err)
	require.Nil(t, r.GetError())
	id := r.GetApproval().GetId()
	assert.Empty(t, e.view.Grants(e.idp.Issuer.URL, "alice", "demo", "", time.Now()).Grants, "not yet approved")

	r, err = e.call(alice, bus.APIGrantsRequest, &approvalsv1.RequestGrant{Target: "nowhere", Role: "writer", DurationSeconds: 60, Reason: "x"})
	require.NoError(t, err)
	assert.Equal(t, "not_found", code(r))
	for _, role := range []string{"writer\u202e", "-x", "w r", "wri\nter"} {
		r, err = e.call(alice, bus.APIGrantsRequest, &approvalsv1.RequestGrant{Target: "demo", Role: role, DurationSeconds: 60, Reason: "x"})
		require.NoError(t, err)
		assert.Equal(t, "bad_request", code(r), "role %q", role)
	}
	// A session id an approver reads as written (it once drew a fake
	// "role:" line on an approver's terminal).
	r, err = e.call(alice, bus.APIGrantsRequest, &approvalsv1.RequestGrant{Target: "demo", Role: "writer", DurationSeconds: 60, Reason: "x",
		SessionId: "x\nrole:        reader\x1b[8m"})
	require.NoError(t, err)
	assert.Equal(t, "bad_request", code(r))

	require.Nil(t, e.decide(t, id, bob, "approve").GetError())
	testkit.Eventually(t, 5*time.Second, func() error {
		gs := e.view.Grants(e.idp.Issuer.URL, "alice", "demo", "", time.Now())
		if len(gs.Grants) != 1 || gs.Grants[0].GetRole() != "writer" || gs.Next.IsZero() || gs.Scoped {
			return fmt.Errorf("grants %+v", gs)
		}
		return nil
	})
	// It ends by itself.
	time.Sleep(2100 * time.Millisecond)
	assert.Empty(t, e.view.Grants(e.idp.Issuer.URL, "alice", "demo", "", time.Now()).Grants)

	// Revocation ends a grant early.
	r, _ = e.call(alice, bus.APIGrantsRequest, &approvalsv1.RequestGrant{Target: "demo", Role: "writer", DurationSeconds: 3600, Reason: "y"})
	id = r.GetApproval().GetId()
	require.Nil(t, e.decide(t, id, bob, "approve").GetError())
	// In force first, or the wait for its end below proves nothing.
	testkit.Eventually(t, 5*time.Second, func() error {
		if g := e.view.Grants(e.idp.Issuer.URL, "alice", "demo", "", time.Now()).Grants; len(g) != 1 {
			return fmt.Errorf("not granted yet")
		}
		return nil
	})
	rr, err := e.call(dave, bus.APIGrantsRevoke, &approvalsv1.Revoke{Id: id, Reason: "no"})
	require.NoError(t, err)
	assert.Equal(t, "forbidden", code(rr))
	rr, err = e.call(alice, bus.APIGrantsRevoke, &approvalsv1.Revoke{Id: id, Reason: "done early"})
	require.NoError(t, err)
	require.Nil(t, rr.GetError())
	testkit.Eventually(t, 5*time.Second, func() error {
		if g := e.view.Grants(e.idp.Issuer.URL, "alice", "demo", "", time.Now()).Grants; len(g) != 0 {
			return fmt.Errorf("still granted")
		}
		return nil
	})
}

// TestApprovalWithScope: an approver approves a held command and, at once,
// a bounded scope for its session: a grant of the role on the command's
// target, confined to the command's session, naming the request.
func TestApprovalWithScope(t *testing.T) {
	e := setup(t)
	// Only the grant approvers add a grant: approving one held command is
	// not granting a role.
	rev, err := e.call(alice, bus.APIApprovalsOpen, &approvalsv1.OpenRequest{SessionId: "s1", Target: "demo",
		Command: "UPDATE t SET x = 1", CommandHash: "hr", ApproverGroups: []string{"reviewers"}, Quorum: 1, TtlSeconds: 60})
	require.NoError(t, err)
	require.Nil(t, rev.GetError())
	dan := caller(e.idp.Token("dan", "reviewers"))
	r0, err := e.call(dan, bus.APIApprovalsDecide, &approvalsv1.Decide{Id: rev.GetApproval().GetId(), Verdict: "approve", GrantRole: "ddl", GrantSeconds: 600})
	require.NoError(t, err)
	assert.Equal(t, "forbidden", code(r0))
	require.Nil(t, e.decide(t, rev.GetApproval().GetId(), dan, "approve").GetError(), "the approval alone is theirs to give")

	scoped := func(id, role string, secs int64) *approvalsv1.ApprovalReply {
		r, err := e.call(bob, bus.APIApprovalsDecide, &approvalsv1.Decide{Id: id, Verdict: "approve", Reason: "fixtures", GrantRole: role, GrantSeconds: secs})
		require.NoError(t, err)
		return r
	}
	a := e.open(t, 1, time.Minute)
	assert.Equal(t, "bad_request", code(scoped(a.GetId(), "ddl", 0)), "a scope has a duration")
	assert.Equal(t, "bad_request", code(scoped(a.GetId(), "ddl", int64((25*time.Hour).Seconds()))), "within the longest grant")
	r, err := e.call(bob, bus.APIApprovalsDecide, &approvalsv1.Decide{Id: a.GetId(), Verdict: "deny", GrantRole: "ddl", GrantSeconds: 60})
	require.NoError(t, err)
	assert.Equal(t, "bad_request", code(r), "no scope with a denial")

	r = scoped(a.GetId(), "ddl", 600)
	require.Nil(t, r.GetError())
	assert.Equal(t, "approved", r.GetApproval().GetState())
	gid := r.GetApproval().GetGrantId()
	require.NotEmpty(t, gid)
	testkit.Eventually(t, 5*time.Second, func() error {
		gs := e.view.Grants(e.idp.Issuer.URL, "alice", "demo", "s1", time.Now())
		if len(gs.Grants) != 1 || gs.Grants[0].GetId() != gid || gs.Grants[0].GetRole() != "ddl" || gs.Grants[0].GetSessionId() != "s1" || !gs.Scoped {
			return fmt.Errorf("grants %+v", gs)
		}
		if left := time.Until(gs.Next); left < 9*time.Minute || left > 10*time.Minute {
			return fmt.Errorf("ends in %s", left)
		}
		return nil
	})
	// Another session of the same principal does not hold it, but knows
	// that the principal's grants depend on the session.
	other := e.view.Grants(e.idp.Issuer.URL, "alice", "demo", "s2", time.Now())
	assert.Empty(t, other.Grants)
	assert.True(t, other.Scoped)
	assert.Empty(t, e.view.Grants(e.idp.Issuer.URL, "dave", "demo", "s1", time.Now()).Grants, "nobody else holds it")
	assert.Empty(t, e.view.Grants("https://agents.example", "alice", "demo", "s1", time.Now()).Grants,
		"a subject of the same name at another issuer is someone else")

	// The grant is an approval of its own: who asked, who granted, why,
	// and the request it came with.
	// (The service answers from its own view, which may be a moment behind.)
	var g *approvalsv1.ApprovalReply
	testkit.Eventually(t, 5*time.Second, func() error {
		var err error
		if g, err = e.call(alice, bus.APIApprovalsGet, &approvalsv1.Get{Id: gid}); err != nil {
			return err
		}
		if g.GetError() != nil {
			return fmt.Errorf("%s", g.GetError().GetMessage())
		}
		return nil
	})
	assert.Equal(t, "grant", g.GetApproval().GetType())
	assert.Equal(t, "alice", g.GetApproval().GetRequester().GetSubject())
	assert.Equal(t, "bob", g.GetApproval().GetDecidedBy())
	assert.Equal(t, a.GetId(), g.GetApproval().GetRequestId())
	assert.Equal(t, "s1", g.GetApproval().GetSessionId())

	// A quorum of two: only the vote that completes it may add a scope.
	q := e.open(t, 2, time.Minute)
	assert.Equal(t, "bad_request", code(scoped(q.GetId(), "ddl", 60)))
	require.Nil(t, e.decide(t, q.GetId(), carol, "approve").GetError())
	require.Nil(t, scoped(q.GetId(), "ddl", 60).GetError())

	// A grant request is not a held command.
	gr, err := e.call(alice, bus.APIGrantsRequest, &approvalsv1.RequestGrant{Target: "demo", Role: "writer", DurationSeconds: 60, Reason: "x", SessionId: "s3"})
	require.NoError(t, err)
	require.Nil(t, gr.GetError())
	assert.Equal(t, "bad_request", code(scoped(gr.GetApproval().GetId(), "ddl", 60)))
	// A grant asked for one session holds in that session only.
	require.Nil(t, e.decide(t, gr.GetApproval().GetId(), bob, "approve").GetError())
	testkit.Eventually(t, 5*time.Second, func() error {
		if gs := e.view.Grants(e.idp.Issuer.URL, "alice", "demo", "s3", time.Now()); len(gs.Grants) != 1 || gs.Grants[0].GetRole() != "writer" {
			return fmt.Errorf("grants %+v", gs)
		}
		return nil
	})
	assert.Len(t, e.view.Grants(e.idp.Issuer.URL, "alice", "demo", "s1", time.Now()).Grants, 2, "s1: the two scopes approved with its commands")
}

// TestCallersAreVerified: the caller is the principal of the token the
// request carries. Without one, or with a forged one, nothing happens; a
// principal cannot be written into a request.
func TestCallersAreVerified(t *testing.T) {
	e := setup(t)
	a := e.open(t, 1, time.Minute)
	auditor := caller(e.idp.Token("audrey", "auditors"))
	// Once the request is in the service's view...
	testkit.Eventually(t, 10*time.Second, func() error {
		l, err := e.list(auditor, "all")
		if err == nil && len(l.GetApprovals()) != 1 {
			err = fmt.Errorf("%d approvals listed", len(l.GetApprovals()))
		}
		if _, ok := e.view.Get(a.Id); err == nil && !ok {
			err = fmt.Errorf("not in the test's view yet")
		}
		return err
	})
	for name, who := range map[string]caller{"no token": "", "forged token": "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJib2IifQ.c2ln"} {
		r, err := e.call(who, bus.APIApprovalsDecide, &approvalsv1.Decide{Id: a.Id, Verdict: "approve"})
		require.NoError(t, err)
		assert.NotNil(t, r.GetError(), name)
		r, err = e.call(who, bus.APIApprovalsOpen, &approvalsv1.OpenRequest{SessionId: "s1", CommandHash: "h", ApproverGroups: []string{"approvers"}})
		require.NoError(t, err)
		assert.NotNil(t, r.GetError(), name)
		l, err := e.list(who, "all")
		require.NoError(t, err)
		assert.NotNil(t, l.GetError(), name)
	}
	got, _ := e.view.Get(a.Id)
	assert.Equal(t, "pending", got.GetState(), "nothing was decided")

	// Visibility: the requester, those who may decide and auditors (named
	// by the access section) see a request; another engineer does not,
	// not even that it exists.
	r, err := e.call(dave, bus.APIApprovalsGet, &approvalsv1.Get{Id: a.Id})
	require.NoError(t, err)
	assert.Equal(t, "not_found", code(r))
	r, err = e.call(alice, bus.APIApprovalsGet, &approvalsv1.Get{Id: a.Id})
	require.NoError(t, err)
	assert.Nil(t, r.GetError(), "the requester sees her request")
	l, err := e.list(dave, "all")
	require.NoError(t, err)
	assert.Empty(t, l.GetApprovals())
	l, err = e.list(bob, "pending")
	require.NoError(t, err)
	assert.Len(t, l.GetApprovals(), 1, "an approver sees what he may decide")
}

// TestSlackDecisionsCountAsAnEmail: the Slack bot's subject carries an
// email the bot vouches for, never groups; it approves only where an
// approver group lists that email.
func TestSlackDecisionsCountAsAnEmail(t *testing.T) {
	e := setup(t)
	a := e.open(t, 1, time.Minute)
	var r approvalsv1.ApprovalReply
	require.NoError(t, bus.Request(e.ctx, e.conn.NC, bus.APIApprovalsSlackDecide, &approvalsv1.SlackDecide{Id: a.Id, Verdict: "approve", Email: "mallory@example.com"}, &r))
	assert.Equal(t, "forbidden", code(&r))
	require.NoError(t, bus.Request(e.ctx, e.conn.NC, bus.APIApprovalsSlackDecide, &approvalsv1.SlackDecide{Id: a.Id, Verdict: "approve", Email: "erin@example.com"}, &r))
	require.Nil(t, r.GetError())
	assert.Equal(t, "approved", r.GetApproval().GetState())
	assert.Equal(t, []string{"erin@example.com"}, r.GetApproval().GetApprovedBy())

	slack := func(id, email string) string {
		var r approvalsv1.ApprovalReply
		require.NoError(t, bus.Request(e.ctx, e.conn.NC, bus.APIApprovalsSlackDecide, &approvalsv1.SlackDecide{Id: id, Verdict: "approve", Email: email}, &r))
		return code(&r)
	}
	// The requester cannot approve her own request under her email.
	b := e.open(t, 2, time.Minute)
	assert.Equal(t, "self_approval", slack(b.Id, "ALICE@example.com"))
	// One person is one vote: erin approves with her token, then again
	// from Slack; the quorum of two is not met.
	erin := caller(e.idp.Token("erin"))
	require.Nil(t, e.decide(t, b.Id, erin, "approve").GetError())
	assert.Equal(t, "already_voted", slack(b.Id, "erin@example.com"))
	testkit.Eventually(t, 5*time.Second, func() error { // get reads the service's view
		got, err := e.call(alice, bus.APIApprovalsGet, &approvalsv1.Get{Id: b.Id})
		if err != nil || got.GetApproval().GetState() != "pending" || len(got.GetApproval().GetApprovedBy()) != 1 {
			return fmt.Errorf("%v %v", err, got)
		}
		return nil
	})
	// A Slack decision names an email, never a bare subject.
	assert.Equal(t, "bad_request", slack(b.Id, "bob"))

	// A requester whose token carries no email cannot be told apart from
	// a Slack user: nobody approves from Slack, not even herself.
	noMail := caller(e.idp.Mint(devissuer.Claims{Subject: "frank", Groups: []string{"engineers"}}))
	r2, err := e.call(noMail, bus.APIApprovalsOpen, &approvalsv1.OpenRequest{SessionId: "s9", Target: "demo",
		Command: "DELETE FROM customers", CommandHash: "h9", ApproverGroups: []string{"approvers"}, Quorum: 2, TtlSeconds: 60})
	require.NoError(t, err)
	require.Nil(t, r2.GetError())
	assert.Equal(t, "not_comparable", slack(r2.GetApproval().GetId(), "erin@example.com"))
	// An earlier approver without an email is no one a Slack vote can be
	// told apart from either.
	c := e.open(t, 2, time.Minute)
	gina := caller(e.idp.Mint(devissuer.Claims{Subject: "gina", Groups: []string{"approvers"}}))
	require.Nil(t, e.decide(t, c.Id, gina, "approve").GetError())
	assert.Equal(t, "not_comparable", slack(c.Id, "erin@example.com"))
}

// A request is opened only for a command an approver is shown whole: one
// longer than MaxCommandExcerpt is refused, whatever the caller sends (a
// whole text, or an excerpt and the size of the rest).
func TestRequestsShowTheWholeCommand(t *testing.T) {
	e := setup(t)
	cmd := "SELECT '" + strings.Repeat("é", 4000) + "'" // 8 KiB, two bytes a character
	r, err := e.call(alice, bus.APIApprovalsOpen, &approvalsv1.OpenRequest{SessionId: "s1", Target: "demo",
		Command: cmd, CommandHash: "h", ApproverGroups: []string{"approvers"}})
	require.NoError(t, err)
	require.Nil(t, r.GetError())
	assert.Equal(t, cmd, r.GetApproval().GetCommand())
	assert.True(t, utf8.ValidString(r.GetApproval().GetCommand()))
	// What would not show as itself is kept written out, so that every
	// surface (the CLI, the console, Slack, the audit log) shows it.
	r, err = e.call(alice, bus.APIApprovalsOpen, &approvalsv1.OpenRequest{SessionId: "s1", Target: "demo",
		Command: "SELECT 1 -- \u202e;\rDROP TABLE t\x1b[2K", CommandHash: "h3", ApproverGroups: []string{"approvers"}})
	require.NoError(t, err)
	require.Nil(t, r.GetError())
	assert.Equal(t, "SELECT 1 -- ⟨U+202E⟩;⟨U+000D⟩DROP TABLE t⟨U+001B⟩[2K", r.GetApproval().GetCommand())
	for _, req := range []*approvalsv1.OpenRequest{
		{Command: strings.Repeat("x", approvalstate.MaxCommandExcerpt+1)},
		{Command: "SELECT 1", CommandSize: 1 << 20},
		// Within the bound as sent, beyond it written out.
		{Command: strings.Repeat("\u200b", approvalstate.MaxCommandExcerpt/3)},
	} {
		req.SessionId, req.Target, req.CommandHash, req.ApproverGroups = "s1", "demo", "h2", []string{"approvers"}
		r, err = e.call(alice, bus.APIApprovalsOpen, req)
		require.NoError(t, err)
		assert.Equal(t, "too_long", r.GetError().GetCode())
	}
}

// A request is withdrawn by its requester's own session; a withdrawn
// request is neither decided nor consumed.
func TestWithdraw(t *testing.T) {
	e := setup(t)
	withdraw := func(who caller, id, session string) *approvalsv1.ApprovalReply {
		r, err := e.call(who, bus.APIApprovalsWithdraw, &approvalsv1.Withdraw{Id: id, SessionId: session, Reason: "the client disconnected"})
		require.NoError(t, err)
		return r
	}
	a := e.open(t, 1, time.Minute)
	assert.Equal(t, "mismatch", code(withdraw(alice, a.Id, "another-session")))
	assert.Equal(t, "mismatch", code(withdraw(dave, a.Id, "s1")), "another principal")
	r := withdraw(alice, a.Id, "s1")
	require.Nil(t, r.GetError())
	assert.Equal(t, "withdrawn", r.GetApproval().GetState())
	assert.Equal(t, "the client disconnected", r.GetApproval().GetDecisionReason())
	d := e.decide(t, a.Id, bob, "approve")
	assert.Equal(t, "not_pending", code(d))
	assert.Contains(t, d.GetError().GetMessage(), "withdrawn (the client disconnected); nothing will run")
	assert.Equal(t, "not_approved", code(e.consume(t, a.Id, "s1", "h1", alice)))

	// Approved but not yet run: withdrawn too, and never consumed.
	b := e.open(t, 1, time.Minute)
	require.Nil(t, e.decide(t, b.Id, bob, "approve").GetError())
	assert.Equal(t, "withdrawn", withdraw(alice, b.Id, "s1").GetApproval().GetState())
	assert.Equal(t, "not_approved", code(e.consume(t, b.Id, "s1", "h1", alice)))

	// A session whose token no longer verifies still withdraws its own.
	c := e.open(t, 1, time.Minute)
	assert.Equal(t, "mismatch", code(withdraw(caller("not-a-token"), c.Id, "s2")))
	assert.Equal(t, "withdrawn", withdraw(caller("not-a-token"), c.Id, "s1").GetApproval().GetState())
}

// The same statement held again by the same requester supersedes the
// pending request: approvers see one.
func TestRetriesDoNotPileUp(t *testing.T) {
	e := setup(t)
	first := e.open(t, 1, time.Minute)
	testkit.Eventually(t, 5*time.Second, func() error {
		if _, ok := e.view.Get(first.Id); !ok {
			return fmt.Errorf("not in the view yet")
		}
		return nil
	})
	second := e.open(t, 1, time.Minute)
	other, err := e.call(dave, bus.APIApprovalsOpen, &approvalsv1.OpenRequest{SessionId: "s9", Target: "demo",
		Command: "DELETE FROM customers", CommandHash: "h1", ApproverGroups: []string{"approvers"}})
	require.NoError(t, err)
	testkit.Eventually(t, 5*time.Second, func() error {
		got, _ := e.view.Get(first.Id)
		if got.GetState() != "withdrawn" {
			return fmt.Errorf("first is %s", got.GetState())
		}
		return nil
	})
	got, _ := e.view.Get(first.Id)
	assert.Contains(t, got.GetDecisionReason(), second.Id)
	// Another requester's same statement is a request of its own.
	want := []string{second.Id, other.GetApproval().GetId()}
	testkit.Eventually(t, 5*time.Second, func() error {
		r, err := e.list(bob, "pending")
		if err != nil {
			return err
		}
		var ids []string
		for _, a := range r.GetApprovals() {
			ids = append(ids, a.GetId())
		}
		slices.Sort(ids)
		slices.Sort(want)
		if !slices.Equal(ids, want) {
			return fmt.Errorf("pending %v, want %v", ids, want)
		}
		return nil
	})
}

// No caller makes a request large (every worker follows every request),
// or makes many.
func TestRequestsAreBounded(t *testing.T) {
	e := setup(t)
	big := strings.Repeat("r", approvals.MaxText+1)
	open := func(who caller, mutate func(*approvalsv1.OpenRequest)) *approvalsv1.ApprovalReply {
		req := &approvalsv1.OpenRequest{SessionId: "s1", Target: "demo", Command: "DELETE FROM t", CommandHash: fmt.Sprint("h", time.Now().UnixNano()), ApproverGroups: []string{"approvers"}}
		mutate(req)
		r, err := e.call(who, bus.APIApprovalsOpen, req)
		require.NoError(t, err)
		return r
	}
	assert.Equal(t, "bad_request", code(open(alice, func(r *approvalsv1.OpenRequest) { r.Reason = big })))
	assert.Equal(t, "bad_request", code(open(alice, func(r *approvalsv1.OpenRequest) { r.Rule = big[:approvals.MaxName+1] })))
	assert.Equal(t, "bad_request", code(open(alice, func(r *approvalsv1.OpenRequest) {
		for i := 0; i <= approvals.MaxGroups; i++ {
			r.ApproverGroups = append(r.ApproverGroups, fmt.Sprint("g", i))
		}
	})))
	for _, req := range []*approvalsv1.RequestGrant{
		{Target: "demo", Role: "writer", DurationSeconds: 60, Reason: big},
		{Target: "demo", Role: big[:approvals.MaxName+1], DurationSeconds: 60, Reason: "r"},
	} {
		r, err := e.call(dave, bus.APIGrantsRequest, req)
		require.NoError(t, err)
		assert.Equal(t, "bad_request", code(r))
	}
	a := e.open(t, 1, time.Minute)
	d := e.decide(t, a.Id, bob, "deny")
	require.Nil(t, d.GetError())
	r, err := e.call(bob, bus.APIApprovalsDecide, &approvalsv1.Decide{Id: e.open(t, 1, time.Minute).Id, Verdict: "approve", Reason: big})
	require.NoError(t, err)
	assert.Equal(t, "bad_request", code(r))

	// At most MaxPending pending requests per requester.
	for i := 0; i < approvals.MaxPending; i++ {
		testkit.Eventually(t, 5*time.Second, func() error {
			if r := open(dave, func(*approvalsv1.OpenRequest) {}); r.GetError() != nil {
				return fmt.Errorf("%s", r.GetError().GetMessage())
			}
			return nil
		})
	}
	testkit.Eventually(t, 5*time.Second, func() error {
		if c := code(open(dave, func(*approvalsv1.OpenRequest) {})); c != "too_many" {
			return fmt.Errorf("got %q", c)
		}
		return nil
	})
	assert.Nil(t, open(carol, func(*approvalsv1.OpenRequest) {}).GetError(), "another requester is not limited")
}

// TestOutcomesAreCounted: opened requests by protocol, decisions and
// expiries by outcome, and the pending requests of the view.
func TestOutcomesAreCounted(t *testing.T) {
	e := setup(t)
	opened := testutil.ToFloat64(approvals.OpenedMetric.WithLabelValues("postgres"))
	denied := testutil.ToFloat64(approvals.DecidedMetric.WithLabelValues("denied"))
	expired := testutil.ToFloat64(approvals.DecidedMetric.WithLabelValues("expired"))
	open := func(ttl time.Duration) *approvalsv1.Approval {
		r, err := e.call(alice, bus.APIApprovalsOpen, &approvalsv1.OpenRequest{SessionId: "s1", Target: "demo", Protocol: "postgres",
			Command: fmt.Sprintf("DELETE FROM t%d", ttl), CommandHash: fmt.Sprintf("h%d", ttl), Rule: "r", ApproverGroups: []string{"approvers"},
			Quorum: 1, TtlSeconds: int64(ttl.Seconds())})
		require.NoError(t, err)
		require.Nil(t, r.GetError())
		return r.GetApproval()
	}
	a := open(time.Minute)
	open(time.Second)
	open(time.Hour)
	assert.Equal(t, opened+3, testutil.ToFloat64(approvals.OpenedMetric.WithLabelValues("postgres")))
	require.Nil(t, e.decide(t, a.GetId(), bob, "deny").GetError())
	assert.Equal(t, denied+1, testutil.ToFloat64(approvals.DecidedMetric.WithLabelValues("denied")))
	assert.Equal(t, "not_pending", code(e.decide(t, a.GetId(), carol, "deny")), "decided once")
	assert.Equal(t, denied+1, testutil.ToFloat64(approvals.DecidedMetric.WithLabelValues("denied")))
	testkit.Eventually(t, 10*time.Second, func() error {
		if got := testutil.ToFloat64(approvals.DecidedMetric.WithLabelValues("expired")); got != expired+1 {
			return fmt.Errorf("expired: %v", got-expired)
		}
		if got := testutil.ToFloat64(approvals.PendingMetric); got != 1 {
			return fmt.Errorf("pending: %v", got)
		}
		return nil
	})
}

// Decided requests leave the hot view every worker follows once the hot
// retention has passed, for the history: get still finds them, lists page
// through them newest first, pending ones never leave, and the hot view
// holds only what can still change or changed recently.
func TestDecidedApprovalsRetireToTheHistory(t *testing.T) {
	e := setupWith(t, approvals.Config{HotRetention: time.Nanosecond})
	var decided []string
	for range 5 {
		a := e.open(t, 1, time.Minute)
		require.Nil(t, e.decide(t, a.Id, bob, "deny").GetError())
		decided = append(decided, a.Id)
	}
	pending := e.open(t, 1, time.Minute)
	// Until the view holds the pending request, the decided ones might
	// be missing from it only because it has not caught up.
	testkit.Eventually(t, 15*time.Second, func() error {
		if _, ok := e.view.Get(pending.Id); !ok {
			return fmt.Errorf("the pending request is not in the hot view yet")
		}
		for _, id := range decided {
			if _, ok := e.view.Get(id); ok {
				return fmt.Errorf("%s still in the hot view", id)
			}
		}
		return nil
	})
	time.Sleep(100 * time.Millisecond)
	_, ok := e.view.Get(pending.Id)
	assert.True(t, ok, "a pending request stays in the hot view")

	got, err := e.call(alice, bus.APIApprovalsGet, &approvalsv1.Get{Id: decided[0]})
	require.NoError(t, err)
	require.Nil(t, got.GetError())
	assert.Equal(t, "denied", got.GetApproval().GetState())
	assert.True(t, got.GetApproval().GetRetired())
	other, err := e.call(dave, bus.APIApprovalsGet, &approvalsv1.Get{Id: decided[0]})
	require.NoError(t, err)
	assert.Equal(t, "not_found", code(other), "the history answers only those who may read it")
	// A worker learns a retired request's outcome by consuming it as its
	// requester: the refusal carries the request; nobody else's does.
	mine := e.consume(t, decided[0], "s1", "h1", alice)
	assert.Equal(t, "not_approved", code(mine))
	assert.Equal(t, "denied", mine.GetApproval().GetState())
	theirs := e.consume(t, decided[0], "s1", "h1", dave)
	assert.Equal(t, "mismatch", code(theirs))
	assert.Nil(t, theirs.GetApproval())

	// Pages of two, newest retired first, then the end.
	var seen []string
	before := ""
	for page := 0; ; page++ {
		require.Less(t, page, 5)
		var r approvalsv1.ListReply
		require.NoError(t, bus.Request(identitytest.As(e.ctx, string(bob)), e.conn.NC, bus.APIApprovalsList,
			&approvalsv1.ListRequest{State: "denied", Limit: 2, Before: before}, &r))
		require.Nil(t, r.GetError())
		for _, a := range r.GetApprovals() {
			seen = append(seen, a.GetId())
		}
		if r.GetNext() == "" {
			break
		}
		before = r.GetNext()
	}
	assert.ElementsMatch(t, decided, seen, "every retired request once")
	pendingOnly, err := e.list(alice, "")
	require.NoError(t, err)
	require.Len(t, pendingOnly.GetApprovals(), 1)
	assert.Equal(t, pending.Id, pendingOnly.GetApprovals()[0].GetId())
	none, err := e.list(dave, "denied")
	require.NoError(t, err)
	assert.Empty(t, none.GetApprovals(), "another engineer sees none of alice's")
}
