package cli

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"sluice.dev/sluice/libs/testkit"
)

// Whatever a service writes while a projection is rebuilt, before or
// after the fold is made, stays: it is newer than the fold.
func TestReprojectLeavesLiveWritesAlone(t *testing.T) {
	_, conn := testkit.NATS(t)
	ctx := context.Background()
	kv, err := conn.JS.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "test_projection", History: 5})
	require.NoError(t, err)
	put := func(k, v string) {
		_, err := kv.Put(ctx, k, []byte(v))
		require.NoError(t, err)
	}
	put("kept", "v1")
	put("tampered", "wrong")
	put("forged", "no event made this")
	put("revoked", "stale")
	put("removed", "stale")
	put("lost", "x")
	require.NoError(t, kv.Purge(ctx, "lost"))

	// The fold is made after the bucket was read; meanwhile a service
	// revokes a grant and removes a target (as the live projection would).
	p := projection{name: "test", bucket: "test_projection", stream: "TEST",
		fold: func(context.Context, jetstream.JetStream) (map[string][]byte, error) {
			put("revoked", "revoked")
			require.NoError(t, kv.Delete(ctx, "removed"))
			return map[string][]byte{
				"kept": []byte("v1"), "tampered": []byte("right"), "revoked": []byte("approved"),
				"removed": []byte("target"), "lost": []byte("x"), "new": []byte("y"),
			}, nil
		}}

	dry, err := reproject(ctx, conn.JS, p, true)
	require.NoError(t, err)
	assert.Equal(t, reprojection{Name: "test", Keys: 6, Missing: 2, Changed: 3, Extra: 1, DryRun: true}, dry)

	// As before the first fold, for the real run.
	put("revoked", "stale")
	put("removed", "stale")
	r, err := reproject(ctx, conn.JS, p, false)
	require.NoError(t, err)
	assert.Equal(t, 2, r.Skipped, "the two live writes: %+v", r)

	get := func(k string) string {
		e, err := kv.Get(ctx, k)
		if err != nil {
			return "<none>"
		}
		return string(e.Value())
	}
	assert.Equal(t, "right", get("tampered"))
	assert.Equal(t, "<none>", get("forged"))
	assert.Equal(t, "x", get("lost"), "a purged key is written again")
	assert.Equal(t, "y", get("new"))
	assert.Equal(t, "revoked", get("revoked"), "the revocation made meanwhile stays")
	assert.Equal(t, "<none>", get("removed"), "the removal made meanwhile stays")
}
