package pgworker_test

import (
	"context"
	"testing"
	"time"

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
	for _, q := range []string{
		"CREATE TABLE IF NOT EXISTS cat_people (id int, ssn text)",
		"TRUNCATE cat_people",
		"INSERT INTO cat_people VALUES (1, '123-45-6789')",
		"GRANT SELECT ON cat_people TO gw",
		"DROP VIEW IF EXISTS cat_later",
	} {
		require.NoError(t, pg.Exec(ctx, "app", q))
	}
	h := newHarness(t,
		&controlv1.Rule{Name: "allow-reads", Action: "allow", When: `sql.kind == "read"`},
		&controlv1.Rule{Name: "mask-ssn", Action: "mask", When: "true", Mask: &controlv1.MaskRule{Columns: []string{"cat_people.ssn"}, Action: "redact"}})
	const maxAge = 300 * time.Millisecond
	w := h.start(pgworker.Config{CatalogMaxAge: maxAge})
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
