package pglocal_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"sluice.dev/sluice/libs/pglocal"
)

func TestStartStopRestart(t *testing.T) {
	ctx := context.Background()
	base, err := os.MkdirTemp("", "pglocal-test-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(base) })
	dir := filepath.Join(base, "data")

	s, err := pglocal.Start(ctx, pglocal.Config{Dir: dir})
	require.NoError(t, err)
	require.NoError(t, s.Exec(ctx, "postgres", "CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)"))
	s.Stop()

	// A second start reuses the data.
	s, err = pglocal.Start(ctx, pglocal.Config{Dir: dir})
	require.NoError(t, err)
	defer s.Stop()
	require.NoError(t, s.Exec(ctx, "postgres", "DO $$ BEGIN IF (SELECT x FROM kept) <> 42 THEN RAISE 'lost'; END IF; END $$"))
}
