package gateway

import (
	"slices"
	"strings"
	"sync"

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

// MaskRulesKey names a decision's set of mask rules.
func MaskRulesKey(d *policyv1.Decision) string {
	var b strings.Builder
	for _, m := range d.GetMasks() {
		b.WriteString(strings.Join(m.GetColumns(), ","))
		b.WriteByte('|')
		b.WriteString(strings.Join(m.GetDetectors(), ","))
		b.WriteByte('|')
		b.WriteString(m.GetAction())
		b.WriteByte('|')
		b.WriteString(m.GetDerived())
		b.WriteByte(';')
	}
	return b.String()
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
