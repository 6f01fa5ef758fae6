package auditchain

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	auditv1 "sluice.dev/sluice/proto/sluice/audit/v1"
)

// history is a session's chain with a chain of checkpoints over it.
func history(t *testing.T, priv ed25519.PrivateKey, n int) ([]*auditv1.Record, []*auditv1.Checkpoint) {
	recs := chainOf(t, "S", n)
	var cps []*auditv1.Checkpoint
	var prev *auditv1.Checkpoint
	for i := 1; i <= n; i++ {
		c := &auditv1.Checkpoint{Id: fmt.Sprint("cp", i), Heads: []*auditv1.ChainHead{{SessionId: "S", Seq: uint64(i), Hash: recs[i-1].Hash}}}
		if prev != nil {
			c.Previous, c.PreviousHash = prev.Id, CheckpointHash(prev)
		}
		SignCheckpoint(c, priv, time.Now())
		cps = append(cps, c)
		prev = c
	}
	return recs, cps
}

func verifyWith(recs []*auditv1.Record, cps []*auditv1.Checkpoint, keys map[string]ed25519.PublicKey, a *Anchor, indexed ...string) []Problem {
	v := NewVerifier(keys)
	if a != nil {
		v.Anchors = []*Anchor{a}
	}
	for _, s := range indexed {
		v.AddIndexed(s, time.Now(), 0)
	}
	for i, r := range recs {
		v.Add(Stored{Record: r, StreamSeq: uint64(i + 1)})
	}
	for _, c := range cps {
		v.AddCheckpoint(c)
	}
	return v.Problems("")
}

// A stream deleted and recreated (everything in it new, consistent and
// signed) verifies as intact on its own; against an anchor of the old
// stream, and against the sessions index, it does not.
func TestAnchorFindsAReplacedStream(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	keys := map[string]ed25519.PublicKey{KeyID(pub): pub}
	recs, cps := history(t, priv, 3)
	anchor := AnchorOf(cps[2], 9, pub)
	require.NoError(t, anchor.Check())
	assert.Empty(t, verifyWith(recs, cps, keys, &anchor, "S"), "the intact stream matches its anchor")

	newRecs := chainOf(t, "T", 2)
	newCps := []*auditv1.Checkpoint{{Id: "new1", Heads: []*auditv1.ChainHead{{SessionId: "T", Seq: 2, Hash: newRecs[1].Hash}}}}
	SignCheckpoint(newCps[0], priv, time.Now())
	assert.Empty(t, verifyWith(newRecs, newCps, keys, nil), "without an anchor or index, a new stream looks intact")
	assert.Equal(t, []string{"history_lost@0"}, kinds(verifyWith(newRecs, newCps, keys, &anchor)))
	assert.Equal(t, []string{"history_lost@0"}, kinds(verifyWith(newRecs, newCps, keys, nil, "S")), "the index lists a session without records")

	// The first checkpoints purged: the first one left chains to nothing.
	assert.Equal(t, []string{"history_lost@0"}, kinds(verifyWith(recs, cps[1:], keys, nil)))

	// The anchored checkpoint rewritten (same id, new content) and signed
	// with a key put in the key bucket: the pinned key and the hash say so.
	otherPub, otherPriv, _ := ed25519.GenerateKey(rand.Reader)
	forged := proto.Clone(cps[2]).(*auditv1.Checkpoint)
	forged.Heads[0].Seq = 2
	SignCheckpoint(forged, otherPriv, time.Now())
	ps := verifyWith(recs, []*auditv1.Checkpoint{cps[0], cps[1], forged}, map[string]ed25519.PublicKey{KeyID(pub): otherPub, KeyID(otherPub): otherPub}, &anchor)
	assert.Contains(t, kinds(ps), "bad_checkpoint@0")
	var details []string
	for _, p := range ps {
		details = append(details, p.Detail)
	}
	assert.Contains(t, strings.Join(details, "\n"), "differs from the anchored one")
	assert.Contains(t, strings.Join(details, "\n"), "differs from the anchored checkpoint")

	// A key added to the bucket signs a checkpoint after the anchored one:
	// with an anchor that pins its key, it does not count.
	extra := &auditv1.Checkpoint{Id: "cp4", Previous: cps[2].Id, PreviousHash: CheckpointHash(cps[2])}
	SignCheckpoint(extra, otherPriv, time.Now())
	both := map[string]ed25519.PublicKey{KeyID(pub): pub, KeyID(otherPub): otherPub}
	assert.Empty(t, verifyWith(recs, append(cps, extra), both, nil), "without an anchor every key in the bucket counts")
	assert.Equal(t, []string{"bad_checkpoint@0"}, kinds(verifyWith(recs, append(cps, extra), both, &anchor)))
}

