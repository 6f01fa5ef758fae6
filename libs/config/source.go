package config

import (
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// source is the text of the file, for locating characters of decoded
// values: a CEL error is at an offset in the `when` value, which yaml
// decoded from a plain, quoted, literal or folded scalar, possibly over
// several lines.
type source struct {
	data  string
	lines []int // byte offset of each line's start
}

func newSource(data []byte) *source {
	s := &source{data: string(data), lines: []int{0}}
	for i := 0; i < len(s.data); i++ {
		if s.data[i] == '\n' {
			s.lines = append(s.lines, i+1)
		}
	}
	return s
}

// offset is the byte offset of a 1-based line and (rune) column.
func (s *source) offset(line, col int) int {
	if line < 1 || line > len(s.lines) {
		return len(s.data)
	}
	off := s.lines[line-1]
	for c := 1; c < col && off < len(s.data) && s.data[off] != '\n'; c++ {
		_, size := utf8.DecodeRuneInString(s.data[off:])
		off += size
	}
	return off
}

// scalar locates every character of value, the decoded form of n. The
// decoded text keeps the order of the source's characters and only drops
// some (indentation, quotes, escapes) or turns line breaks into spaces, so
// each character is the next source character that can have produced it.
func (s *source) scalar(n *yaml.Node, value string) []pos {
	line, col := n.Line, n.Column
	switch n.Style {
	case yaml.DoubleQuotedStyle, yaml.SingleQuotedStyle:
		col++ // after the quote
	case yaml.LiteralStyle, yaml.FoldedStyle:
		line, col = line+1, 1 // after the indicator line
	}
	off := s.offset(line, col)
	out := make([]pos, 0, utf8.RuneCountInString(value))
	for _, want := range value {
		start, sl, sc := off, line, col
		for off < len(s.data) {
			r, _ := utf8.DecodeRuneInString(s.data[off:])
			if r == want || (r == '\n' && (want == ' ' || want == '\n')) {
				break
			}
			off, line, col = s.advance(off, line, col)
		}
		if off >= len(s.data) {
			// Not found (an escape sequence): stay where the search began.
			off, line, col = start, sl, sc
		}
		out = append(out, pos{line, col})
		if off < len(s.data) {
			off, line, col = s.advance(off, line, col)
		}
	}
	return out
}

func (s *source) advance(off, line, col int) (int, int, int) {
	r, size := utf8.DecodeRuneInString(s.data[off:])
	if r == '\n' {
		return off + size, line + 1, 1
	}
	return off + size, line, col + 1
}
