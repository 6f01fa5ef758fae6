package pgworker_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
	"sluice.dev/sluice/services/pgworker"
)

// No masked statement is planned on a resolution of the masked columns
// older than CatalogMaxAge: sessions starting within it share the worker's
// resolution of the target, and an open session whose resolution has aged
// past it resolves again before its next masked statement, so it follows
// a view created outside it meanwhile.
func TestCatalogIsNeverOlderThanItsMaxAge(t *testing.T) {
	ctx := context.Background()
	const maxAge = 300 * time.Millisecond
	h, w := maskedPeople(t, `sql.kind == "read"`, maxAge,
		"TRUNCATE cat_people", "INSERT INTO cat_people VALUES (1, '123-45-6789')", "DROP VIEW IF EXISTS cat_later")
	tok := h.token(time.Hour)

	open, err := h.connect(w.Addr(), tok)
	require.NoError(t, err)
	defer open.Close(ctx)
	assert.Equal(t, "****", one(t, open, "SELECT ssn FROM cat_people"))
	assert.EqualValues(t, 1, w.CatalogResolutions())

	// A session starting at once takes the worker's resolution.
	again, err := h.connect(w.Addr(), tok)
	require.NoError(t, err)
	assert.Equal(t, "****", one(t, again, "SELECT ssn FROM cat_people"))
	require.NoError(t, again.Close(ctx))
	assert.EqualValues(t, 1, w.CatalogResolutions(), "one resolution for both sessions")

	// A migration adds a view over the masked column while the first
	// session stays open.
	require.NoError(t, pg.Exec(ctx, "app", "CREATE VIEW cat_later AS SELECT id, translate(ssn, '0123456789', 'abcdefghij') AS code FROM cat_people"))
	require.NoError(t, pg.Exec(ctx, "app", "GRANT SELECT ON cat_later TO gw"))
	time.Sleep(maxAge + 100*time.Millisecond)
	assert.Equal(t, "****", one(t, open, "SELECT code FROM cat_later"), "the open session masks the new view")
	assert.EqualValues(t, 2, w.CatalogResolutions())
}

// When the masked columns cannot be resolved again (here: the target
// refuses the worker's new logins), nothing masked is planned on the old
// resolution: a statement that might copy masked values is refused, and a
// masked read does not run.
func TestCatalogUnavailableFailsClosed(t *testing.T) {
	ctx := context.Background()
	const maxAge = 200 * time.Millisecond
	h, w := maskedPeople(t, `protocol == "postgres"`, maxAge,
		"CREATE TABLE IF NOT EXISTS cat_copies (v text)", "GRANT INSERT, SELECT ON cat_copies TO gw")
	tok := h.token(time.Hour)

	open, err := h.connect(w.Addr(), tok)
	require.NoError(t, err)
	defer open.Close(ctx)
	assert.Equal(t, "****", one(t, open, "SELECT ssn FROM cat_people LIMIT 1"))
	t.Setenv("TEST_GW_PASSWORD", "not-the-password")
	time.Sleep(maxAge + 50*time.Millisecond)
	_, err = open.Exec(ctx, "INSERT INTO cat_copies SELECT ssn FROM cat_people").ReadAll()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "builtin:masking-unavailable")
	_, err = open.Exec(ctx, "SELECT ssn FROM cat_people").ReadAll()
	require.Error(t, err, "a masked read without a fresh resolution does not run")
	n, err := pgconn.Connect(ctx, pg.SuperuserDSN("app"))
	require.NoError(t, err)
	defer n.Close(ctx)
	assert.Equal(t, "0", one(t, n, "SELECT count(*) FROM cat_copies"), "nothing was copied")
}

// maskedPeople makes table cat_people (its ssn masked for everyone), runs
// setup, and starts a worker with rules allowing what allow says.
func maskedPeople(t *testing.T, allow string, maxAge time.Duration, setup ...string) (*harness, *pgworker.Worker) {
	t.Helper()
	for _, q := range append([]string{"CREATE TABLE IF NOT EXISTS cat_people (id int, ssn text)", "GRANT SELECT ON cat_people TO gw"}, setup...) {
		require.NoError(t, pg.Exec(context.Background(), "app", q))
	}
	h := newHarness(t,
		&controlv1.Rule{Name: "allow", Action: "allow", When: allow},
		&controlv1.Rule{Name: "mask-ssn", Action: "mask", When: "true", Mask: &controlv1.MaskRule{Columns: []string{"cat_people.ssn"}, Action: "redact"}})
	return h, h.start(pgworker.Config{CatalogMaxAge: maxAge})
}
