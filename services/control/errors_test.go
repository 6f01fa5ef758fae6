package control_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/testkit"
	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
	"sluice.dev/sluice/services/control"
)

// padded is a configuration whose last rule starts at line 49, after
// enough rules to make a wrong line obvious.
func padded(last string) string {
	var b strings.Builder
	b.WriteString("approvers:\n  - name: approvers\n    groups: [approvers]\npolicies:\n")
	for i := 0; i < 11; i++ {
		fmt.Fprintf(&b, "  - name: rule-%d\n    action: deny\n    reason: r\n    when: sql.kind == \"k%d\"\n", i, i)
	}
	return b.String() + last
}

func startControl(t *testing.T) (context.Context, *bus.Conn) {
	_, conn := testkit.NATS(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	require.NoError(t, bus.Provision(ctx, conn.JS, bus.Topology{}))
	go func() { _ = control.New(control.Config{Conn: conn, Log: zerolog.Nop()}).Run(ctx) }()
	return ctx, conn
}

func breakGlass(t *testing.T, ctx context.Context, conn *bus.Conn, config string) *controlv1.ApplyResponse {
	var resp controlv1.ApplyResponse
	testkit.Eventually(t, 10*time.Second, func() error {
		return bus.Request(ctx, conn.NC, bus.APIControlBreakGlass, &controlv1.ApplyRequest{Config: []byte(config), FileName: "sluice.yaml", DryRun: true}, &resp)
	})
	return &resp
}

// The control service parses the file the CLI sent; what it answers must
// name the rule and the place in that file: the line of the `when` and,
// for a CEL error, the line and column inside it however the expression
// is written (folded, literal, quoted), and the line and column of YAML
// and schema errors.
func TestApplyErrorsNameLineAndColumn(t *testing.T) {
	ctx, conn := startControl(t)
	for name, tc := range map[string]struct {
		last          string
		line, column  int32
		rule, message string
	}{
		"folded when": {
			last: "  - name: typo\n    action: allow\n    when: >-\n      sql.kind == \"read\" &&\n      principal.grups.exists(g, g == \"engineers\")\n",
			// Line 53 holds the second line of the expression; `.grups` is
			// at column 16.
			line: 53, column: 16, rule: "typo", message: "undefined field 'grups'",
		},
		"literal when": {
			last: "  - name: typo\n    action: allow\n    when: |\n      sql.kind == \"read\" &&\n      principal.grups.exists(g, g == \"engineers\")\n",
			line: 53, column: 16, rule: "typo", message: "undefined field 'grups'",
		},
		"quoted when": {
			last: "  - name: typo\n    action: allow\n    when: 'principal.grups.size() > 0'\n",
			line: 51, column: 21, rule: "typo", message: "undefined field 'grups'",
		},
		"not a bool": {
			last: "  - name: typo\n    action: allow\n    when: >-\n      sql.kind\n",
			line: 52, column: 7, rule: "typo", message: "must be a bool",
		},
		"duplicate name": {
			last: "  - name: rule-3\n    action: allow\n    when: sql.kind == \"read\"\n",
			line: 51, column: 11, rule: "rule-3", message: "duplicate rule name",
		},
		"indentation": {
			last: "  - name: typo\n    action: allow\n   when: sql.kind == \"read\"\n",
			line: 51, column: 4, message: "indentation",
		},
		"unknown field": {
			last: "  - name: typo\n    action: allow\n    wen: sql.kind == \"read\"\n",
			line: 51, column: 5, message: `unknown field "wen" (did you mean "when"?)`,
		},
	} {
		t.Run(name, func(t *testing.T) {
			resp := breakGlass(t, ctx, conn, padded(tc.last))
			require.NotNil(t, resp.GetError())
			require.NotEmpty(t, resp.GetErrors())
			e := resp.GetErrors()[0]
			assert.Equal(t, tc.line, e.GetLine(), "%v", e)
			assert.Equal(t, tc.column, e.GetColumn(), "%v", e)
			assert.Equal(t, tc.rule, e.GetRule())
			assert.Contains(t, e.GetMessage(), tc.message)
		})
	}
}
