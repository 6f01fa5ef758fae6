package masking

import (
	"crypto/hmac"
	"crypto/sha256"
	"hash"
)

// macState is one pooled HMAC and its output buffer, so tokens do not
// allocate in steady state.
type macState struct {
	h   hash.Hash
	sum [sha256.Size]byte
}

func newMacPool(key []byte) func() any {
	return func() any { return &macState{h: hmac.New(sha256.New, key)} }
}

const base32Lower = "abcdefghijklmnopqrstuvwxyz234567"

// appendToken appends TokenPrefix and the first 80 bits of HMAC(key, v)
// in lowercase base32. The alphabet holds no byte that needs quoting in
// JSON, CSV or COPY, and the token is no detector's match.
func (m *Masker) appendToken(dst, v []byte) []byte {
	st := m.mac(v)
	if st == nil {
		return append(dst, WholeMarker...)
	}
	dst = append(dst, TokenPrefix...)
	var acc uint64
	for _, b := range st.sum[:5] {
		acc = acc<<8 | uint64(b)
	}
	for k := 35; k >= 0; k -= 5 {
		dst = append(dst, base32Lower[acc>>uint(k)&31])
	}
	acc = 0
	for _, b := range st.sum[5:10] {
		acc = acc<<8 | uint64(b)
	}
	for k := 35; k >= 0; k -= 5 {
		dst = append(dst, base32Lower[acc>>uint(k)&31])
	}
	m.macs.Put(st)
	return dst
}

// appendNumericToken is the token for a digits-only span in a numeric
// position: '9' and len(v)-1 digits from the HMAC (at most 31), so the
// token is a number of the same length that no detector matches.
// Short spans have few token values; collisions are expected there.
func (m *Masker) appendNumericToken(dst, v []byte) []byte {
	st := m.mac(v)
	if st == nil {
		return append(dst, WholeMarker...)
	}
	dst = append(dst, '9')
	for k := 1; k < len(v) && k < len(st.sum); k++ {
		dst = append(dst, '0'+st.sum[k]%10)
	}
	m.macs.Put(st)
	return dst
}

func (m *Masker) mac(v []byte) *macState {
	if m.key == nil {
		return nil
	}
	st := m.macs.Get().(*macState)
	st.h.Reset()
	st.h.Write(v)
	st.h.Sum(st.sum[:0])
	return st
}
