package auditlog_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"sluice.dev/sluice/libs/auditlog"
	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/eventstore"
	"sluice.dev/sluice/libs/testkit"
	approvalsv1 "sluice.dev/sluice/proto/sluice/approvals/v1"
	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
)

// Events read back from the streams as the event store wrote them decode
// to facts that map to valid OCSF, and a decision whose request was opened
// before the reader started still names the requester and the command.
func TestFactsFromTheStreams(t *testing.T) {
	_, conn := testkit.NATS(t)
	ctx := context.Background()
	require.NoError(t, bus.Provision(ctx, conn.JS, bus.Topology{}))
	approvalsStore := eventstore.New(conn.JS, bus.StreamApprovals, bus.SubjectApprovals)
	// An id that bus.Token must encode in the subject.
	id := "01JG.REQ"
	_, err := approvalsStore.Append(ctx, "request", id, eventstore.Position{},
		eventstore.NewEvent("opened", &approvalsv1.RequestOpened{Id: id, Requester: alice, SessionId: "01JGSESSION", Target: "demo",
			Command: "DELETE FROM customers WHERE id = 1", Rule: "review-deletes"}))
	require.NoError(t, err)
	agg, err := approvalsStore.Load(ctx, "request", id)
	require.NoError(t, err)
	_, err = approvalsStore.Append(ctx, "request", id, agg.Position,
		eventstore.NewEvent("approved", &approvalsv1.RequestApproved{Id: id, Approver: bob, Reason: "ticket OPS-42", Granted: true}))
	require.NoError(t, err)
	_, err = eventstore.New(conn.JS, bus.StreamControl, bus.SubjectControl).Append(ctx, "policy", "default", eventstore.Position{},
		eventstore.NewEvent("applied", &controlv1.PolicySetApplied{Revision: 1, AppliedBy: "carol"}))
	require.NoError(t, err)

	read := func(stream string) []auditlog.Fact {
		c, err := conn.JS.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{})
		require.NoError(t, err)
		var out []auditlog.Fact
		for len(out) < map[string]int{bus.StreamApprovals: 2, bus.StreamControl: 1}[stream] {
			m, err := c.Next(jetstream.FetchMaxWait(5 * time.Second))
			require.NoError(t, err)
			f, err := auditlog.DecodeFact(m)
			require.NoError(t, err)
			out = append(out, f)
		}
		return out
	}
	facts := read(bus.StreamApprovals)
	opened, decided := facts[0], facts[1]
	assert.Equal(t, id, decided.Event.AggregateID)
	assert.Equal(t, "approvals.request.approved", decided.Kind())
	assert.EqualValues(t, 2, decided.Event.Version)
	assert.NotEmpty(t, decided.Event.ID)
	assert.False(t, decided.Event.Time.IsZero())

	// A fresh cache has not seen the request open: it looks it up.
	requests := auditlog.NewRequests(conn.JS)
	req := requests.Of(ctx, decided)
	require.NotNil(t, req)
	assert.Equal(t, "alice", req.GetRequester().GetSubject())
	out := auditlog.OCSFFact(decided, req)
	requireValidOCSF(t, out)
	check(t, out, want{6003, 3, map[string]any{"actor.user.name": "bob", "unmapped.approval.requester": "alice",
		"unmapped.approval.command": "DELETE FROM customers WHERE id = 1", "metadata.uid": decided.Event.ID}, []string{"ticket OPS-42"}})
	requireValidOCSF(t, auditlog.OCSFFact(opened, requests.Of(ctx, opened)))
	assert.Equal(t, "APPROVALS", auditlog.FactJSON(decided)["stream"])

	config := read(bus.StreamControl)[0]
	check(t, auditlog.OCSFFact(config, requests.Of(ctx, config)), want{6003, 1, map[string]any{"actor.user.name": "carol"}, nil})
}
