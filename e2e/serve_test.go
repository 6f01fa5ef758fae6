package e2e

import (
	"context"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/secrets"
)

// TestServeRefusesUnsafeSetups: `sluice serve` never starts with a default
// a deployment must not have, and says why.
func TestServeRefusesUnsafeSetups(t *testing.T) {
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys")
	_, err := bus.LoadOrCreateKeys(keys)
	require.NoError(t, err)
	master := filepath.Join(dir, "master.key")
	_, err = secrets.LoadOrCreateKeyFile(master)
	require.NoError(t, err)
	nk := func(c string) string { return bus.KeyFile(keys, c) }
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"plaintext NATS across a network", []string{"api", "--nats", "nats://10.20.30.40:4222", "--nats-nkey-file", nk("api")},
			"neither TLS nor loopback"},
		{"plaintext NATS to a host name", []string{"identity", "--nats", "nats://nats-1.internal:4222", "--nats-nkey-file", nk("identity")},
			"neither TLS nor loopback"},
		{"no NATS identity", []string{"policy", "--nats", "nats://127.0.0.1:1"}, "no NATS identity"},
		{"the break-glass seed beside the services' keys", []string{"all", "--nats", "nats://127.0.0.1:1", "--nats-nkey-dir", keys},
			"holds the break-glass seed"},
		{"one identity for every service", []string{"all", "--nats", "nats://127.0.0.1:1", "--nats-nkey-file", nk("api")},
			"each as its own NATS identity"},
		{"worker without a certificate", []string{"pgworker", "--nats", "nats://127.0.0.1:1", "--nats-nkey-file", nk("pgworker"),
			"--master-key-file", master}, "no TLS certificate"},
		{"worker without a master key", []string{"pgworker", "--nats", "nats://127.0.0.1:1", "--nats-nkey-file", nk("pgworker"),
			"--tls-cert", "c.pem", "--tls-key", "k.pem"}, "no master key"},
		{"worker with --tls-dir (development only)", []string{"pgworker", "--tls-dir", dir}, "unknown flag: --tls-dir"},
		{"recorder without a signing key", []string{"recorder", "--nats", "nats://127.0.0.1:1", "--nats-nkey-file", nk("recorder")},
			"signing key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, sluiceBin, append([]string{"serve"}, tc.args...)...)
			cmd.Env = []string{"HOME=" + dir}
			out, err := cmd.CombinedOutput()
			require.Error(t, err, "it started:\n%s", out)
			assert.Contains(t, string(out), tc.want)
			assert.NoError(t, ctx.Err(), "it refused at once, not after a timeout")
		})
	}
}
