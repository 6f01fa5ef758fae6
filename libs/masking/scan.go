package masking

// Byte classes used by the hand-written scanners. One table lookup answers
// "is this byte a digit / letter / email-local byte / ..." without branches.
const (
	cDigit  = 1 << iota // 0-9
	cUpper              // A-Z
	cLower              // a-z
	cLocal              // email local part: A-Za-z0-9 . _ % + -
	cDomain             // email domain: A-Za-z0-9 . -
	cB64url             // base64url: A-Za-z0-9 _ -
	cB64                // base64: A-Za-z0-9 + /
	cHex                // 0-9 a-f A-F
)

const cAlnum = cDigit | cUpper | cLower

var class = func() (t [256]uint8) {
	for c := '0'; c <= '9'; c++ {
		t[c] |= cDigit | cLocal | cDomain | cB64url | cB64 | cHex
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] |= cUpper | cLocal | cDomain | cB64url | cB64
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] |= cLower | cLocal | cDomain | cB64url | cB64
	}
	for _, c := range "abcdefABCDEF" {
		t[c] |= cHex
	}
	for _, c := range "._%+-" {
		t[c] |= cLocal
	}
	t['.'] |= cDomain
	t['-'] |= cDomain | cB64url
	t['_'] |= cB64url
	t['+'] |= cB64
	t['/'] |= cB64
	return t
}()

func isDigit(c byte) bool { return c-'0' < 10 }
func isUpper(c byte) bool { return c-'A' < 26 }
func isLower(c byte) bool { return c-'a' < 26 }
func isAlnum(c byte) bool { return class[c]&cAlnum != 0 }
func isHex(c byte) bool   { return class[c]&cHex != 0 }

// oddBackslashes reports whether the run of backslashes ending at v[j]
// (inclusive) has odd length, i.e. whether v[j] escapes the byte after it.
func oddBackslashes(v []byte, j int) bool {
	n := 0
	for ; j >= 0 && v[j] == '\\'; j-- {
		n++
	}
	return n%2 == 1
}

// escapeEndsAt reports whether v[:i] ends with an escape sequence whose last
// byte is a letter or digit: a JSON / COPY text escape (\n, \t, \u00e9) or
// URL percent-encoding (%2C). The byte after such a sequence starts a new
// word even though the byte before it is alphanumeric.
func escapeEndsAt(v []byte, i int) bool {
	if i >= 2 && v[i-2] == '\\' {
		switch v[i-1] {
		case 'b', 'f', 'n', 'r', 't', 'v':
			if oddBackslashes(v, i-2) {
				return true
			}
		}
	}
	if i >= 3 && v[i-3] == '%' && isHex(v[i-2]) && isHex(v[i-1]) {
		return true
	}
	if i >= 6 && v[i-6] == '\\' && v[i-5] == 'u' && isHex(v[i-4]) && isHex(v[i-3]) &&
		isHex(v[i-2]) && isHex(v[i-1]) && oddBackslashes(v, i-6) {
		return true
	}
	return false
}

// mayEndEscape is a cheap prefilter for escapeEndsAt.
func mayEndEscape(v []byte, i int) bool {
	return i >= 2 && v[i-2] == '\\' || i >= 3 && v[i-3] == '%' || i >= 6 && v[i-6] == '\\'
}

// escapeLen returns how many bytes starting at v[i] belong to an escape
// sequence introduced by the backslash at v[i-1]: \uXXXX (JSON), \xH[H] and
// \ooo (COPY text), otherwise the single escaped byte.
func escapeLen(v []byte, i int) int {
	if i >= len(v) {
		return 0
	}
	n := 1
	switch c := v[i]; {
	case c == 'u':
		for n < 5 && i+n < len(v) && isHex(v[i+n]) {
			n++
		}
	case c == 'x':
		for n < 3 && i+n < len(v) && isHex(v[i+n]) {
			n++
		}
	case c >= '0' && c <= '7':
		for n < 3 && i+n < len(v) && v[i+n] >= '0' && v[i+n] <= '7' {
			n++
		}
	}
	return n
}

// wordStart reports whether a value may begin at v[i]: at the start of v,
// after a byte that is not an ASCII letter or digit, or right after an escape
// sequence. A byte escaped by a backslash, or the first hex digit of a %XX
// escape, never begins a value.
func wordStart(v []byte, i int) bool {
	if i == 0 {
		return true
	}
	p := v[i-1]
	if !isAlnum(p) {
		if p == '%' && i+1 < len(v) && isHex(v[i]) && isHex(v[i+1]) {
			return false // inside %XX
		}
		return p != '\\' || !oddBackslashes(v, i-1)
	}
	return escapeEndsAt(v, i)
}

// wordEnd reports whether a value may end at v[e] (exclusive).
func wordEnd(v []byte, e int) bool {
	return e >= len(v) || !isAlnum(v[e])
}

func isNumSep(c byte) bool { return c == '-' || c == '.' || c == '/' }

// digitStart is wordStart for numbers: it also refuses a start that
// continues a dotted, dashed or slashed number (versions, dates, ids,
// decimals) or is the exponent of a number ("1e+001010001").
func digitStart(v []byte, i int) bool {
	if !wordStart(v, i) {
		return false
	}
	if i >= 2 && isNumSep(v[i-1]) && isDigit(v[i-2]) {
		return false
	}
	return !(i >= 3 && (v[i-1] == '+' || v[i-1] == '-') && v[i-2]|0x20 == 'e' && isDigit(v[i-3]))
}

// digitEnd is wordEnd for numbers, refusing an end that a dotted, dashed or
// slashed number continues past.
func digitEnd(v []byte, e int) bool {
	if !wordEnd(v, e) {
		return false
	}
	return !(e+1 < len(v) && isNumSep(v[e]) && isDigit(v[e+1]))
}

func hasPrefix(v []byte, i int, p string) bool {
	return len(v)-i >= len(p) && string(v[i:i+len(p)]) == p
}

// hasPrefixFold is hasPrefix ignoring ASCII case; p must be lowercase.
func hasPrefixFold(v []byte, i int, p string) bool {
	if len(v)-i < len(p) {
		return false
	}
	for k := 0; k < len(p); k++ {
		c := v[i+k]
		if isUpper(c) {
			c += 'a' - 'A'
		}
		if c != p[k] {
			return false
		}
	}
	return true
}

// runEnd returns the first index at or after i whose byte lacks class bits
// cls, scanning at most max bytes; ok is false when the run is longer.
func runEnd(v []byte, i int, cls uint8, max int) (int, bool) {
	j := i
	for j < len(v) && class[v[j]]&cls != 0 {
		if j-i == max {
			return j, false
		}
		j++
	}
	return j, true
}
