// Package auditchain defines the tamper evidence of the audit stream: each
// session's records form a SHA-256 hash chain over a canonical encoding, and
// recorders sign chain heads (Ed25519 checkpoints). Verify finds edited,
// missing, duplicated and reordered records and names them.
//
// A record holds one or more consecutive events of a session. Its canonical
// encoding (all integers big-endian):
//
//	"sluice-audit-v2" | u32 len(session) session | u64 seq | u32 n |
//	n × (u32 len(id) id | u32 len(event) event) | u64 gap_to | 32-byte prev_hash
//
// The hash covers the serialized event bytes exactly as the worker sent
// them, so no re-encoding can change what was recorded.
package auditchain

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	auditv1 "sluice.dev/sluice/proto/sluice/audit/v1"
)

const domain = "sluice-audit-v2"

// ZeroHash is the prev_hash of a session's first record.
var ZeroHash = make([]byte, sha256.Size)

func appendField(b, f []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
	return append(b, f...)
}

// Hash computes a record's hash from its content and prev_hash.
func Hash(r *auditv1.Record) []byte {
	h := sha256.New()
	var b [8]byte
	u32 := func(n int) {
		binary.BigEndian.PutUint32(b[:4], uint32(n))
		h.Write(b[:4])
	}
	u64 := func(n uint64) {
		binary.BigEndian.PutUint64(b[:], n)
		h.Write(b[:])
	}
	h.Write([]byte(domain))
	u32(len(r.GetSessionId()))
	h.Write([]byte(r.GetSessionId()))
	u64(r.GetSeq())
	ids, events := r.GetEventIds(), r.GetEvents()
	n := max(len(ids), len(events))
	u32(n)
	for i := range n {
		var id string
		var ev []byte
		if i < len(ids) {
			id = ids[i]
		}
		if i < len(events) {
			ev = events[i]
		}
		u32(len(id))
		h.Write([]byte(id))
		u32(len(ev))
		h.Write(ev)
	}
	u64(r.GetGapTo())
	if lost := r.GetLost(); lost != "" {
		// Only on lost records, so that every other record hashes as it
		// always did.
		u32(len(lost))
		h.Write([]byte(lost))
	}
	h.Write(r.GetPrevHash())
	return h.Sum(nil)
}

// Sealed reports whether a record's hash matches its content. Records
// written before records held several events (one event each, hashed with
// the "sluice-audit-v1" encoding, which had no event count) still verify.
func Sealed(r *auditv1.Record) bool {
	if bytes.Equal(Hash(r), r.GetHash()) {
		return true
	}
	return len(r.GetEvents()) <= 1 && len(r.GetEventIds()) <= 1 && r.GetLost() == "" && bytes.Equal(hashV1(r), r.GetHash())
}

// hashV1 is the encoding of single-event records:
// "sluice-audit-v1" | u32 len(session) session | u64 seq | u32 len(id) id |
// u32 len(event) event | u64 gap_to | 32-byte prev_hash.
func hashV1(r *auditv1.Record) []byte {
	var id string
	var ev []byte
	if ids := r.GetEventIds(); len(ids) == 1 {
		id = ids[0]
	}
	if evs := r.GetEvents(); len(evs) == 1 {
		ev = evs[0]
	}
	b := make([]byte, 0, 96+len(r.GetSessionId())+len(id)+len(ev))
	b = append(b, "sluice-audit-v1"...)
	b = appendField(b, []byte(r.GetSessionId()))
	b = binary.BigEndian.AppendUint64(b, r.GetSeq())
	b = appendField(b, []byte(id))
	b = appendField(b, ev)
	b = binary.BigEndian.AppendUint64(b, r.GetGapTo())
	b = append(b, r.GetPrevHash()...)
	sum := sha256.Sum256(b)
	return sum[:]
}

// Last is the seq of the last event a record covers.
func Last(r *auditv1.Record) uint64 {
	if r.GetGapTo() > 0 {
		return r.GetGapTo()
	}
	if n := len(r.GetEvents()); n > 1 {
		return r.GetSeq() + uint64(n) - 1
	}
	return r.GetSeq()
}

// Seal fills prev_hash and hash.
func Seal(r *auditv1.Record, prev []byte) {
	if len(prev) == 0 {
		prev = ZeroHash
	}
	r.PrevHash = prev
	r.Hash = Hash(r)
}

// KeyID names a public key.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

func checkpointBytes(c *auditv1.Checkpoint) []byte {
	b := append([]byte(nil), "sluice-checkpoint-v1"...)
	b = appendField(b, []byte(c.GetId()))
	b = binary.BigEndian.AppendUint64(b, uint64(c.GetTime().AsTime().UnixNano()))
	b = appendField(b, []byte(c.GetPrevious()))
	b = appendField(b, c.GetPreviousHash())
	b = binary.BigEndian.AppendUint32(b, uint32(len(c.GetHeads())))
	for _, h := range c.GetHeads() {
		b = appendField(b, []byte(h.GetSessionId()))
		b = binary.BigEndian.AppendUint64(b, h.GetSeq())
		b = appendField(b, h.GetHash())
		b = binary.BigEndian.AppendUint32(b, uint32(len(h.GetRecords())))
		for _, r := range h.GetRecords() {
			b = binary.BigEndian.AppendUint64(b, r.GetSeq())
			b = appendField(b, r.GetHash())
		}
	}
	if l := c.GetLostHistory(); l != nil {
		// Signed only where present: earlier checkpoints verify unchanged.
		b = append(b, "lost-history"...)
		b = appendField(b, []byte(l.GetCheckpoint()))
		b = appendField(b, l.GetHash())
		b = binary.BigEndian.AppendUint64(b, l.GetStreamSeq())
		b = binary.BigEndian.AppendUint64(b, uint64(l.GetAnchoredAt().AsTime().UnixNano()))
	}
	return b
}

// CheckpointHash identifies a checkpoint for the next one to chain to.
func CheckpointHash(c *auditv1.Checkpoint) []byte {
	sum := sha256.Sum256(append(checkpointBytes(c), c.GetSignature()...))
	return sum[:]
}

// SignCheckpoint signs c with key.
func SignCheckpoint(c *auditv1.Checkpoint, key ed25519.PrivateKey, now time.Time) {
	c.Time = timestamppb.New(now)
	c.KeyId = KeyID(key.Public().(ed25519.PublicKey))
	c.Signature = ed25519.Sign(key, checkpointBytes(c))
}

// VerifyCheckpoint checks c's signature against the trusted keys (by key id).
func VerifyCheckpoint(c *auditv1.Checkpoint, keys map[string]ed25519.PublicKey) error {
	pub, ok := keys[c.GetKeyId()]
	if !ok {
		return fmt.Errorf("checkpoint %s is signed by unknown key %s", c.GetId(), c.GetKeyId())
	}
	if !ed25519.Verify(pub, checkpointBytes(c), c.GetSignature()) {
		return fmt.Errorf("checkpoint %s has an invalid signature", c.GetId())
	}
	return nil
}
