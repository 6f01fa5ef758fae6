// Package sqlshape computes a statement's shape on the hot path: the SQL
// text with every numeric and simple string literal replaced by a fresh
// parameter ($n), using a small lexer that understands PostgreSQL's lexical
// rules for the common cases and gives up on everything else (comments,
// dollar quoting, E”, U&, B”, X”, N” strings, non-ASCII, NUL bytes).
//
// A shape is only a cache key. It is sound to reuse a decision for two
// statements with the same shape only when the policy service has checked
// that the classification of the shape (with parameters) equals that of
// the statement (with literals), which it does on the cold path. Giving up
// is always safe: the caller falls back to the exact text.
//
// It assumes standard_conforming_strings = on (the PostgreSQL worker
// enforces it), so a backslash in '...' is an ordinary character.
package sqlshape

import "strconv"

// Shape returns the template of sql and whether the lexer could compute it.
func Shape(sql string) (string, bool) {
	shape, _, ok := shapeOf(sql, nil)
	return shape, ok
}

// Literals are the literals a shape replaced: the byte offset in the
// statement of each, in order; the first became $From, the next $From+1.
type Literals struct {
	Offsets []int
	From    int
}

// ShapeLiterals returns what Shape returns and where the replaced literals
// were.
func ShapeLiterals(sql string) (string, Literals, bool) {
	var lits Literals
	shape, from, ok := shapeOf(sql, &lits.Offsets)
	if !ok {
		return "", Literals{}, false
	}
	lits.From = from
	return shape, lits, true
}

// shapeOf computes the shape, appending the offset of each literal it
// replaces to offsets when not nil; from is the first new parameter.
func shapeOf(sql string, offsets *[]int) (shape string, from int, ok bool) {
	out := make([]byte, 0, len(sql)+8)
	// First pass: the highest existing $n, so new parameters do not clash.
	maxParam, ok := scanParams(sql)
	if !ok {
		return "", 0, false
	}
	from = maxParam + 1
	next := from
	changed := false
	for i := 0; i < len(sql); {
		c := sql[i]
		switch {
		case c >= 0x80 || c == 0:
			return "", 0, false
		case c == '\'':
			end, ok := skipString(sql, i)
			if !ok || !separated(sql, end) {
				return "", 0, false
			}
			if offsets != nil {
				*offsets = append(*offsets, i)
			}
			out = appendParam(out, next)
			next++
			changed = true
			i = end
		case c >= '0' && c <= '9' || c == '.' && i+1 < len(sql) && isDigit(sql[i+1]):
			end, ok := skipNumber(sql, i)
			if !ok || !separated(sql, end) {
				return "", 0, false
			}
			if offsets != nil {
				*offsets = append(*offsets, i)
			}
			out = appendParam(out, next)
			next++
			changed = true
			i = end
		case isIdentStart(c):
			j := i + 1
			for j < len(sql) && isIdentChar(sql[j]) {
				j++
			}
			// Prefixed strings and identifiers (E'', B'', X'', N'', U&'', U&"")
			// have lexical rules this lexer does not implement.
			if j < len(sql) && (sql[j] == '\'' || sql[j] == '&') {
				return "", 0, false
			}
			out = append(out, sql[i:j]...)
			i = j
		case c == '"':
			j := i + 1
			for {
				if j >= len(sql) {
					return "", 0, false
				}
				if sql[j] == '"' {
					if j+1 < len(sql) && sql[j+1] == '"' {
						j += 2
						continue
					}
					break
				}
				if sql[j] >= 0x80 || sql[j] == 0 {
					return "", 0, false
				}
				j++
			}
			out = append(out, sql[i:j+1]...)
			i = j + 1
		case c == '$':
			// Only $n parameters; $tag$ quoting gives up.
			j := i + 1
			for j < len(sql) && isDigit(sql[j]) {
				j++
			}
			if j == i+1 || j < len(sql) && (isIdentChar(sql[j]) || sql[j] == '$' || sql[j] == '.' || sql[j] == '\'' || sql[j] == '"') {
				return "", 0, false
			}
			out = append(out, sql[i:j]...)
			i = j
		case c == '-' && i+1 < len(sql) && sql[i+1] == '-', c == '/' && i+1 < len(sql) && sql[i+1] == '*':
			return "", 0, false
		default:
			out = append(out, c)
			i++
		}
	}
	if !changed {
		return sql, from, true
	}
	return string(out), from, true
}

// separated reports whether a literal ending at i is followed by something
// that cannot merge with the $n that replaces it.
func separated(s string, i int) bool {
	return i >= len(s) || !(isIdentChar(s[i]) || s[i] == '\'' || s[i] == '"' || s[i] == '.')
}

func appendParam(out []byte, n int) []byte {
	out = append(out, '$')
	return strconv.AppendInt(out, int64(n), 10)
}

func isDigit(c byte) bool      { return c >= '0' && c <= '9' }
func isIdentStart(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' }
func isIdentChar(c byte) bool  { return isIdentStart(c) || isDigit(c) || c == '$' }

// skipString returns the index after a '...' literal (” is a quote).
func skipString(s string, i int) (int, bool) {
	for j := i + 1; j < len(s); j++ {
		switch s[j] {
		case 0:
			return 0, false
		case '\'':
			if j+1 < len(s) && s[j+1] == '\'' {
				j++
				continue
			}
			return j + 1, true
		}
		if s[j] >= 0x80 {
			return 0, false
		}
	}
	return 0, false
}

// skipNumber returns the index after a decimal numeric literal; anything
// unusual (hex, underscores, trailing letters) gives up.
func skipNumber(s string, i int) (int, bool) {
	j := i
	for j < len(s) && isDigit(s[j]) {
		j++
	}
	if j < len(s) && s[j] == '.' && !(j+1 < len(s) && s[j+1] == '.') {
		j++
		for j < len(s) && isDigit(s[j]) {
			j++
		}
	}
	if j < len(s) && (s[j] == 'e' || s[j] == 'E') {
		k := j + 1
		if k < len(s) && (s[k] == '+' || s[k] == '-') {
			k++
		}
		if k >= len(s) || !isDigit(s[k]) {
			return 0, false
		}
		for k < len(s) && isDigit(s[k]) {
			k++
		}
		j = k
	}
	if j < len(s) && (isIdentChar(s[j]) || s[j] == '.') {
		return 0, false
	}
	return j, true
}

// scanParams finds the largest $n outside literals and quoted identifiers.
func scanParams(s string) (int, bool) {
	maxN := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\'':
			end, ok := skipString(s, i)
			if !ok {
				return 0, false
			}
			i = end - 1
		case '"':
			j := i + 1
			for j < len(s) && s[j] != '"' {
				j++
			}
			i = j
		case '$':
			j := i + 1
			n := 0
			for j < len(s) && isDigit(s[j]) {
				n = n*10 + int(s[j]-'0')
				if n > 65535 {
					return 0, false
				}
				j++
			}
			if n > maxN {
				maxN = n
			}
			i = j - 1
		}
	}
	return maxN, true
}
