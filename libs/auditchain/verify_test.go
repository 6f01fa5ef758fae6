package auditchain

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	auditv1 "sluice.dev/sluice/proto/sluice/audit/v1"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
)

func record(t *testing.T, session string, seq uint64, prev []byte, texts ...string) *auditv1.Record {
	r := &auditv1.Record{SessionId: session, Seq: seq}
	for i, text := range texts {
		q := seq + uint64(i)
		ev := &sessionv1.Event{Id: fmt.Sprintf("ev-%s-%d", session, q), SessionId: session, Seq: q,
			Body: &sessionv1.Event_Command{Command: &sessionv1.Command{CommandId: q, Text: text}}}
		b, err := proto.Marshal(ev)
		require.NoError(t, err)
		r.EventIds, r.Events = append(r.EventIds, ev.Id), append(r.Events, b)
	}
	Seal(r, prev)
	return r
}

func chainOf(t *testing.T, session string, n int) []*auditv1.Record {
	var out []*auditv1.Record
	var prev []byte
	for i := 1; i <= n; i++ {
		r := record(t, session, uint64(i), prev, fmt.Sprintf("SELECT %d", i))
		out = append(out, r)
		prev = r.Hash
	}
	return out
}

func run(recs []*auditv1.Record, cps []*auditv1.Checkpoint, keys map[string]ed25519.PublicKey) []Problem {
	v := NewVerifier(keys)
	for i, r := range recs {
		v.Add(Stored{Record: r, StreamSeq: uint64(i + 1)})
	}
	for _, c := range cps {
		v.AddCheckpoint(c)
	}
	return v.Problems("")
}

func kinds(ps []Problem) []string {
	var out []string
	for _, p := range ps {
		out = append(out, fmt.Sprintf("%s@%d", p.Kind, p.Seq))
	}
	return out
}

func TestVerifyChain(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	keys := map[string]ed25519.PublicKey{KeyID(pub): pub}
	good := chainOf(t, "S1", 6)
	cp := &auditv1.Checkpoint{Id: "cp1", Heads: []*auditv1.ChainHead{{SessionId: "S1", Seq: 6, Hash: good[5].Hash}}}
	for _, r := range good {
		cp.Heads[0].Records = append(cp.Heads[0].Records, &auditv1.RecordHash{Seq: r.Seq, Hash: r.Hash})
	}
	SignCheckpoint(cp, priv, time.Now())

	clone := func() []*auditv1.Record {
		out := make([]*auditv1.Record, len(good))
		for i, r := range good {
			out[i] = proto.Clone(r).(*auditv1.Record)
		}
		return out
	}
	// rehash recomputes every hash from i on: a careful forger's rewrite.
	rehash := func(rs []*auditv1.Record, from int) {
		for i := from; i < len(rs); i++ {
			var prev []byte
			if i > 0 {
				prev = rs[i-1].Hash
			}
			Seal(rs[i], prev)
		}
	}

	tests := []struct {
		name   string
		mutate func() ([]*auditv1.Record, []*auditv1.Checkpoint)
		want   []string
	}{
		{"intact", func() ([]*auditv1.Record, []*auditv1.Checkpoint) { return clone(), []*auditv1.Checkpoint{cp} }, nil},
		{"edited content", func() ([]*auditv1.Record, []*auditv1.Checkpoint) {
			rs := clone()
			rs[2] = record(t, "S1", 3, rs[1].Hash, "DROP TABLE evidence")
			rs[2].Hash = good[2].Hash // keep the old hash: content no longer matches
			return rs, []*auditv1.Checkpoint{cp}
		}, []string{"edited@3"}},
		{"removed record", func() ([]*auditv1.Record, []*auditv1.Checkpoint) {
			rs := clone()
			return append(rs[:3], rs[4:]...), []*auditv1.Checkpoint{cp}
		}, []string{"missing@5"}},
		{"duplicated record", func() ([]*auditv1.Record, []*auditv1.Checkpoint) {
			rs := clone()
			return append(rs[:4], append([]*auditv1.Record{rs[3]}, rs[4:]...)...), []*auditv1.Checkpoint{cp}
		}, []string{"duplicated@4"}},
		{"reordered", func() ([]*auditv1.Record, []*auditv1.Checkpoint) {
			rs := clone()
			rs[2], rs[3] = rs[3], rs[2]
			return rs, []*auditv1.Checkpoint{cp}
		}, []string{"reordered@3"}},
		{"rewritten history", func() ([]*auditv1.Record, []*auditv1.Checkpoint) {
			rs := clone()
			rs[1] = record(t, "S1", 2, rs[0].Hash, "SELECT 'innocent'")
			rehash(rs, 1)
			return rs, []*auditv1.Checkpoint{cp}
		}, []string{"edited@2"}},
		{"truncated tail", func() ([]*auditv1.Record, []*auditv1.Checkpoint) {
			return clone()[:4], []*auditv1.Checkpoint{cp}
		}, []string{"truncated@6"}},
		{"forged checkpoint", func() ([]*auditv1.Record, []*auditv1.Checkpoint) {
			_, other, _ := ed25519.GenerateKey(rand.Reader)
			f := proto.Clone(cp).(*auditv1.Checkpoint)
			SignCheckpoint(f, other, time.Now())
			return clone(), []*auditv1.Checkpoint{f}
		}, []string{"bad_checkpoint@0"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			recs, cps := tc.mutate()
			assert.Equal(t, tc.want, kinds(run(recs, cps, keys)))
		})
	}
}

