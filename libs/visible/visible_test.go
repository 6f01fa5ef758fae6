package visible_test

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"sluice.dev/sluice/libs/visible"
)

func TestTextWritesOutWhatDoesNotShow(t *testing.T) {
	for in, want := range map[string]string{
		"DELETE FROM t WHERE id = 1":              "DELETE FROM t WHERE id = 1",
		"SELECT 1;\nSELECT\t2":                    "SELECT 1;\nSELECT\t2",
		"SELECT 'café', '€', 'ж', '漢字', '\uFFFD'": "SELECT 'café', '€', 'ж', '漢字', '\uFFFD'",
		// A bidirectional override reorders what follows it on screen.
		"SELECT 1 -- \u202Etxet\u202C; DROP TABLE t": "SELECT 1 -- ⟨U+202E⟩txet⟨U+202C⟩; DROP TABLE t",
		"ls \u2066x\u2069":                           "ls ⟨U+2066⟩x⟨U+2069⟩",
		// Zero-width and other ignorable characters.
		"rm\u200B -rf \u200C\u200D\u2060\uFEFF/": "rm⟨U+200B⟩ -rf ⟨U+200C⟩⟨U+200D⟩⟨U+2060⟩⟨U+FEFF⟩/",
		"a\u00ADb\u034Fc\U000E0041d":             "a⟨U+00AD⟩b⟨U+034F⟩c⟨U+E0041⟩d",
		// A carriage return redraws the line; escapes drive the terminal.
		"rm -rf /\rls -l":       "rm -rf /⟨U+000D⟩ls -l",
		"ls\x1b[2K\x1b[1Gecho":  "ls⟨U+001B⟩[2K⟨U+001B⟩[1Gecho",
		"a\x00b\x7fc\u0085d":    "a⟨U+0000⟩b⟨U+007F⟩c⟨U+0085⟩d",
		"a\u00A0b\u3000c\u2028": "a⟨U+00A0⟩b⟨U+3000⟩c⟨U+2028⟩",
		"a\uFE0Fb\U000E0100c":   "a⟨U+FE0F⟩b⟨U+E0100⟩c",
		"a\u3164b\u2800c":       "a⟨U+3164⟩b⟨U+2800⟩c",
		"a\uE000b\uFFFFc":       "a⟨U+E000⟩b⟨U+FFFF⟩c",
		"a\xffb\xc3":            "a⟨0xFF⟩b⟨0xC3⟩",
		// Marks drawn over a neighbour; right-to-left letters, which swap
		// the numbers between them on screen.
		"a =\u0338 b, e\u0301":            "a =⟨U+0338⟩ b, e⟨U+0301⟩",
		"transfer('א', 1000000, 10, 'ב')": "transfer('⟨U+05D0⟩', 1000000, 10, '⟨U+05D1⟩')",
		"SELECT 'مرحبا'":                  "SELECT '⟨U+0645⟩⟨U+0631⟩⟨U+062D⟩⟨U+0628⟩⟨U+0627⟩'",
		// Its own notation, typed, cannot pass for a hidden character.
		"SELECT '⟨U+202E⟩'": "SELECT '⟨U+27E8⟩U+202E⟩'",
	} {
		assert.Equal(t, want, visible.Text(in), "%q", in)
	}
}
