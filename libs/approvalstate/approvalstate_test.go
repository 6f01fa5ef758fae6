package approvalstate_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"sluice.dev/sluice/libs/approvalstate"
	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/testkit"
	approvalsv1 "sluice.dev/sluice/proto/sluice/approvals/v1"
)

// Await returns an approval's outcome from the followed view: at once when
// it is already decided, when it is decided later, and never a pending
// state; a cancelled wait returns the context's error.
func TestAwait(t *testing.T) {
	_, conn := testkit.NATS(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	require.NoError(t, bus.Provision(ctx, conn.JS, bus.Topology{}))
	kv, err := conn.JS.KeyValue(ctx, bus.BucketApprovals)
	require.NoError(t, err)
	put := func(id, state string) {
		b, err := proto.Marshal(&approvalsv1.Approval{Id: id, State: state})
		require.NoError(t, err)
		_, err = kv.Put(ctx, id, b)
		require.NoError(t, err)
	}
	put("done", "denied")
	v := approvalstate.NewView()
	go func() { _ = v.Follow(ctx, conn.JS) }()

	a, err := v.Await(ctx, "done")
	require.NoError(t, err)
	assert.Equal(t, "denied", a.GetState())

	// Not yet in the view, then pending, then approved.
	got := make(chan *approvalsv1.Approval, 1)
	go func() {
		a, err := v.Await(ctx, "later")
		assert.NoError(t, err)
		got <- a
	}()
	put("later", "pending")
	select {
	case a := <-got:
		t.Fatalf("returned a pending approval: %v", a)
	case <-time.After(200 * time.Millisecond):
	}
	put("later", "approved")
	select {
	case a := <-got:
		assert.Equal(t, "approved", a.GetState())
	case <-time.After(10 * time.Second):
		t.Fatal("Await did not return once the approval was decided")
	}

	wctx, wcancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() {
		_, err := v.Await(wctx, "never")
		errc <- err
	}()
	wcancel()
	assert.ErrorIs(t, <-errc, context.Canceled)
}
