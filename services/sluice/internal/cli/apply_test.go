package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"sluice.dev/sluice/libs/testkit"
	"sluice.dev/sluice/services/api"
)

// answer makes confirmations read text from a terminal (or, with
// terminal false, from no terminal) for the rest of the test.
func answer(t *testing.T, text string, terminal bool) {
	prev := input
	input = func() (io.Reader, bool) { return strings.NewReader(text), terminal }
	t.Cleanup(func() { input = prev })
}

const before = bootstrap + `targets:
  - name: orders
    kind: postgres
    postgres: {host: orders-db, port: 5432, database: orders, user: gw, sslmode: disable, password: {sealed: %s}}
  - name: legacy
    kind: postgres
    postgres: {host: legacy-db, database: app, user: gw, password: {env: LEGACY_PW}}
policies:
  - name: review-ddl
    action: review
    approvers: [approvers]
    when: sql.kind == "ddl"
  - name: allow-reads
    action: allow
    when: sql.kind == "read"
  - name: old-rule
    action: deny
    when: '"x" in sql.flags'
  - name: mask-pii
    action: mask
    when: '!("dba" in principal.groups)'
    mask: {columns: [customers.email], action: redact}
`

const after = `access:
  admins: [admins]
  auditors: [auditors, security]
approvers:
  - name: approvers
    groups: [approvers]
  - name: dbas
    groups: [dba]
targets:
  - name: orders
    kind: postgres
    postgres: {host: orders-db, port: 6432, database: orders, user: gw, sslmode: disable, password: {sealed: %s}}
  - name: billing
    kind: postgres
    postgres: {host: billing-db, database: billing, user: gw, password: {env: BILLING_PW}}
policies:
  - name: review-ddl
    action: review
    approvers: [approvers, dbas]
    when: |
      sql.kind == "ddl" &&
      !("dba" in principal.groups)
  - name: allow-reads
    action: allow
    when: sql.kind == "read"
  - name: mask-pii
    action: mask
    when: '!("dba" in principal.groups)'
    mask: {columns: [customers.email, customers.ssn], action: redact}
`

// A dry run says, section by section and item by item, what applying would
// add, change and remove, never a secret; the apply says the same of what
// it did; applying again says there is nothing to do.
func TestApplyShowsTheDiff(t *testing.T) {
	s := startStack(t)
	admin := s.idp.Token("root", "admins")
	oldSeal, newSeal := sealed("secret-one"), sealed("secret-two")
	s.breakGlass(fmt.Sprintf(before, oldSeal), "sluice.yaml")
	file := writeFile(t, "sluice.yaml", fmt.Sprintf(after, newSeal))

	var r result
	// The API's view follows the applied configuration a moment later.
	testkit.Eventually(t, 10*time.Second, func() error {
		r = s.cli(admin, "apply", "-f", file, "--dry-run")
		if !strings.Contains(r.stdout, "old-rule") {
			return fmt.Errorf("diff not there yet: %s %s", r.stdout, r.stderr)
		}
		return nil
	})
	require.Equal(t, 0, r.code, r.stderr)
	out := r.stdout
	for _, want := range []string{
		"targets\n",
		"  added    billing  postgres gw@billing-db:5432/billing, password env BILLING_PW",
		"  changed  orders   port 5432 -> 6432; password (sealed, changed)",
		"policies\n",
		"  changed  review-ddl  when changed; approvers +dbas",
		`-sql.kind == "ddl"`,
		`+sql.kind == "ddl" &&`,
		`+!("dba" in principal.groups)`,
		"  removed  old-rule    was: deny when",
		"masking\n",
		"  changed  mask-pii  columns +customers.ssn",
		"approvers\n",
		"  added    dbas  groups dba",
		"access\n",
		"  changed  access  auditors +security",
		"would apply 5 change(s)",
	} {
		assert.Contains(t, out, want)
	}
	assert.NotContains(t, out, "legacy", "without --prune a target the file does not name stays")
	assert.NotContains(t, out, "allow-reads", "an unchanged rule is not listed")
	for _, secret := range []string{oldSeal, newSeal, "secret-one", "secret-two"} {
		assert.NotContains(t, out+r.stderr, secret)
	}

	r = s.cli(admin, "apply", "-f", file, "--dry-run", "-o", "json")
	require.Equal(t, 0, r.code, r.stderr)
	var res api.ApplyResult
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &res))
	assert.True(t, res.DryRun)
	items := map[string]api.DiffItem{}
	for _, d := range res.Diff {
		items[d.Section+"/"+d.Name] = d
	}
	assert.Equal(t, "added", items["targets/billing"].Op)
	assert.Equal(t, []string{"port", "password"}, items["targets/orders"].Fields)
	assert.Equal(t, []string{"when", "approvers"}, items["policies/review-ddl"].Fields)
	assert.NotEmpty(t, items["policies/review-ddl"].WhenDiff)
	assert.Equal(t, "removed", items["policies/old-rule"].Op)
	assert.Equal(t, "changed", items["masking/mask-pii"].Op)
	assert.Equal(t, "added", items["approvers/dbas"].Op)
	assert.Equal(t, "changed", items["access/access"].Op)
	assert.NotContains(t, r.stdout, newSeal)

	// The apply prints the same items.
	r = s.cli(admin, "apply", "-f", file)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stdout, "  changed  orders   port 5432 -> 6432; password (sealed, changed)")
	assert.Contains(t, r.stdout, "  removed  old-rule")
	assert.Contains(t, r.stdout, "applied 5 change(s); policy revision 2")

	testkit.Eventually(t, 10*time.Second, func() error {
		r = s.cli(admin, "apply", "-f", file)
		if !strings.HasPrefix(r.stdout, "no changes") {
			return fmt.Errorf("second apply: %q %q", r.stdout, r.stderr)
		}
		return nil
	})
	assert.Equal(t, "no changes (applied 0 change(s); policy revision 2)\n", r.stdout)
}

