package bus

import (
	"strings"
)

// Token encodes an arbitrary string as one subject token. Lowercase letters,
// digits and '-' pass through; every other byte becomes '_' followed by two
// lowercase hex digits. The encoding is injective, so distinct names never
// share a subject, and the result never contains '.', '*', '>' or spaces.
// The empty string encodes as "_".
func Token(s string) string {
	if s == "" {
		return "_"
	}
	clean := true
	for i := 0; i < len(s); i++ {
		if !plain(s[i]) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	const hex = "0123456789abcdef"
	var b strings.Builder
	b.Grow(len(s) * 2)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if plain(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('_')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&0xf])
	}
	return b.String()
}

// DecodeToken reverses Token. It reports false for a string Token cannot produce.
func DecodeToken(t string) (string, bool) {
	if t == "_" {
		return "", true
	}
	var b strings.Builder
	for i := 0; i < len(t); i++ {
		c := t[i]
		if plain(c) {
			b.WriteByte(c)
			continue
		}
		if c != '_' || i+2 >= len(t) {
			return "", false
		}
		hi, ok1 := unhex(t[i+1])
		lo, ok2 := unhex(t[i+2])
		if !ok1 || !ok2 {
			return "", false
		}
		b.WriteByte(hi<<4 | lo)
		i += 2
	}
	return b.String(), true
}

// Subject joins tokens that are already subject-safe (constants, ULIDs, Token output).
func Subject(tokens ...string) string {
	return strings.Join(tokens, ".")
}

func plain(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-'
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}
