package masking

import (
	"errors"
	"fmt"
	"unicode/utf8"
)

// Action kinds.
const (
	Redact = "redact" // replace with a marker; the zero Action redacts
	Keep   = "keep"   // mask all but the last Action.Keep characters
	Token  = "token"  // deterministic keyed token (HMAC-SHA256)
)

// MaxKeep bounds Action.Keep: keeping more could leave enough digits for
// the kept tail to be a sensitive value itself.
const MaxKeep = 8

// WholeMarker replaces a whole value under Redact, and is the fail-closed
// output whenever masking cannot complete.
const WholeMarker = "****"

// TokenPrefix starts every token; a token is TokenPrefix and 16 characters
// of lowercase base32 (80 bits of HMAC-SHA256).
const TokenPrefix = "tok_"

// MinTokenKey is the shortest accepted Config.TokenKey.
const MinTokenKey = 32

// Action says how a detected span or a whole value is replaced.
// The zero value redacts.
type Action struct {
	Kind string // Redact (or ""), Keep or Token
	Keep int    // for Keep: characters kept at the end, 0..MaxKeep
}

// ErrInvalidAction reports an unknown Action.Kind or a Keep out of range.
var ErrInvalidAction = errors.New("masking: invalid action")

// Validate reports whether a is a usable action.
func (a Action) Validate() error {
	switch a.Kind {
	case "", Redact, Token:
		return nil
	case Keep:
		if a.Keep < 0 || a.Keep > MaxKeep {
			return fmt.Errorf("%w: keep %d outside 0..%d", ErrInvalidAction, a.Keep, MaxKeep)
		}
		return nil
	}
	return fmt.Errorf("%w: %q", ErrInvalidAction, a.Kind)
}

// spanMarkers are the Redact replacements for spans inside a value.
var spanMarkers = func() (t [numDetectors]string) {
	for i, n := range detNames {
		t[i] = "[" + n + "]"
	}
	return t
}()

// appendKeep appends v with all but its last n characters replaced by '*'.
// Characters are ASCII letters and digits and non-ASCII runes (an invalid
// UTF-8 byte counts as one); each masked rune becomes one '*'. Everything
// else is copied, so separators keep the shape: "***-**-6789". Keep never
// shows more than half of the characters: "ab" with n=8 is "*b".
func appendKeep(dst, v []byte, n int) []byte {
	total := 0
	for k := 0; k < len(v); {
		c := v[k]
		if c < utf8.RuneSelf {
			if isAlnum(c) {
				total++
			}
			k++
			continue
		}
		_, size := utf8.DecodeRune(v[k:])
		total++
		k += size
	}
	mask := total - min(n, total/2)
	for k := 0; k < len(v); {
		c := v[k]
		if mask <= 0 {
			return append(dst, v[k:]...)
		}
		if c < utf8.RuneSelf {
			if isAlnum(c) {
				c = '*'
				mask--
			}
			dst = append(dst, c)
			k++
			continue
		}
		_, size := utf8.DecodeRune(v[k:])
		dst = append(dst, '*')
		mask--
		k += size
	}
	return dst
}

// appendKeepEmail keeps the last n characters of the local part and the
// top-level domain; the other domain labels are masked: "**er@*******.com".
func appendKeepEmail(dst, v []byte, n int) []byte {
	at := -1
	for k := len(v) - 1; k >= 0; k-- {
		if v[k] == '@' {
			at = k
			break
		}
	}
	dot := -1
	for k := len(v) - 1; k > at; k-- {
		if v[k] == '.' {
			dot = k
			break
		}
	}
	if at < 0 || dot < 0 {
		return appendKeep(dst, v, n)
	}
	dst = appendKeep(dst, v[:at], n)
	dst = append(dst, '@')
	dst = appendKeep(dst, v[at+1:dot], 0)
	return append(dst, v[dot:]...)
}

// appendKeepDigits is keep for a digits-only span in a numeric position:
// masked digits become '9', so the result is still a number, has no leading
// zero, and no issuer prefix or SSN area starts with 9 ("999999999999" + "4242").
func appendKeepDigits(dst, v []byte, n int) []byte {
	n = min(n, len(v)/2)
	for k, c := range v {
		if k < len(v)-n {
			c = '9'
		}
		dst = append(dst, c)
	}
	return dst
}

func allDigits(v []byte) bool {
	for _, c := range v {
		if !isDigit(c) {
			return false
		}
	}
	return len(v) > 0
}

// numericContext reports whether v[s:e] sits where a number would: at the
// start or end of the value, or after '[' '{' '(' ',' ':' (and an optional
// minus sign) and before
// ']' '}' ')' ',' (JSON whitespace allowed in between). A JSON number, a
// numeric column value, a CSV field or an array element masked with text
// would no longer parse, so such spans get digits.
func numericContext(v []byte, s, e int) bool {
	p := s - 1
	if p >= 0 && v[p] == '-' { // a negative number: "-0" stays one
		p--
	}
	for p >= 0 && s-p <= 64 && isJSONSpace(v[p]) {
		p--
	}
	if p >= 0 {
		switch v[p] {
		case '[', '{', '(', ',', ':':
		default:
			return false
		}
	}
	q := e
	for q < len(v) && q-e < 64 && isJSONSpace(v[q]) {
		q++
	}
	if q < len(v) {
		switch v[q] {
		case ']', '}', ')', ',':
		default:
			return false
		}
	}
	return true
}

func isJSONSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }
