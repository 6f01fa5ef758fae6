package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type testSettings struct {
	addr, level string
	hold        time.Duration
	replicas    int
	secure      bool
	origins     []string
}

func settingsFlags(s *testSettings) *pflag.FlagSet {
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	fs.StringVar(&s.addr, "pg-addr", "127.0.0.1:15432", "")
	fs.StringVar(&s.level, "log-level", "info", "")
	fs.DurationVar(&s.hold, "hold-timeout", 5*time.Minute, "")
	fs.IntVar(&s.replicas, "replicas", 1, "")
	fs.BoolVar(&s.secure, "syslog-tls", false, "")
	fs.StringArrayVar(&s.origins, "mcp-allowed-origin", nil, "")
	fs.String(settingsFileFlag, "", "")
	return fs
}

func envOf(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

// The command line wins, then the environment, then the file, then the
// default; lists come as commas or YAML lists; an empty variable is unset.
func TestSettingsPrecedence(t *testing.T) {
	file := filepath.Join(t.TempDir(), "settings.yaml")
	require.NoError(t, os.WriteFile(file, []byte("pg-addr: 0.0.0.0:1\nlog-level: debug\nhold-timeout: 2m\nreplicas: 3\nsyslog-tls: true\nmcp-allowed-origin: [https://a.example, https://b.example]\n"), 0o600))
	var s testSettings
	fs := settingsFlags(&s)
	require.NoError(t, fs.Parse([]string{"--pg-addr", "0.0.0.0:3"}))
	require.NoError(t, applySettings(fs, envOf(map[string]string{
		"SLUICE_CONFIG_FILE": file, "SLUICE_PG_ADDR": "0.0.0.0:2", "SLUICE_LOG_LEVEL": "warn", "SLUICE_REPLICAS": "",
	})))
	assert.Equal(t, "0.0.0.0:3", s.addr, "the command line wins")
	assert.Equal(t, "warn", s.level, "the environment beats the file")
	assert.Equal(t, 2*time.Minute, s.hold, "the file beats the default")
	assert.Equal(t, 3, s.replicas, "an empty variable is unset: the file's value")
	assert.True(t, s.secure)
	assert.Equal(t, []string{"https://a.example", "https://b.example"}, s.origins)

	var e testSettings
	fs = settingsFlags(&e)
	require.NoError(t, fs.Parse(nil))
	require.NoError(t, applySettings(fs, envOf(map[string]string{"SLUICE_MCP_ALLOWED_ORIGIN": "https://c.example, ,https://d.example"})))
	assert.Equal(t, []string{"https://c.example", "https://d.example"}, e.origins)
	assert.Equal(t, "127.0.0.1:15432", e.addr, "the default")
}

// Mistakes say which variable or key, and what is wrong.
func TestSettingsErrors(t *testing.T) {
	dir := t.TempDir()
	for name, c := range map[string]struct {
		file string
		env  map[string]string
		want string
	}{
		"bad variable":  {env: map[string]string{"SLUICE_HOLD_TIMEOUT": "soon"}, want: `SLUICE_HOLD_TIMEOUT="soon"`},
		"unknown key":   {file: "hold-timeout: 1m\nhold_timout: 2m\n", want: "unknown setting(s) hold_timout"},
		"bad value":     {file: "replicas: many\n", want: "replicas"},
		"list for one":  {file: "pg-addr: [a, b]\n", want: "pg-addr takes one value"},
		"not yaml":      {file: "pg-addr: [\n", want: "settings file"},
		"missing file":  {env: map[string]string{"SLUICE_CONFIG_FILE": filepath.Join(dir, "none.yaml")}, want: "settings file"},
		"file as a key": {file: "config-file: other.yaml\n", want: "unknown setting(s) config-file"},
	} {
		t.Run(name, func(t *testing.T) {
			var s testSettings
			fs := settingsFlags(&s)
			require.NoError(t, fs.Parse(nil))
			env := map[string]string{}
			for k, v := range c.env {
				env[k] = v
			}
			if c.file != "" {
				f := filepath.Join(dir, name+".yaml")
				require.NoError(t, os.WriteFile(f, []byte(c.file), 0o600))
				env["SLUICE_CONFIG_FILE"] = f
			}
			err := applySettings(fs, envOf(env))
			require.Error(t, err)
			assert.Contains(t, err.Error(), c.want)
		})
	}
}

// `sluice serve SERVICE --help` lists that service's settings, each with
// its variable, and not the others'.
func TestServeHelpPerService(t *testing.T) {
	var out, errOut bytes.Buffer
	require.Equal(t, 0, run(context.Background(), []string{"serve", "pgworker", "--help"}, &out, &errOut), errOut.String())
	help := out.String()
	assert.Contains(t, help, "sluice serve pgworker")
	assert.Contains(t, help, "--pg-addr string")
	assert.Contains(t, help, "[$SLUICE_PG_ADDR]")
	assert.Contains(t, help, "[$SLUICE_NATS_NKEY_FILE]", "settings every service has")
	assert.Contains(t, help, "--tls-cert")
	assert.NotContains(t, help, "--issuer string", "identity's")
	assert.NotContains(t, help, "--recorder-key-file", "the recorder's")

	out.Reset()
	require.Equal(t, 0, run(context.Background(), []string{"serve", "--help"}, &out, &errOut))
	assert.Contains(t, out.String(), "--recorder-key-file", "without a service: every setting")
	assert.Contains(t, out.String(), "--issuer string")
}
