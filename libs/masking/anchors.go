package masking

// The scan loop: one pass over the value looking up each byte in the
// Masker's anchor table, a global table of bytes allowed after each anchor,
// and only then the detectors anchored at that byte.

// Anchor kinds: a word anchor only starts a match at a word start
// (see wordStart); a free anchor ('@' of an email, '-' of a PEM line) may
// sit anywhere.
const (
	anchorWord = 1
	anchorFree = 2
)

func (m *Masker) buildAnchors() {
	set := func(d detID, bs string) {
		if m.on[d] {
			for k := 0; k < len(bs); k++ {
				m.anchor[bs[k]] = anchorWord
			}
		}
	}
	const digits, upper = "0123456789", "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	set(detSSN, digits)
	set(detCard, digits)
	set(detPhone, digits+"+(")
	set(detEmail, "@")
	set(detIBAN, upper)
	set(detAWS, "AaSs")
	set(detJWT, "e")
	set(detGitHub, "g")
	set(detOpenAI, "s")
	set(detSlack, "xh")
	set(detPEM, "-")
	for _, c := range "@-" {
		if m.anchor[c] != 0 {
			m.anchor[c] = anchorFree
		}
	}
}

// next returns the first match anchored at or after v[i].
func (m *Masker) next(v []byte, i int) (span, bool) {
	if i >= len(v) {
		return span{}, false
	}
	anchor := &m.anchor
	for k, c := range v[i:] {
		a := anchor[c]
		if a == 0 {
			continue
		}
		j := i + k
		if j+1 == len(v) || !pairOK(c, v[j+1]) {
			continue
		}
		// Inside a word: no word anchor unless an escape just ended.
		if a == anchorWord && j > 0 && isAlnum(v[j-1]) && !mayEndEscape(v, j) {
			continue
		}
		if sp, ok := m.matchAt(v, j); ok {
			return sp, true
		}
	}
	return span{}, false
}

// matchAt runs the enabled detectors anchored at v[i] and returns the
// longest match.
func (m *Masker) matchAt(v []byte, i int) (span, bool) {
	c := v[i]
	best := span{start: i, end: -1}
	take := func(s, e int, ok bool, d detID) {
		if ok && e > best.end {
			best = span{start: s, end: e, det: d}
		}
	}
	switch {
	case isDigit(c):
		if !digitStart(v, i) {
			return best, false
		}
		if m.on[detSSN] {
			e, ok := matchSSN(v, i, m.ssnBare)
			take(i, e, ok, detSSN)
		}
		if m.on[detCard] {
			e, ok := matchCard(v, i)
			take(i, e, ok, detCard)
		}
		if m.on[detPhone] {
			e, ok := matchNANP(v, i)
			take(i, e, ok, detPhone)
		}
	case c == '@':
		s, e, ok := matchEmail(v, i)
		take(s, e, ok, detEmail)
	case c == '-':
		e, ok := matchPEM(v, i)
		take(i, e, ok, detPEM)
	case !wordStart(v, i): // next prefiltered; this settles escapes
		return best, false
	case c == '+':
		e, ok := matchIntl(v, i)
		take(i, e, ok, detPhone)
	case c == '(':
		e, ok := matchNANP(v, i)
		take(i, e, ok, detPhone)
	default:
		if m.on[detAWS] {
			switch c {
			case 'A':
				e, ok := matchAWSKeyID(v, i)
				take(i, e, ok, detAWS)
				fallthrough
			case 'a', 'S', 's':
				s, e, ok := matchAWSSecret(v, i)
				take(s, e, ok, detAWS)
			}
		}
		if isUpper(c) {
			if m.on[detIBAN] {
				e, ok := matchIBAN(v, i)
				take(i, e, ok, detIBAN)
			}
			break
		}
		if i > 0 && (v[i-1] == '-' || v[i-1] == '_') {
			break // inside a token run: "x_ghp_...", "ey-ey-..." (keeps scans linear)
		}
		switch c {
		case 'e':
			if m.on[detJWT] {
				e, ok := matchJWT(v, i)
				take(i, e, ok, detJWT)
			}
		case 'g':
			if m.on[detGitHub] {
				e, ok := matchGitHub(v, i)
				take(i, e, ok, detGitHub)
			}
		case 's':
			if m.on[detOpenAI] {
				e, ok := matchOpenAI(v, i)
				take(i, e, ok, detOpenAI)
			}
		case 'x', 'h':
			if m.on[detSlack] {
				e, ok := matchSlack(v, i)
				take(i, e, ok, detSlack)
			}
		}
	}
	return best, best.end >= 0
}

// pairs[c] is the set of bytes that may follow anchor byte c in any match
// (a superset: "AK", "sk", "ey", digits after digits ...). It lets the scan
// loop skip most anchors without calling a detector.
var pairs = func() (t [256][4]uint64) {
	allow := func(c byte, next string) {
		for k := 0; k < len(next); k++ {
			t[c][next[k]>>6] |= 1 << (next[k] & 63)
		}
	}
	const (
		digits = "0123456789"
		upper  = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
		lower  = "abcdefghijklmnopqrstuvwxyz"
	)
	for c := byte('0'); c <= '9'; c++ {
		allow(c, digits) // ssn, card, phone, bare ssn
	}
	allow('1', " -.") // NANP "1-415-..."
	allow('+', digits)
	allow('(', digits)
	allow('@', digits+upper+lower)
	allow('-', "-")
	for c := byte('A'); c <= 'Z'; c++ {
		allow(c, upper) // IBAN country code, AKIA, ASIA
	}
	allow('A', "Ww") // AWS_SECRET_ACCESS_KEY
	allow('a', "Ww")
	allow('S', "Ee") // SecretAccessKey
	allow('s', "Eek")
	allow('e', "yw") // JWT header
	allow('g', "hi") // ghp_, github_pat_
	allow('x', "oa") // xox*, xapp
	allow('h', "o")  // hooks.slack.com
	return t
}()

func pairOK(c, n byte) bool { return pairs[c][n>>6]&(1<<(n&63)) != 0 }