func TestCheckpointChain(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	keys := map[string]ed25519.PublicKey{KeyID(pub): pub}
	recs := chainOf(t, "S", 3)
	var cps []*auditv1.Checkpoint
	var prev *auditv1.Checkpoint
	for i := 1; i <= 3; i++ {
		c := &auditv1.Checkpoint{Id: fmt.Sprint(i), Heads: []*auditv1.ChainHead{{SessionId: "S", Seq: uint64(i), Hash: recs[i-1].Hash}}}
		if prev != nil {
			c.Previous, c.PreviousHash = prev.Id, CheckpointHash(prev)
		}
		SignCheckpoint(c, priv, time.Now())
		cps = append(cps, c)
		prev = c
	}
	assert.Empty(t, run(recs, cps, keys))
	// Removing the middle checkpoint breaks the checkpoint chain.
	ps := run(recs, []*auditv1.Checkpoint{cps[0], cps[2]}, keys)
	require.Len(t, ps, 1)
	assert.Equal(t, BadCheckpt, ps[0].Kind)
}

func TestGapRecord(t *testing.T) {
	recs := chainOf(t, "S", 2)
	gap := &auditv1.Record{SessionId: "S", Seq: 3, GapTo: 4}
	Seal(gap, recs[1].Hash)
	next := record(t, "S", 5, gap.Hash, "SELECT 5")
	ps := run(append(recs, gap, next), nil, nil)
	assert.Equal(t, []string{"lost@3"}, kinds(ps))
}

// A record may hold several consecutive events; every one of them is
// covered by the hash and checked against the record.
func TestMultiEventRecords(t *testing.T) {
	r1 := record(t, "S", 1, nil, "SELECT 1", "SELECT 2", "SELECT 3")
	r2 := record(t, "S", 4, r1.Hash, "SELECT 4", "SELECT 5")
	assert.Empty(t, run([]*auditv1.Record{r1, r2}, nil, nil))
	assert.Equal(t, uint64(3), Last(r1))

	// An event swapped inside a record, hash kept: edited.
	forged := proto.Clone(r1).(*auditv1.Record)
	forged.Events[1] = record(t, "S", 2, nil, "DROP TABLE evidence").Events[0]
	assert.Equal(t, []string{"edited@1"}, kinds(run([]*auditv1.Record{forged, r2}, nil, nil)))

	// An event dropped from a record and the chain resealed: the record's
	// events no longer match their seqs, and r2 no longer links.
	cut := proto.Clone(r1).(*auditv1.Record)
	cut.Events, cut.EventIds = [][]byte{cut.Events[0], cut.Events[2]}, []string{cut.EventIds[0], cut.EventIds[2]}
	Seal(cut, nil)
	assert.Equal(t, []string{"edited@1", "missing@4"}, kinds(run([]*auditv1.Record{cut, r2}, nil, nil)))

	// The same multi-event record twice: duplicated.
	assert.Equal(t, []string{"duplicated@1"}, kinds(run([]*auditv1.Record{r1, r1, r2}, nil, nil)))

	// A record without events that is not a gap is not a record.
	empty := &auditv1.Record{SessionId: "E", Seq: 1}
	Seal(empty, nil)
	assert.Equal(t, []string{"edited@1"}, kinds(run([]*auditv1.Record{empty}, nil, nil)))
}

