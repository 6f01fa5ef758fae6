package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestPreflightNamesWhatIsMissing runs the preflight of `make test` on a
// PATH that holds only bash and dirname: it must fail and name each missing
// tool with the Debian package that provides it.
func TestPreflightNamesWhatIsMissing(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..")
	bin := t.TempDir()
	for _, tool := range []string{"bash", "dirname"} {
		p, err := exec.LookPath(tool)
		require.NoError(t, err)
		require.NoError(t, os.Symlink(p, filepath.Join(bin, tool)))
	}
	cmd := exec.Command(filepath.Join(bin, "bash"), filepath.Join(root, "scripts", "preflight.sh"), "test")
	cmd.Env = []string{"PATH=" + bin}
	out, err := cmd.CombinedOutput()
	require.Error(t, err, "the preflight passed without psql, pgbench, go or node:\n%s", out)
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee)
	assert.Equal(t, 1, ee.ExitCode())
	for _, want := range []string{
		"missing: psql - psql, the real client the end-to-end tests drive (Debian: apt-get install postgresql-client)",
		"missing: pgbench",
		"missing: gcc - cgo, for the PostgreSQL parser (pg_query_go) (Debian: apt-get install gcc libc6-dev)",
		"missing: node - Node.js",
		"missing: go - the Go toolchain",
		"scripts/install-deps.sh installs it",
	} {
		assert.Contains(t, string(out), want)
	}
	assert.NotContains(t, string(out), "pgbouncer", "make test does not need what only make bench needs")

	// With everything on PATH, it passes.
	cmd = exec.Command("bash", filepath.Join(root, "scripts", "preflight.sh"), "test")
	out, err = cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Empty(t, string(out))
}
