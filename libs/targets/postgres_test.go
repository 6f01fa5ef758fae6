package targets_test

import (
	"crypto/rand"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"sluice.dev/sluice/libs/secrets"
	"sluice.dev/sluice/libs/targets"
	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
)

func newKey(t *testing.T) *secrets.Key {
	t.Helper()
	raw := make([]byte, 32)
	_, err := rand.Read(raw)
	require.NoError(t, err)
	k, err := secrets.ParseKey(base64.StdEncoding.EncodeToString(raw))
	require.NoError(t, err)
	return k
}

func pgTarget(password *controlv1.Credential) *controlv1.PostgresTarget {
	return &controlv1.PostgresTarget{Host: "db.internal", Port: 6543, Database: "app", User: "gw", Sslmode: "disable", Password: password}
}

func TestPostgresConfigUnresolvable(t *testing.T) {
	key := newKey(t)
	sealed := &controlv1.Credential{Source: &controlv1.Credential_Sealed{Sealed: key.Seal([]byte("pw"))}}
	for name, c := range map[string]struct {
		cred *controlv1.Credential
		key  *secrets.Key
		want string
		is   error
	}{
		"unset env":  {cred: &controlv1.Credential{Source: &controlv1.Credential_Env{Env: "SLUICE_TARGETS_TEST_UNSET"}}, key: key, want: "environment variable SLUICE_TARGETS_TEST_UNSET is not set"},
		"no file":    {cred: &controlv1.Credential{Source: &controlv1.Credential_File{File: filepath.Join(t.TempDir(), "absent")}}, key: key, want: "credential file"},
		"no key":     {cred: sealed, want: "no master key", is: secrets.ErrNoKey},
		"wrong key":  {cred: sealed, key: newKey(t), want: "cannot open sealed secret", is: secrets.ErrOpen},
		"unreadable": {cred: &controlv1.Credential{Source: &controlv1.Credential_Sealed{Sealed: []byte("garbage")}}, key: key, is: secrets.ErrOpen},
	} {
		t.Run(name, func(t *testing.T) {
			cfg, err := targets.PostgresConfig(pgTarget(c.cred), c.key, nil)
			require.Error(t, err)
			assert.Nil(t, cfg)
			assert.Contains(t, err.Error(), "the target's password: ", "the error says which credential")
			assert.Contains(t, err.Error(), c.want)
			if c.is != nil {
				assert.ErrorIs(t, err, c.is)
			}
		})
	}
}

func TestPostgresConfig(t *testing.T) {
	key := newKey(t)
	const password = "p@ss:w/rd?#%&="
	t.Setenv("SLUICE_TARGETS_TEST_PW", password)
	file := filepath.Join(t.TempDir(), "pw")
	require.NoError(t, os.WriteFile(file, []byte(password+"\n"), 0o600))
	runtime := map[string]string{"application_name": "sluice", "client_encoding": "UTF8"}
	for name, cred := range map[string]*controlv1.Credential{
		"sealed": {Source: &controlv1.Credential_Sealed{Sealed: key.Seal([]byte(password))}},
		"env":    {Source: &controlv1.Credential_Env{Env: "SLUICE_TARGETS_TEST_PW"}},
		"file":   {Source: &controlv1.Credential_File{File: file}},
	} {
		t.Run(name, func(t *testing.T) {
			cfg, err := targets.PostgresConfig(pgTarget(cred), key, runtime)
			require.NoError(t, err)
			assert.Equal(t, "db.internal", cfg.Host)
			assert.Equal(t, uint16(6543), cfg.Port)
			assert.Equal(t, "gw", cfg.User)
			assert.Equal(t, "app", cfg.Database)
			assert.Equal(t, password, cfg.Password, "the password survives URL escaping")
			assert.Nil(t, cfg.TLSConfig, "sslmode=disable")
			assert.Empty(t, cfg.Fallbacks, "no fallback to another sslmode")
			assert.Equal(t, runtime, cfg.RuntimeParams)
			assert.Equal(t, 10*time.Second, cfg.ConnectTimeout)
		})
	}

	// Only a sealed password needs the master key.
	cfg, err := targets.PostgresConfig(pgTarget(&controlv1.Credential{Source: &controlv1.Credential_Env{Env: "SLUICE_TARGETS_TEST_PW"}}), nil, nil)
	require.NoError(t, err)
	assert.Equal(t, password, cfg.Password)

	// sslmode decides TLS, with no plaintext fallback.
	pg := pgTarget(&controlv1.Credential{Source: &controlv1.Credential_Env{Env: "SLUICE_TARGETS_TEST_PW"}})
	pg.Sslmode = "require"
	cfg, err = targets.PostgresConfig(pg, nil, nil)
	require.NoError(t, err)
	require.NotNil(t, cfg.TLSConfig)
	assert.Empty(t, cfg.Fallbacks)
	pg.Sslmode = "verify-full"
	cfg, err = targets.PostgresConfig(pg, nil, nil)
	require.NoError(t, err)
	require.NotNil(t, cfg.TLSConfig)
	assert.Equal(t, "db.internal", cfg.TLSConfig.ServerName)
	assert.False(t, cfg.TLSConfig.InsecureSkipVerify)

	// A configuration pgconn refuses says so, without the password.
	pg.Sslmode = "sometimes"
	_, err = targets.PostgresConfig(pg, nil, nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "target configuration")
	assert.False(t, strings.Contains(err.Error(), password), "the password is never in an error: %v", err)
}
