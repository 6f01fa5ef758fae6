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

// A server left running by a process that died without stopping it (it
// runs in its own process group and outlives a SIGKILL of its parent) is
// stopped by the next start on the same directory, which then starts
// with the data kept.
func TestStartStopsAServerLeftRunning(t *testing.T) {
	ctx := context.Background()
	base, err := os.MkdirTemp("", "pglocal-test-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(base) })
	dir := filepath.Join(base, "data")

	left, err := pglocal.Start(ctx, pglocal.Config{Dir: dir})
	require.NoError(t, err)
	t.Cleanup(left.Stop)
	require.NoError(t, left.Exec(ctx, "postgres", "CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)"))

	s, err := pglocal.Start(ctx, pglocal.Config{Dir: dir})
	require.NoError(t, err)
	defer s.Stop()
	require.NoError(t, s.Exec(ctx, "postgres", "DO $$ BEGIN IF (SELECT x FROM kept) <> 42 THEN RAISE 'lost'; END IF; END $$"))
	require.Error(t, left.Exec(ctx, "postgres", "SELECT 1"), "the server left running is stopped")
}
