package config_test

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"sluice.dev/sluice/libs/config"
)

// withLine returns testdata/sluice.yaml with line n (1-based) replaced.
func withLine(t *testing.T, n int, text string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/sluice.yaml")
	require.NoError(t, err)
	lines := strings.Split(string(b), "\n")
	require.Less(t, n-1, len(lines))
	lines[n-1] = text
	return []byte(strings.Join(lines, "\n"))
}

func TestTestdataParses(t *testing.T) {
	b, err := os.ReadFile("testdata/sluice.yaml")
	require.NoError(t, err)
	f, err := config.Parse(b)
	require.NoError(t, err)
	require.Len(t, f.Policies, 6)
}

// Every kind of mistake is reported at its own line and column, however
// deep in the file it is: yaml.v3 alone names the line where the enclosing
// list starts for syntax errors, and only a line, in the message, for
// unknown fields and wrong types.
func TestErrorsNameTheirLineAndColumn(t *testing.T) {
	for name, tc := range map[string]struct {
		line      int
		text      string
		wantLine  int
		wantCol   int
		want      string
		wantRule  string
		forbidden string
	}{
		"key indented too little":       {line: 48, text: "   reason: writes by machine identities need approval", wantLine: 48, wantCol: 4, want: "indentation"},
		"key indented too much":         {line: 48, text: "      reason: writes by machine identities need approval", wantLine: 48, want: "indentation"},
		"list item indented too little": {line: 52, text: " - name: allow-engineer-reads", wantLine: 52, wantCol: 2, want: "indentation"},
		"tab":                           {line: 48, text: "\treason: x", wantLine: 48, wantCol: 1, want: "tab"},
		"unclosed quote":                {line: 60, text: `    when: '!("dba" in principal.groups)`, wantLine: 60, wantCol: 11, want: "never closed"},
		"unknown field":                 {line: 47, text: "    qourum: 1", wantLine: 47, wantCol: 5, want: `unknown field "qourum" (did you mean "quorum"?)`},
		"unknown nested field":          {line: 22, text: "      sslmod: verify-full", wantLine: 22, wantCol: 7, want: `targets[orders].postgres: unknown field "sslmod"`},
		"wrong type":                    {line: 47, text: "    quorum: two", wantLine: 47, wantCol: 13, want: `policies[review-machine-writes].quorum: want a whole number, 0 or more, found "two"`},
		"scalar for a list":             {line: 46, text: "    approvers: approvers", wantLine: 46, wantCol: 16, want: "want a list"},
		"port as text":                  {line: 19, text: "      port: fivefour", wantLine: 19, wantCol: 13, want: "port: want a whole number"},
		"key given twice":               {line: 47, text: "    action: allow", wantLine: 47, wantCol: 5, want: "action is given twice (first on line 45)"},
		"inline secret":                 {line: 23, text: "      password: hunter2", wantLine: 23, wantCol: 17, want: "inline secrets are not accepted", forbidden: "hunter2"},
		"undefined approver":            {line: 46, text: "    approvers: [approvers, approverz]", wantLine: 46, wantCol: 28, want: `approver group "approverz" is not defined`, wantRule: "review-machine-writes"},
		"empty admins":                  {line: 9, text: "  admins: []", wantLine: 9, wantCol: 11, want: "lock every admin out"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := config.Parse(withLine(t, tc.line, tc.text))
			require.Error(t, err)
			var errs config.Errors
			require.True(t, errors.As(err, &errs), "%T", err)
			require.NotEmpty(t, errs)
			e := errs[0]
			assert.Equal(t, tc.wantLine, e.Line, "line: %v", e)
			if tc.wantCol > 0 {
				assert.Equal(t, tc.wantCol, e.Column, "column: %v", e)
			} else {
				assert.Positive(t, e.Column, "column: %v", e)
			}
			assert.Contains(t, e.Message, tc.want)
			assert.Equal(t, tc.wantRule, e.Rule)
			if tc.forbidden != "" {
				assert.NotContains(t, err.Error(), tc.forbidden)
			}
		})
	}
}

// Every unknown field is reported, not only the first.
func TestEveryShapeErrorIsReported(t *testing.T) {
	data := withLine(t, 47, "    qourum: 1")
	lines := strings.Split(string(data), "\n")
	lines[52] = "    actoin: allow"
	_, err := config.Parse([]byte(strings.Join(lines, "\n")))
	var errs config.Errors
	require.ErrorAs(t, err, &errs)
	require.Len(t, errs, 2)
	assert.Equal(t, 47, errs[0].Line)
	assert.Equal(t, 53, errs[1].Line)
}

// WhenPosition maps a place in a rule's `when` (as the policy engine
// reports CEL errors: 1-based line and column of the expression) to the
// file, whatever the scalar's style.
func TestWhenPosition(t *testing.T) {
	b, err := os.ReadFile("testdata/sluice.yaml")
	require.NoError(t, err)
	f, err := config.Parse(b)
	require.NoError(t, err)
	at := func(rule int, line, col int) [2]int {
		l, c := f.WhenPosition(rule, line, col)
		return [2]int{l, c}
	}
	// Plain: review-ddl, `sql.kind` on line 43.
	assert.Equal(t, [2]int{43, 11}, at(2, 1, 1))
	assert.Equal(t, [2]int{43, 37}, at(2, 1, 1+strings.Index(f.Policies[2].When, "sql.kind")))
	// Folded (>-): one line of CEL over two lines of the file.
	assert.Equal(t, [2]int{50, 7}, at(3, 1, 1))
	assert.Equal(t, [2]int{51, 7}, at(3, 1, 1+strings.Index(f.Policies[3].When, "sql.kind")))
	// Literal (|): lines map one to one, after the indentation.
	assert.Equal(t, [2]int{55, 7}, at(4, 1, 1))
	assert.Equal(t, [2]int{57, 7}, at(4, 3, 1))
	assert.Equal(t, [2]int{57, 10}, at(4, 3, 4))
	// Quoted: after the quote.
	assert.Equal(t, [2]int{60, 12}, at(5, 1, 1))
	assert.Equal(t, [2]int{60, 14}, at(5, 1, 3))
	// The rule's own position is its `when`.
	assert.Equal(t, 50, f.Policies[3].Line)
	assert.Equal(t, 7, f.Policies[3].Column)
}