// A reordered multi-event record is reported once, not also as missing;
// a gap record claiming an enormous range is checked without walking it.
func TestReorderedRunAndHugeGap(t *testing.T) {
	r1 := record(t, "S", 1, nil, "SELECT 1")
	r2 := record(t, "S", 2, r1.Hash, "SELECT 2", "SELECT 3", "SELECT 4")
	r3 := record(t, "S", 5, r2.Hash, "SELECT 5")
	assert.Equal(t, []string{"reordered@2"}, kinds(run([]*auditv1.Record{r1, r3, r2}, nil, nil)))

	gap := &auditv1.Record{SessionId: "G", Seq: 1, GapTo: 1 << 62}
	Seal(gap, nil)
	done := make(chan []string, 1)
	go func() { done <- kinds(run([]*auditv1.Record{gap}, nil, nil)) }()
	select {
	case got := <-done:
		assert.Equal(t, []string{"lost@1"}, got)
	case <-time.After(5 * time.Second):
		t.Fatal("verifying a huge gap did not finish")
	}
}

// Records written in the single-event encoding still verify, and an edit
// to one is still caught.
func TestV1RecordsStillVerify(t *testing.T) {
	old := func(seq uint64, prev []byte, text string) *auditv1.Record {
		r := record(t, "V", seq, nil, text)
		r.PrevHash = prev
		if len(prev) == 0 {
			r.PrevHash = ZeroHash
		}
		r.Hash = hashV1(r)
		return r
	}
	r1 := old(1, nil, "SELECT 1")
	r2 := old(2, r1.Hash, "SELECT 2")
	r3 := record(t, "V", 3, r2.Hash, "SELECT 3", "SELECT 4")
	assert.Empty(t, run([]*auditv1.Record{r1, r2, r3}, nil, nil))
	edited := proto.Clone(r2).(*auditv1.Record)
	edited.Events[0] = record(t, "V", 2, nil, "DROP TABLE evidence").Events[0]
	assert.Equal(t, []string{"edited@2"}, kinds(run([]*auditv1.Record{r1, edited, r3}, nil, nil)))
}

// A lost record closes its session's chain: it verifies, its reason is in
// its hash, it holds no event, and nothing may follow it.
func TestLostRecord(t *testing.T) {
	recs := chainOf(t, "s", 2)
	lost := &auditv1.Record{SessionId: "s", Seq: 3, Lost: "its worker w stopped without ending it"}
	Seal(lost, recs[1].Hash)
	assert.Empty(t, run(append(recs, lost), nil, nil))

	edited := proto.Clone(lost).(*auditv1.Record)
	edited.Lost = "the client left"
	assert.Equal(t, []string{"edited@3"}, kinds(run(append(chainOf(t, "s", 2), edited), nil, nil)), "the reason is sealed")

	withEvents := record(t, "s", 3, recs[1].Hash, "DROP TABLE t")
	withEvents.Lost = "its worker w stopped without ending it"
	Seal(withEvents, recs[1].Hash)
	assert.Equal(t, []string{"edited@3"}, kinds(run(append(chainOf(t, "s", 2), withEvents), nil, nil)), "a lost record holds no event")

	after := record(t, "s", 4, lost.Hash, "SELECT 4")
	ps := run(append(chainOf(t, "s", 2), lost, after), nil, nil)
	assert.Equal(t, []string{"unlinked@4"}, kinds(ps))
	assert.Contains(t, ps[0].Detail, "follows the session's lost record")
}