// --prune lists what it removes and removes nothing unconfirmed: it asks
// on a terminal and refuses without one unless --yes is given. The target
// `sluice dev` registers from its own file is one of those it lists.
func TestPruneNeverRemovesSilently(t *testing.T) {
	s := startStack(t)
	admin := s.idp.Token("root", "admins")
	s.breakGlass("targets:\n  - name: demo\n    kind: postgres\n    labels: {env: dev}\n    postgres: {host: 127.0.0.1, port: 5433, database: demo, user: sluice_gateway, sslmode: disable, password: {sealed: "+sealed("pw")+"}}\n", "demo-target.yaml")
	file := writeFile(t, "sluice.yaml", bootstrap+"targets:\n  - name: orders\n    kind: postgres\n    postgres: {host: orders-db, database: orders, user: gw, password: {env: PW}}\n")
	testkit.Eventually(t, 10*time.Second, func() error {
		if len(s.targetNames()) != 1 {
			return fmt.Errorf("targets: %v", s.targetNames())
		}
		return nil
	})
	// The API must see demo before asking it what pruning removes.
	testkit.Eventually(t, 10*time.Second, func() error {
		if r := s.cli(admin, "targets", "list"); !strings.Contains(r.stdout, "demo") {
			return fmt.Errorf("targets list: %s %s", r.stdout, r.stderr)
		}
		return nil
	})

	answer(t, "", false)
	r := s.cli(admin, "apply", "-f", file, "--prune")
	assert.Equal(t, 1, r.code)
	assert.Contains(t, r.stderr, "--prune removes 1 item(s) that "+file+" does not name:\n  target demo: postgres sluice_gateway@127.0.0.1:5433/demo, password (sealed), registered by break-glass")
	assert.Contains(t, r.stderr, "run again with --yes")
	assert.Empty(t, r.stdout)

	r = s.cli(admin, "apply", "-f", file, "--prune", "-o", "json")
	assert.Equal(t, 1, r.code)
	var e struct {
		Error struct {
			Code     string         `json:"code"`
			Removals []api.DiffItem `json:"removals"`
		} `json:"error"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stderr), &e), r.stderr)
	assert.Equal(t, "confirmation_required", e.Error.Code)
	require.Len(t, e.Error.Removals, 1)
	assert.Equal(t, "demo", e.Error.Removals[0].Name)

	answer(t, "n\n", true)
	r = s.cli(admin, "apply", "-f", file, "--prune")
	assert.Equal(t, 1, r.code)
	assert.Contains(t, r.stderr, "Remove them? [y/N]")
	assert.Contains(t, r.stderr, "nothing was applied")
	assert.Equal(t, []string{"demo"}, s.targetNames(), "nothing was removed or added")

	answer(t, "y\n", true)
	r = s.cli(admin, "apply", "-f", file, "--prune")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stdout, "  removed  demo")
	assert.Contains(t, r.stdout, "  added    orders")
	testkit.Eventually(t, 10*time.Second, func() error {
		if names := s.targetNames(); len(names) != 1 || names[0] != "orders" {
			return fmt.Errorf("targets: %v", names)
		}
		return nil
	})

	// With --yes nothing is asked; with nothing to remove nothing is asked.
	s.breakGlass("targets:\n  - name: demo\n    kind: postgres\n    postgres: {host: 127.0.0.1, database: demo, user: u, password: {env: PW}}\n", "demo-target.yaml")
	answer(t, "", false)
	testkit.Eventually(t, 10*time.Second, func() error {
		r = s.cli(admin, "apply", "-f", file, "--prune", "--yes")
		if !strings.Contains(r.stdout, "removed  demo") {
			return fmt.Errorf("apply --prune --yes: %q %q", r.stdout, r.stderr)
		}
		return nil
	})
	r = s.cli(admin, "apply", "-f", file, "--prune")
	require.Equal(t, 0, r.code, r.stderr)
	assert.True(t, strings.HasPrefix(r.stdout, "no changes"), r.stdout)
}

// An indentation mistake far down the file is reported at its line and
// column, with the file's name, through the CLI and the API.
func TestApplyNamesFileLineAndColumn(t *testing.T) {
	s := startStack(t)
	admin := s.idp.Token("root", "admins")
	var b strings.Builder
	b.WriteString(bootstrap + "policies:\n")
	for i := 0; i < 10; i++ {
		fmt.Fprintf(&b, "  - name: rule-%d\n    action: deny\n    reason: r\n    when: sql.kind == \"k%d\"\n", i, i)
	}
	good := b.String()
	// Lines 48 to 51: the last rule, its reason indented one space short.
	bad := writeFile(t, "bad.yaml", good+"  - name: typo\n    action: allow\n   reason: r\n    when: sql.kind == \"read\"\n")
	r := s.cli(admin, "apply", "-f", bad)
	assert.Equal(t, 1, r.code)
	assert.Contains(t, r.stderr, bad+":50:4: did not find expected '-' indicator")

	cel := writeFile(t, "cel.yaml", good+"  - name: typo\n    action: allow\n    when: >-\n      sql.kind == \"read\" &&\n      principal.grups.exists(g, g == \"engineers\")\n")
	r = s.cli(admin, "apply", "-f", cel)
	assert.Equal(t, 1, r.code)
	assert.Contains(t, r.stderr, cel+`:52:16: rule "typo": undefined field 'grups'`)

	r = s.cli(admin, "apply", "-f", cel, "-o", "json")
	assert.Equal(t, 1, r.code)
	assert.Empty(t, r.stdout)
	var e struct {
		Error struct {
			Message string            `json:"message"`
			Code    string            `json:"code"`
			Status  int               `json:"status"`
			Errors  []api.ConfigError `json:"errors"`
		} `json:"error"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stderr), &e), r.stderr)
	assert.Equal(t, "invalid_policy", e.Error.Code)
	assert.Equal(t, 422, e.Error.Status)
	assert.Contains(t, e.Error.Message, "was not applied")
	require.Len(t, e.Error.Errors, 1)
	assert.Equal(t, api.ConfigError{File: cel, Rule: "typo", Line: 52, Column: 16, Message: "undefined field 'grups'"}, e.Error.Errors[0])
}
