package pgworker

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"sluice.dev/sluice/libs/pgmask"
)

// COPY output is read the way PostgreSQL wrote it: the field masked whole is
// the one that holds the column, whatever the values do to the grammar.
func TestCopyMaskReadsTheStatementsGrammar(t *testing.T) {
	p := testPlan(t)
	mask := func(cm *copyMask, data string) string {
		var st pgmask.Stats
		return string(cm.feed([]byte(data), &st)) + string(cm.flush(&st))
	}
	csv := func(quote, escape byte) *copyMask {
		return &copyMask{plan: p, csv: true, delim: ',', quote: quote, escape: escape, whole: map[int]string{1: "customers.email"}, fields: 3}
	}
	for _, c := range []struct {
		name string
		cm   *copyMask
		data string
	}{
		// ESCAPE '\': the escape precedes a quote and the escape itself.
		{"escape before an escape", csv('"', '\\'), `",\\",secretvalue,"a,b,c\""` + "\n"},
		{"escape before a quote", csv('"', '\\'), `"x\"",secretvalue,y` + "\n"},
		{"doubled quotes", csv('"', '"'), `"x"",""",secretvalue,"a,b"` + "\n"},
		{"a quote of its own", csv('|', '|'), `x",secretvalue,"` + "\n"},
		{"a row split across messages", csv('"', '\\'), `",\\",secret` + "\x00" + `value,"a,\"b"` + "\n"},
		{"text: an escaped delimiter", &copyMask{plan: p, delim: '-', null: `\N`, whole: map[int]string{1: "customers.email"}, fields: 3}, `a\-b-secretvalue-c` + "\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var out string
			if i := indexNUL(c.data); i >= 0 {
				var st pgmask.Stats
				out = string(c.cm.feed([]byte(c.data[:i]), &st))
				out += string(c.cm.feed([]byte(c.data[i+1:]), &st)) + string(c.cm.flush(&st))
			} else {
				out = mask(c.cm, c.data)
			}
			assert.NotContains(t, out, "secret")
			assert.NotContains(t, out, "value")
		})
	}
	// What PostgreSQL never writes (a quote inside an unquoted field, a
	// quote left open) is not trusted: the row is masked whole.
	out := mask(csv('"', '"'), `a"b,secretvalue,c`+"\n")
	assert.NotContains(t, out, "a\"b")
	// Text format with a NULL string of the statement's own: a value equal
	// to it is not taken for a NULL.
	cm := &copyMask{plan: p, delim: '\t', null: "\x00", whole: map[int]string{0: "customers.email"}, fields: 1}
	assert.NotContains(t, mask(cm, "guess\n"), "guess")
}

func indexNUL(s string) int {
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			return i
		}
	}
	return -1
}
