// Package visible writes text as a person must see it before they act on
// it (an approver on a held command, an auditor on a session's replay):
// whatever a screen, a terminal or a chat client would not show as itself
// is written out.
package visible

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/bidi"
)

// Text is s as an approver or an auditor must see it: every character that a
// screen, a terminal or a chat client would show as nothing, as something
// else, or not at all is written out as ⟨U+XXXX⟩ (an invalid byte as
// ⟨0xXX⟩). That covers control characters (a carriage return that
// redraws a line, a terminal's escape sequences), bidirectional overrides
// and isolates that reorder what is shown, zero-width and other
// default-ignorable characters, spaces other than the ASCII one, line and
// paragraph separators, variation selectors, tags, private use and
// noncharacters, combining marks (drawn over their neighbours) and
// right-to-left letters (which reorder the text around them). Newlines and tabs stay. "⟨" itself is written out too, so
// no text can pass for another's rendering (so Text is applied once: by
// the approvals service to what it keeps, by a transcript to what it
// writes).
func Text(s string) string {
	clean := true
	for i, r := range s {
		if r == utf8.RuneError || hidden(r) {
			if r == utf8.RuneError {
				if _, n := utf8.DecodeRuneInString(s[i:]); n == 3 {
					continue // a real U+FFFD shows as itself
				}
			}
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, "⟨0x%02X⟩", s[i])
		case hidden(r):
			fmt.Fprintf(&b, "⟨U+%04X⟩", r)
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// hidden reports whether r shows as something other than itself.
func hidden(r rune) bool {
	switch {
	case r == '\n' || r == '\t' || r == ' ':
		return false
	case r < 0x80:
		return r < 0x20 || r == 0x7f
	case r == '⟨':
		return true
	}
	if unicode.In(r, unicode.Cc, unicode.Cf, unicode.Co, unicode.Cs, unicode.Zs, unicode.Zl, unicode.Zp,
		unicode.Other_Default_Ignorable_Code_Point, unicode.Variation_Selector, unicode.Noncharacter_Code_Point,
		// Marks drawn over their neighbours (U+0338 turns = into ≠);
		// a precomposed é is one letter and stays.
		unicode.Mn, unicode.Me) || blank(r) {
		return true
	}
	// Right-to-left letters reorder the text around them on screen (the
	// numbers between two Hebrew strings swap places) with no control
	// character at all.
	p, _ := bidi.LookupRune(r)
	return p.Class() == bidi.R || p.Class() == bidi.AL
}

// blank: letters and symbols that fonts draw as empty space.
func blank(r rune) bool {
	switch r {
	case 0x115F, 0x1160, 0x3164, 0xFFA0, // Hangul fillers
		0x2800, // braille blank
		0x180E: // Mongolian vowel separator
		return true
	}
	return false
}

// OneLine is text on one line, for a list or a transcript: runs of spaces
// made one, and each line break shown as ⏎, so that a second line cannot
// pass for the rest of a comment on the first.
func OneLine(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.Join(strings.Fields(l), " ")
	}
	return strings.Join(lines, " ⏎ ")
}
