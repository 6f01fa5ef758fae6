package masking

import (
	"errors"
	"fmt"
	"sync"
)

// Config says which detectors run and how their matches are replaced.
// The zero Config runs every detector and redacts.
type Config struct {
	// Detectors names the detectors to run (see Detectors); empty means all.
	Detectors []string
	// Action replaces every detected span; the zero Action redacts.
	Action Action
	// TokenKey keys the Token action (HMAC-SHA256), at least MinTokenKey
	// bytes. Required when Action is Token; without it AppendWhole with a
	// Token action fails closed to WholeMarker.
	TokenKey []byte
	// SSNBare also matches nine bare digits as an SSN. Off by default:
	// nine-digit ids are common and would be masked too.
	SSNBare bool
}

var (
	// ErrUnknownDetector reports a Config.Detectors name that is not a detector.
	ErrUnknownDetector = errors.New("masking: unknown detector")
	// ErrTokenKey reports a missing or short Config.TokenKey.
	ErrTokenKey = errors.New("masking: token key")
)

// maxPasses bounds the masking passes over one value (see AppendMasked);
// a variable so tests can reach the fallback.
var maxPasses = 4

// failClosed turns a panic inside masking into WholeMarker; tests and the
// fuzzer switch it off so bugs surface.
var failClosed = true

// Masker finds sensitive values and replaces them. It is compiled once by
// New and is safe for concurrent use.
type Masker struct {
	on      [numDetectors]bool
	anchor  [256]uint8 // anchorWord / anchorFree for bytes that anchor an enabled detector
	action  Action
	ssnBare bool
	key     []byte
	macs    sync.Pool
}

// New compiles cfg. It fails on an unknown detector name, an invalid action
// or an unusable token key, naming the culprit.
func New(cfg Config) (*Masker, error) {
	m := &Masker{action: cfg.Action, ssnBare: cfg.SSNBare}
	if len(cfg.Detectors) == 0 {
		for i := range m.on {
			m.on[i] = true
		}
	}
	for _, name := range cfg.Detectors {
		d, ok := detByName(name)
		if !ok {
			return nil, fmt.Errorf("%w: %q", ErrUnknownDetector, name)
		}
		m.on[d] = true
	}
	if err := cfg.Action.Validate(); err != nil {
		return nil, err
	}
	if m.action.Kind == "" {
		m.action.Kind = Redact
	}
	switch {
	case len(cfg.TokenKey) > 0 && len(cfg.TokenKey) < MinTokenKey:
		return nil, fmt.Errorf("%w: %d bytes, need at least %d", ErrTokenKey, len(cfg.TokenKey), MinTokenKey)
	case len(cfg.TokenKey) == 0 && m.action.Kind == Token:
		return nil, fmt.Errorf("%w: required by the token action", ErrTokenKey)
	case len(cfg.TokenKey) > 0:
		m.key = append([]byte(nil), cfg.TokenKey...)
		m.macs.New = newMacPool(m.key)
	}
	m.buildAnchors()
	return m, nil
}

// Contains reports whether any enabled detector matches v, that is whether
// AppendMasked would change v. It does not allocate.
func (m *Masker) Contains(v []byte) (found bool) {
	if failClosed {
		defer func() {
			if recover() != nil {
				found = true
			}
		}()
	}
	_, found = m.next(v, 0)
	return found
}

// AppendMasked appends v to dst with every detected span replaced by the
// configured action, adds one to c for each detection (c may be nil) and
// returns the extended buffer. A value with nothing to mask is appended
// unchanged without allocating. dst and v must not overlap.
//
// The output is re-scanned: if masking exposed a new match (a neighbour
// that a span's bytes had hidden), that is masked too; if matches still
// appear after four passes, every ASCII letter and digit and every
// non-ASCII byte of v becomes '*' (structure bytes stay). So the output
// never contains a detectable value. A panic inside masking (a bug) yields
// WholeMarker instead.
func (m *Masker) AppendMasked(dst, v []byte, c *Counts) (out []byte) {
	if failClosed {
		orig := dst
		defer func() {
			if recover() != nil {
				out = append(orig, WholeMarker...)
			}
		}()
	}
	sp, ok := m.next(v, 0)
	if !ok {
		return append(dst, v...)
	}
	return m.appendDirty(dst, v, sp, c)
}

