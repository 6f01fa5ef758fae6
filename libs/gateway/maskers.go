package gateway

import (
	"crypto/sha256"
	"encoding/binary"
	"slices"
	"sync"

	"google.golang.org/protobuf/proto"

	"sluice.dev/sluice/libs/masking"
	policyv1 "sluice.dev/sluice/proto/sluice/policy/v1"
)

// maskers builds the value detectors of a set of mask rules once per
// worker: the detectors every rule names, with the first rule's action.
type maskers struct {
	mu  sync.Mutex
	key []byte // deterministic tokens are keyed from the master key
	m   map[string]*masking.Masker
}

// MaskRulesKey names a decision's set of mask rules: a digest of the
// rules whole (columns, detectors, action, the characters kept, what
// derived values do, and any field a rule gains), so that two sets differ
// in their key whenever they differ at all. Maskers and masking plans are
// shared under it: a key that left out a field once let one group's
// `keep: 4` show through another group's `keep: 1`.
func MaskRulesKey(d *policyv1.Decision) string {
	h := sha256.New()
	var buf []byte
	for _, m := range d.GetMasks() {
		var err error
		buf, err = proto.MarshalOptions{Deterministic: true}.MarshalAppend(buf[:0], m)
		if err != nil {
			panic(err) // a message in memory always marshals
		}
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(buf)))
		h.Write(n[:])
		h.Write(buf)
	}
	return string(h.Sum(nil))
}

// SetMaskingKey keys the token action (derived from the master key, so
// that every replica gives a value the same token).
func (k *Kernel) SetMaskingKey(key []byte) {
	k.maskers.mu.Lock()
	k.maskers.key = key
	k.maskers.mu.Unlock()
}

// Masker returns the masker of a decision's mask rules (key is
// MaskRulesKey(d)), built once.
func (k *Kernel) Masker(key string, d *policyv1.Decision) (*masking.Masker, error) {
	k.maskers.mu.Lock()
	defer k.maskers.mu.Unlock()
	if m, ok := k.maskers.m[key]; ok {
		return m, nil
	}
	var dets []string
	action := masking.Action{}
	for i, r := range d.GetMasks() {
		for _, det := range r.GetDetectors() {
			if !slices.Contains(dets, det) {
				dets = append(dets, det)
			}
		}
		if i == 0 {
			action = masking.Action{Kind: r.GetAction(), Keep: int(r.GetKeep())}
		}
	}
	if len(dets) == 0 {
		dets = masking.Detectors()
	}
	m, err := masking.New(masking.Config{Detectors: dets, Action: action, TokenKey: k.maskers.key})
	if err != nil {
		return nil, err
	}
	if k.maskers.m == nil {
		k.maskers.m = map[string]*masking.Masker{}
	}
	k.maskers.m[key] = m
	return m, nil
}
