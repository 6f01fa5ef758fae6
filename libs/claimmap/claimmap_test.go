package claimmap_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"sluice.dev/sluice/libs/claimmap"
)

func TestGroups(t *testing.T) {
	for _, tc := range []struct {
		name, expr string
		claims     map[string]any
		want       []string
		evalErr    bool
	}{
		{"by client id", `claims.client_id == "ci" ? ["engineers"] : []`, map[string]any{"client_id": "ci"}, []string{"engineers"}, false},
		{"other client", `claims.client_id == "ci" ? ["engineers"] : []`, map[string]any{"client_id": "x"}, nil, false},
		{"from a nested claim", `claims.ext.teams.map(t, "team-" + t)`, map[string]any{"ext": map[string]any{"teams": []any{"a", "b"}}}, []string{"team-a", "team-b"}, false},
		{"missing claim fails closed", `claims.client_id == "ci" ? ["engineers"] : []`, map[string]any{}, nil, true},
		{"has() guards", `has(claims.scope) && claims.scope.split(" ").exists(s, s == "deploy") ? ["deployers"] : []`, map[string]any{"scope": "read deploy"}, []string{"deployers"}, false},
		{"dynamic list of non-strings", `claims.roles`, map[string]any{"roles": []any{1.0}}, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := claimmap.Compile(tc.expr)
			require.NoError(t, err)
			got, err := p.Groups(tc.claims)
			if tc.evalErr {
				assert.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestCompileRefuses(t *testing.T) {
	for _, expr := range []string{`1 + `, `"engineers"`, `claims.sub == "x"`, `[1, 2]`} {
		_, err := claimmap.Compile(expr)
		assert.Error(t, err, expr)
	}
}
