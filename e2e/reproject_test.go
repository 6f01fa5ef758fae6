package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/testkit"
	approvalsv1 "sluice.dev/sluice/proto/sluice/approvals/v1"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
)

// TestReprojectRebuildsEachProjection drops each projection (the control
// bucket, the approvals hot view and history, the sessions index), tampers
// with what is left, rebuilds it with `sluice admin reproject` from its
// stream, and gets the same answers as before.
func TestReprojectRebuildsEachProjection(t *testing.T) {
	requireTool(t, "psql")
	env := startDev(t, devOptions{extra: []string{"--hold-timeout", "20s", "--approvals-hot-retention", "1s"}})
	pg := &pgEnv{devEnv: env}
	alice := env.Token("--sub", "alice", "--groups", "engineers")
	bob := []string{"SLUICE_TOKEN=" + env.Token("--sub", "bob", "--groups", "approvers")}

	// Something in every projection: sessions, a denial, an approval.
	for _, sql := range []string{"SELECT name FROM customers WHERE id = 1", "SET ROLE postgres"} {
		_, _ = pg.psql(t, alice, "", "-c", sql)
	}
	held := make(chan string, 1)
	go func() {
		out, _ := pg.psql(t, alice, "", "-c", "DELETE FROM customers")
		held <- out
	}()
	id := pendingApproval(t, env, bob, "alice")
	out, err := env.CLI(bob, "approve", id)
	require.NoError(t, err, out)
	require.Contains(t, <-held, "DELETE")
	// A grant in force stays in the hot view; the consumed request retires
	// to the history.
	out, err = env.CLI([]string{"SLUICE_TOKEN=" + alice}, "request", "--target", "demo", "--role", "writer", "--for", "1h", "--reason", "backfill", "-o", "json")
	require.NoError(t, err, out)
	var grant struct{ ID string }
	require.NoError(t, json.Unmarshal([]byte(out), &grant), out)
	out, err = env.CLI(bob, "approve", grant.ID)
	require.NoError(t, err, out)
	testkit.Eventually(t, 30*time.Second, func() error {
		out, err := env.CLI(bob, "approvals", "list", "--state", "consumed", "-o", "json")
		if err != nil || !strings.Contains(out, id) || !strings.Contains(out, `"retired": true`) {
			return fmt.Errorf("not retired yet: %v %s", err, out)
		}
		return nil
	})

	reproject := func(args ...string) string {
		t.Helper()
		out, err := env.CLI(nil, append([]string{"admin", "reproject", "all", "--nats", env.natsURL(),
			"--nats-nkey-file", env.natsKey(bus.CompAdmin), "-o", "json"}, args...)...)
		require.NoError(t, err, out)
		return out
	}
	whole := func() error {
		var res struct {
			Projections []struct {
				Name                    string
				Keys                    int
				Missing, Changed, Extra int
			}
		}
		out := reproject("--dry-run")
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			return err
		}
		require.Len(t, res.Projections, 4)
		for _, p := range res.Projections {
			if p.Keys == 0 {
				return fmt.Errorf("%s folds to nothing: %s", p.Name, out)
			}
			if p.Missing+p.Changed+p.Extra != 0 {
				return fmt.Errorf("%s differs from its fold: %s", p.Name, out)
			}
		}
		return nil
	}
	// Once the services have written everything, each projection is its
	// stream's fold.
	testkit.Eventually(t, 30*time.Second, whole)

	nc := env.NATS(bus.CompAdmin)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx := context.Background()
	buckets := []string{bus.BucketControl, bus.BucketApprovals, bus.BucketApprovalsHistory, bus.BucketSessions}
	before := map[string]map[string][]byte{}
	for _, b := range buckets {
		before[b] = snapshot(t, js, b)
		require.NotEmpty(t, before[b], b)
	}

	// Drop each projection but one key, change that one, and add a key no
	// event made.
	for _, b := range buckets {
		kv, err := js.KeyValue(ctx, b)
		require.NoError(t, err)
		kept := ""
		for k := range before[b] {
			if kept == "" {
				kept = k
				continue
			}
			require.NoError(t, kv.Purge(ctx, k))
		}
		_, err = kv.Put(ctx, kept, []byte("tampered"))
		require.NoError(t, err)
		_, err = kv.Put(ctx, "forged", []byte("no event made this"))
		require.NoError(t, err)
	}
	out = reproject()
	assert.Contains(t, out, `"extra": 1`)

	for _, b := range buckets {
		after := snapshot(t, js, b)
		require.Len(t, after, len(before[b]), b)
		for k, v := range before[b] {
			assert.True(t, sameValue(b, v, after[k]), "%s %s rebuilt as it was", b, k)
		}
	}
	require.NoError(t, whole())
	// The services answer from the rebuilt projections as before.
	tok := env.Token("--sub", "audrey", "--groups", "auditors")
	testkit.Eventually(t, 20*time.Second, func() error {
		listed, err := env.CLI([]string{"SLUICE_TOKEN=" + tok}, "sessions", "list", "--principal", "alice", "-o", "json")
		if err != nil || !strings.Contains(listed, `"principal": "alice"`) {
			return fmt.Errorf("%v: %s", err, listed)
		}
		return nil
	})
	// The approvals service follows its buckets: it answers from the
	// rebuilt ones once its views have caught up.
	testkit.Eventually(t, 20*time.Second, func() error {
		out, err := env.CLI(bob, "approvals", "list", "--state", "consumed", "-o", "json")
		if err != nil || !strings.Contains(out, id) {
			return fmt.Errorf("the approvals list does not show %s from the rebuilt buckets (%v): %s", id, err, out)
		}
		return nil
	})
	out, err = pg.psql(t, alice, "", "-c", "SELECT name FROM customers WHERE id = 2")
	if err == nil {
		assert.NotContains(t, out, "customer 2", "the DELETE ran: no rows")
	}
}

// snapshot reads every key of a bucket.
func snapshot(t *testing.T, js jetstream.JetStream, bucket string) map[string][]byte {
	t.Helper()
	ctx := context.Background()
	kv, err := js.KeyValue(ctx, bucket)
	require.NoError(t, err)
	out := map[string][]byte{}
	lister, err := kv.ListKeys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return out
	}
	require.NoError(t, err)
	for k := range lister.Keys() {
		e, err := kv.Get(ctx, k)
		require.NoError(t, err)
		out[k] = e.Value()
	}
	return out
}

// sameValue compares a bucket's values as the state they hold.
func sameValue(bucket string, a, b []byte) bool {
	var x, y proto.Message
	switch bucket {
	case bus.BucketApprovals, bus.BucketApprovalsHistory:
		x, y = &approvalsv1.Approval{}, &approvalsv1.Approval{}
	case bus.BucketSessions:
		x, y = &sessionv1.Summary{}, &sessionv1.Summary{}
	default:
		return string(a) == string(b)
	}
	return proto.Unmarshal(a, x) == nil && proto.Unmarshal(b, y) == nil && proto.Equal(x, y)
}
