package cli

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"sluice.dev/sluice/libs/testkit"
	"sluice.dev/sluice/services/api"
)

const maskingPolicy = `targets:
  - name: demo
    kind: postgres
    postgres: {host: 127.0.0.1, database: demo, user: gw, password: {env: PW}}
policies:
  - name: allow-reads
    action: allow
    when: sql.kind == "read"
  - name: mask-pii
    action: mask
    when: '!("dba" in principal.groups)'
    mask:
      columns: [customers.email, customers.ssn]
      detectors: [email, ssn]
      action: redact
`

// policy test says what would be masked for the principal on the target:
// the masked columns and detectors, and for a read which result columns
// come from a masked column.
func TestPolicyTestShowsMasking(t *testing.T) {
	s := startStack(t)
	admin := s.idp.Token("root", "admins")
	s.breakGlass(maskingPolicy, "sluice.yaml")
	query := "SELECT c.name, upper(c.email) AS e, o.amount FROM customers c JOIN orders o ON o.customer_id = c.id"
	as := func(groups string, args ...string) result {
		return s.cli(admin, append([]string{"policy", "test", "--sub", "alice", "--groups", groups, "--target", "demo"}, args...)...)
	}
	var r result
	testkit.Eventually(t, 10*time.Second, func() error {
		if r = as("engineers", query); !strings.Contains(r.stdout, "ALLOW") {
			return fmt.Errorf("policy test: %q %q", r.stdout, r.stderr)
		}
		return nil
	})
	require.Equal(t, 0, r.code, r.stderr)
	for _, want := range []string{
		"masking: columns customers.email, customers.ssn; detectors email, ssn; action redact\n",
		"  result column 1 (customers.name): detectors only\n",
		"  result column 2 (customers.email): masked (customers.email)\n",
		"  result column 3 (orders.amount): detectors only\n",
	} {
		assert.Contains(t, r.stdout, want)
	}
	assert.NotContains(t, r.stdout, "statement 1:", "the classification needs -v")

	r = as("engineers", "SELECT * FROM public.customers")
	assert.Contains(t, r.stdout, "  result: reads masked columns customers.email, customers.ssn, masked wherever they appear\n")

	r = as("dba", query)
	assert.Contains(t, r.stdout, "masking: none for alice on demo\n")

	r = as("engineers", "-v", query)
	assert.Contains(t, r.stdout, "statement 1: read SELECT")
	assert.Contains(t, r.stdout, "result column 2 (customers.email): masked")

	r = as("engineers", "-o", "json", query)
	require.Equal(t, 0, r.code, r.stderr)
	var d struct {
		Action  string           `json:"action"`
		Masking *api.MaskingJSON `json:"masking"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &d))
	require.NotNil(t, d.Masking)
	assert.Equal(t, []string{"customers.email", "customers.ssn"}, d.Masking.Columns)
	assert.Equal(t, []string{"email", "ssn"}, d.Masking.Detectors)
	require.Len(t, d.Masking.Results, 1)
	require.Len(t, d.Masking.Results[0].Columns, 3)
	assert.Equal(t, []string{"customers.email"}, d.Masking.Results[0].Columns[1].MaskedBy)
	assert.Empty(t, d.Masking.Results[0].Columns[0].MaskedBy)

	r = as("engineers", "-o", "json", "-v", query)
	var full api.DecisionJSON
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &full))
	require.NotNil(t, full.Masking)
	require.Len(t, full.Statements, 1)
	assert.Equal(t, [][]string{{"customers.name"}, {"customers.email"}, {"orders.amount"}}, full.Statements[0].Targets)

	r = as("dba", "-o", "json", query)
	assert.Contains(t, r.stdout, `"masking": null`)
}

// What an apply returned with is what the services judge by at once: the
// very next request names the target it added, and the policy service,
// whose view follows the control bucket on its own, does not answer that
// there is no such target (it catches up before it refuses).
func TestAppliedTargetIsKnownAtOnce(t *testing.T) {
	s := startStack(t)
	admin := s.idp.Token("root", "admins")
	for i := range 5 {
		name := fmt.Sprintf("db%d", i)
		file := writeFile(t, name+".yaml", "targets:\n  - name: "+name+"\n    kind: postgres\n    postgres: {host: h, database: d, user: u, password: {env: PW}}\n")
		r := s.cli(admin, "apply", "-f", file)
		require.Equal(t, 0, r.code, r.stderr)
		r = s.cli(admin, "policy", "test", "--sub", "alice", "--groups", "engineers", "--target", name, "SELECT 1")
		assert.NotContains(t, r.stdout+r.stderr, "there is no target", "apply %d", i)
		assert.Contains(t, r.stdout, "masking: none for alice on "+name, "apply %d: %s", i, r.stderr)
	}
}
