package control_test

import (
	"fmt"
	"maps"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/controlstate"
	"sluice.dev/sluice/libs/eventstore"
	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
	"sluice.dev/sluice/services/control"
)

// TestApplyIsOneEvent: an apply is stored as one config.applied event
// holding every piece it changed; concurrent applies serialize (each is
// compared with the state the previous one left, none is lost, policy
// revisions follow each other); the fold of CONTROL, schema-1 events
// included, is exactly the bucket.
func TestApplyIsOneEvent(t *testing.T) {
	ctx, conn := startControl(t)
	store := eventstore.New(conn.JS, bus.StreamControl, bus.SubjectControl)

	// A stream written before applies were stored whole: one event per
	// piece, on each piece's aggregate.
	_, err := store.Append(ctx, controlstate.AggregateTarget, "legacy", eventstore.Position{}, eventstore.NewEvent("configured",
		&controlv1.TargetConfigured{Spec: &controlv1.TargetSpec{Name: "legacy", Kind: "postgres"}, Digest: "d0", AppliedBy: "old"}))
	require.NoError(t, err)
	_, err = store.Append(ctx, controlstate.AggregatePolicy, controlstate.Singleton, eventstore.Position{}, eventstore.NewEvent("applied",
		&controlv1.PolicySetApplied{Digest: "p0", Revision: 1, AppliedBy: "old"}))
	require.NoError(t, err)

	apply := func(config string) *controlv1.ApplyResponse {
		var resp controlv1.ApplyResponse
		require.NoError(t, bus.Request(ctx, conn.NC, bus.APIControlBreakGlass, &controlv1.ApplyRequest{Config: []byte(config), FileName: "sluice.yaml"}, &resp))
		return &resp
	}
	breakGlass(t, ctx, conn, "access:\n  admins: [ops]\n") // the service answers

	target := func(name string) string {
		return fmt.Sprintf("  - name: %s\n    kind: postgres\n    postgres: {host: h, database: d, user: u, password: {env: PW}}\n", name)
	}
	policy := func(reason string) string {
		return "policies:\n  - name: r\n    action: deny\n    reason: " + reason + "\n    when: protocol == \"postgres\" && sql.kind == \"ddl\"\n"
	}
	r := apply("targets:\n" + target("a") + target("b") + policy("first") + "access:\n  admins: [ops]\n")
	require.Nil(t, r.GetError(), "%v", r.GetError())
	assert.Equal(t, uint64(2), r.GetPolicyRevision(), "the revision follows the one a schema-1 event set")

	applied := func() []*controlv1.ConfigApplied {
		var out []*controlv1.ConfigApplied
		require.NoError(t, store.Read(ctx, bus.Subject(bus.SubjectControl, controlstate.AggregateConfig, ">"), func(e eventstore.Event) error {
			var ca controlv1.ConfigApplied
			require.NoError(t, e.Decode(&ca))
			out = append(out, &ca)
			return nil
		}))
		return out
	}
	all := applied()
	require.Len(t, all, 1, "one event for the whole apply")
	assert.Len(t, all[0].GetChanges(), 4, "two targets, the policy and the access section")
	assert.EqualValues(t, controlstate.ConfigSchema, all[0].GetSchema())

	// The same file again changes nothing and stores nothing.
	r = apply("targets:\n" + target("a") + target("b") + policy("first") + "access:\n  admins: [ops]\n")
	require.Nil(t, r.GetError())
	require.Len(t, applied(), 1)

	// Concurrent applies, each a target of its own and a new policy.
	const n = 6
	var wg sync.WaitGroup
	revisions := make(chan uint64, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := apply("targets:\n" + target(fmt.Sprintf("c%d", i)) + policy(fmt.Sprintf("reason %d", i)))
			if assert.Nil(t, r.GetError(), "%v", r.GetError()) {
				revisions <- r.GetPolicyRevision()
			}
		}()
	}
	wg.Wait()
	close(revisions)
	seen := map[uint64]bool{}
	for rev := range revisions {
		assert.False(t, seen[rev], "revision %d given twice", rev)
		seen[rev] = true
	}
	assert.Len(t, seen, n)
	for i := range n {
		assert.True(t, seen[uint64(3+i)], "revisions 3..%d follow each other", 2+n)
	}
	require.Len(t, applied(), 1+n)

	st, err := controlstate.Read(ctx, conn.JS)
	require.NoError(t, err)
	for _, name := range []string{"legacy", "a", "b", "c0", "c5"} {
		assert.Contains(t, st.Targets, name)
	}
	assert.EqualValues(t, 2+n, st.Policy.GetRevision())

	fold, err := control.Fold(ctx, conn.JS)
	require.NoError(t, err)
	kv, err := controlstate.Bucket(ctx, conn.JS)
	require.NoError(t, err)
	bucket := map[string][]byte{}
	keys, err := kv.ListKeys(ctx)
	require.NoError(t, err)
	for k := range keys.Keys() {
		e, err := kv.Get(ctx, k)
		require.NoError(t, err)
		bucket[k] = e.Value()
	}
	assert.True(t, maps.EqualFunc(fold, bucket, func(a, b []byte) bool { return string(a) == string(b) }), "the fold of both schemas is the bucket")
}