func (m *Masker) appendDirty(dst, v []byte, first span, c *Counts) []byte {
	base := len(dst)
	dst = m.maskPass(dst, v, first, c)
	for pass := 1; ; pass++ {
		sp, ok := m.next(dst[base:], 0)
		if !ok {
			return dst
		}
		if pass == maxPasses {
			// Give up on spans, not on structure: every letter and digit
			// goes, quotes, tabs, newlines and delimiters stay.
			return appendKeep(dst[:base], v, 0)
		}
		tmp := append([]byte(nil), dst[base:]...)
		dst = m.maskPass(dst[:base], tmp, sp, c)
	}
}

// AppendWhole appends the replacement of the entire value v under action a
// (a column known to be sensitive): WholeMarker for Redact, the keep rule
// over all of v (an email keeps its local-part tail and TLD), or a token.
// An invalid action, or Token without a TokenKey, yields WholeMarker.
// A NULL is not a value: callers keep NULLs as they are.
func (m *Masker) AppendWhole(dst, v []byte, a Action) []byte {
	if a.Validate() != nil {
		return append(dst, WholeMarker...)
	}
	switch a.Kind {
	case Keep:
		if at := lastAt(v); at >= 0 {
			if s, e, ok := matchEmail(v, at); ok && s == 0 && e == len(v) {
				return appendKeepEmail(dst, v, a.Keep)
			}
		}
		return appendKeep(dst, v, a.Keep)
	case Token:
		return m.appendToken(dst, v)
	}
	return append(dst, WholeMarker...)
}

func lastAt(v []byte) int {
	for k := len(v) - 1; k >= 0; k-- {
		if v[k] == '@' {
			return k
		}
	}
	return -1
}

// maskPass writes v to dst with every match replaced, starting from the
// already found first match.
func (m *Masker) maskPass(dst, v []byte, first span, c *Counts) []byte {
	var buf [16]span
	spans := append(buf[:0], first)
	c.inc(first.det)
	for i := first.end; ; {
		sp, ok := m.next(v, i)
		if !ok {
			break
		}
		c.inc(sp.det)
		i = sp.end
		// An email's local part may reach back over earlier matches: merge.
		for len(spans) > 0 && spans[len(spans)-1].end > sp.start {
			last := spans[len(spans)-1]
			spans = spans[:len(spans)-1]
			if last.start <= sp.start {
				sp.start, sp.det = last.start, last.det
			}
			sp.end = max(sp.end, last.end)
		}
		spans = append(spans, sp)
	}
	pos := 0
	for _, sp := range spans {
		dst = append(dst, v[pos:sp.start]...)
		dst = m.appendSpan(dst, v, sp)
		pos = sp.end
	}
	return append(dst, v[pos:]...)
}

// appendSpan appends the replacement of v[sp.start:sp.end].
func (m *Masker) appendSpan(dst, v []byte, sp span) []byte {
	val := v[sp.start:sp.end]
	numeric := allDigits(val) && numericContext(v, sp.start, sp.end)
	switch m.action.Kind {
	case Keep:
		switch {
		case sp.det == detPEM:
			return append(dst, spanMarkers[sp.det]...)
		case numeric:
			return appendKeepDigits(dst, val, m.action.Keep)
		case sp.det == detEmail:
			return appendKeepEmail(dst, val, m.action.Keep)
		}
		return appendKeep(dst, val, m.action.Keep)
	case Token:
		if numeric {
			return m.appendNumericToken(dst, val)
		}
		return m.appendToken(dst, val)
	}
	if numeric {
		return append(dst, '0')
	}
	return append(dst, spanMarkers[sp.det]...)
}
