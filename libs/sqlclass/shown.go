package sqlclass

import (
	"fmt"
	"strings"
)

// Shown is a statement as an approver reads it when it runs with bound
// parameters: its text, then a comment line for each parameter in order
// ("-- $1 = 42"), each value already written as a literal (Literal, or
// NULL). Without parameters it is the text.
func Shown(text string, params []string) string {
	if len(params) == 0 {
		return text
	}
	var b strings.Builder
	b.WriteString(text)
	b.WriteString("\n-- bound parameters:")
	for i, p := range params {
		fmt.Fprintf(&b, "\n-- $%d = %s", i+1, p)
	}
	return b.String()
}

// Literal is v as a SQL string literal that reads as what it is, on one
// line: in single quotes with quotes doubled, or as an escape string
// (E'...') when it holds a backslash or a control character, each written
// as its escape (\n, \t, \\, \x1b). A value cannot end its line early and
// pass a line of its own for another parameter.
func Literal(v string) string {
	plain := true
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 || c == 0x7f || c == '\\' {
			plain = false
			break
		}
	}
	if plain {
		return "'" + strings.ReplaceAll(v, "'", "''") + "'"
	}
	var b strings.Builder
	b.WriteString("E'")
	for i := 0; i < len(v); i++ {
		switch c := v[i]; c {
		case '\'':
			b.WriteString(`\'`)
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		case '\b':
			b.WriteString(`\b`)
		case '\f':
			b.WriteString(`\f`)
		default:
			if c < 0x20 || c == 0x7f {
				fmt.Fprintf(&b, `\x%02x`, c)
			} else {
				b.WriteByte(c)
			}
		}
	}
	b.WriteByte('\'')
	return b.String()
}
