package config

import (
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// yaml.v3 reports a syntax error at the line where the enclosing block
// starts (its "context" mark) rather than where the problem is: a badly
// indented key on line 50 of a policies list is reported on the line of
// the list's first item. It keeps the problem's own mark to itself, so
// syntaxError finds the place again: the first prefix of the file that
// fails with the same problem ends on the problem's line, and the first
// prefix of that line that fails gives the column.

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// The search parses the file again some twenty times for the line and once
// per character of the line for the column; these bound what it costs on
// a large file (the API accepts up to 4 MiB).
const (
	maxSearchBytes = 1 << 20
	maxColumnBytes = 16 << 20
	maxColumnProbe = 240
)

// syntaxError locates the syntax error err that parsing data gave.
func syntaxError(data []byte, err error) Error {
	problem, reported := yamlProblem(err)
	e := Error{Line: reported, Message: problem}
	if hint := syntaxHints[problem]; hint != "" {
		e.Message += " (" + hint + ")"
	}
	if len(data) > maxSearchBytes {
		return e
	}
	lines := strings.SplitAfter(string(data), "\n")
	fails := func(text string) bool {
		p, bad := parseProblem(text)
		return bad && p == problem
	}
	// The problem comes after the line yaml.v3 names (its context starts
	// the block the problem is in), so search from there.
	lo, hi := max(reported, 1), len(lines)
	if lo > hi {
		lo = 1
	}
	for lo < hi {
		mid := (lo + hi) / 2
		if fails(strings.Join(lines[:mid], "")) {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	if lo < 1 || lo > len(lines) || !fails(strings.Join(lines[:lo], "")) {
		// Not found by prefixes (a problem only the whole file has).
		return e
	}
	e.Line = lo
	before, line := strings.Join(lines[:lo-1], ""), lines[lo-1]
	e.Column = firstNonSpace(line)
	probes := min(maxColumnProbe, maxColumnBytes/(len(before)+1))
	col := 0
	for i := range line {
		if col++; col > probes {
			break
		}
		_, size := utf8.DecodeRuneInString(line[i:])
		if fails(before + line[:i+size]) {
			e.Column = col
			break
		}
	}
	return e
}

// yamlProblem splits a yaml.v3 error into its message and reported line.
func yamlProblem(err error) (string, int) {
	msg := err.Error()
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		n, _ := strconv.Atoi(m[1])
		return m[2], n
	}
	return strings.TrimPrefix(msg, "yaml: "), 0
}

// parseProblem parses text and returns its syntax problem, if any.
func parseProblem(text string) (string, bool) {
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(text), &n); err != nil {
		p, _ := yamlProblem(err)
		return p, true
	}
	return "", false
}

// firstNonSpace is the 1-based column of the first character of line that
// is not a space (a tab counts: it is often the problem).
func firstNonSpace(line string) int {
	col := 1
	for _, r := range line {
		if r != ' ' {
			return col
		}
		col++
	}
	return 1
}

// syntaxHints say what usually causes yaml.v3's terser problems.
var syntaxHints = map[string]string{
	"did not find expected key":                       "check the indentation of this line: it must line up with the keys above it",
	"did not find expected '-' indicator":             "check the indentation of this line: it must line up with the keys of its list item",
	"mapping values are not allowed in this context":  "check the indentation, or quote a value that contains \": \"",
	"found a tab character that violates indentation": "indent with spaces, not tabs",
	"found character that cannot start any token":     "quote values that start with @ or `, and indent with spaces",
	"found unexpected end of stream":                  "a quote or bracket opened here is never closed",
	"did not find expected ',' or ']'":                "a [ opened here is not closed, or an item lacks a comma",
	"did not find expected ',' or '}'":                "a { opened here is not closed, or an item lacks a comma",
}
