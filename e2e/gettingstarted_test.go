package e2e

import (
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestGettingStarted follows a new user's first minutes with sluice dev on
// ports of their choosing: a script that waits for /readyz connects at
// once, the banner's hints work as printed, and the demo database is
// reachable directly for fixtures.
func TestGettingStarted(t *testing.T) {
	requireTool(t, "psql", "make")
	env := startDev(t, devOptions{noWait: true})

	// /readyz: ready means everything the banner names serves, the demo
	// target included. Poll it as a script would, then connect at once.
	deadline := time.Now().Add(90 * time.Second)
	sawStarting := false
	for {
		resp, err := http.Get(env.API + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
			if resp.StatusCode == http.StatusServiceUnavailable {
				sawStarting = true
			}
		}
		require.True(t, time.Now().Before(deadline), "/readyz never answered ready")
		time.Sleep(20 * time.Millisecond)
	}
	token := env.Token("--sub", "alice", "--groups", "engineers")
	dsn := fmt.Sprintf("host=127.0.0.1 port=%d dbname=demo user=alice sslmode=require password=%s connect_timeout=10", env.PGPort, token)
	out, err := exec.Command("psql", dsn, "-X", "-Atc", "SELECT count(*) FROM customers").CombinedOutput()
	require.NoError(t, err, "ready, but the demo target refused a connection: %s", out)
	assert.Equal(t, "64", strings.TrimSpace(string(out)))
	t.Logf("/readyz answered 503 while starting: %v", sawStarting)

	// The banner names the API and the state directory, which are not the
	// CLI's defaults here, in its hints.
	banner := env.Output()
	assert.Contains(t, banner, "export SLUICE_API="+env.API)
	assert.Contains(t, banner, "bin/sluice dev token --dir "+env.Dir+" --sub alice")
	assert.Contains(t, banner, "bin/sluice dev psql --dir "+env.Dir)

	// The demo database directly, as its superuser: no masking, no policy.
	direct, err := env.CLI(nil, "dev", "psql", "--dir", env.Dir, "--", "-X", "-Atc", "SELECT email FROM customers WHERE id = 1")
	require.NoError(t, err, direct)
	assert.Contains(t, direct, "@example.com")
	dsnOut, err := env.CLI(nil, "dev", "psql", "--dir", env.Dir, "--dsn")
	require.NoError(t, err, dsnOut)
	assert.Contains(t, dsnOut, "user=postgres dbname=demo")
	missing, err := env.CLI(nil, "dev", "psql", "--dir", t.TempDir(), "--dsn")
	require.Error(t, err)
	assert.Contains(t, missing, "no demo database")

	// make dev passes ARGS to sluice dev.
	root, err := filepath.Abs("..")
	require.NoError(t, err)
	mk, err := exec.Command("make", "-n", "-C", root, "dev", "ARGS=--api-addr 127.0.0.1:18080 --pg-addr 127.0.0.1:25432").CombinedOutput()
	require.NoError(t, err, string(mk))
	assert.Contains(t, string(mk), "dev --api-addr 127.0.0.1:18080 --pg-addr 127.0.0.1:25432")
}