// A checkpoint in which the recorder says the history is gone is reported
// whatever else is true; its signature covers what it says.
func TestLostHistoryCheckpoint(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	keys := map[string]ed25519.PublicKey{KeyID(pub): pub}
	recs := chainOf(t, "T", 1)
	h, _ := hex.DecodeString(strings.Repeat("ab", 32))
	lh := &auditv1.Checkpoint{Id: "lh", Previous: "old", PreviousHash: h,
		LostHistory: &auditv1.LostHistory{Checkpoint: "old", Hash: h, StreamSeq: 40, AnchoredAt: timestamppb.Now()},
		Heads:       []*auditv1.ChainHead{{SessionId: "T", Seq: 1, Hash: recs[0].Hash}}}
	SignCheckpoint(lh, priv, time.Now())
	next := &auditv1.Checkpoint{Id: "next", Previous: "lh", PreviousHash: CheckpointHash(lh)}
	SignCheckpoint(next, priv, time.Now())
	ps := verifyWith(recs, []*auditv1.Checkpoint{lh, next}, keys, nil)
	require.Equal(t, []string{"history_lost@0"}, kinds(ps), "reported once, not also as a broken chain")
	assert.Contains(t, ps[0].Detail, "checkpoint old (stream seq 40")

	tampered := proto.Clone(lh).(*auditv1.Checkpoint)
	tampered.LostHistory = nil // hide the admission
	assert.Contains(t, kinds(verifyWith(recs, []*auditv1.Checkpoint{tampered}, keys, nil)), "bad_checkpoint@0")
}

func TestAnchorFile(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	_, cps := history(t, priv, 2)
	path := filepath.Join(t.TempDir(), "sub", "anchor.jsonl")
	a, err := LastAnchor(path)
	require.NoError(t, err)
	assert.Nil(t, a, "no file, no anchor")
	require.NoError(t, AppendAnchor(path, AnchorOf(cps[0], 3, pub)))
	require.NoError(t, AppendAnchor(path, AnchorOf(cps[1], 7, pub)))
	a, err = LastAnchor(path)
	require.NoError(t, err)
	assert.Equal(t, "cp2", a.Checkpoint)
	assert.Equal(t, uint64(7), a.StreamSeq)
	assert.True(t, a.Matches(cps[1]))
	assert.Equal(t, pub, a.Key())

	// Other lines (a SIEM export) are skipped; a broken anchor is refused.
	got, err := ReadAnchor(strings.NewReader("syslog header\n{\"kind\":\"command\"}\n" + `{"kind":"checkpoint","checkpoint":"x","hash":"` + strings.Repeat("00", 32) + `"}` + "\n"))
	require.NoError(t, err)
	assert.Equal(t, "x", got.Checkpoint)
	// As the exporter's sinks deliver them.
	line := `{"kind":"checkpoint","checkpoint":"y","hash":"` + strings.Repeat("11", 32) + `"}`
	got, err = ReadAnchor(strings.NewReader(`<14>1 2026-12-01T00:00:00Z host sluice - CHECKPOINT [sluice@32473 event_id="cp-y"] ` + line + "\n"))
	require.NoError(t, err)
	assert.Equal(t, "y", got.Checkpoint)
	got, err = ReadAnchor(strings.NewReader(`{"event":` + line + `,"fields":{"kind":"checkpoint"}}` + "\n"))
	require.NoError(t, err)
	assert.Equal(t, "y", got.Checkpoint)
	_, err = ReadAnchor(strings.NewReader(`{"kind":"checkpoint","checkpoint":"x","hash":"zz"}`))
	assert.Error(t, err)
	_, err = ReadAnchor(strings.NewReader("nothing here\n"))
	assert.Error(t, err)
}
