package secrets

import (
	"crypto/rand"
	"encoding/base64"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
)

func newKey(t *testing.T) *Key {
	raw := make([]byte, 32)
	_, _ = rand.Read(raw)
	k, err := ParseKey(base64.StdEncoding.EncodeToString(raw))
	require.NoError(t, err)
	return k
}

func TestSealOpen(t *testing.T) {
	k := newKey(t)
	sealed := k.Seal([]byte("s3cret"))
	assert.NotContains(t, string(sealed), "s3cret")
	plain, err := k.Open(sealed)
	require.NoError(t, err)
	assert.Equal(t, "s3cret", string(plain))

	// Two seals of the same secret differ (random nonce).
	assert.NotEqual(t, sealed, k.Seal([]byte("s3cret")))

	// Altered ciphertext and another key are refused.
	bad := append([]byte(nil), sealed...)
	bad[len(bad)-1] ^= 1
	_, err = k.Open(bad)
	assert.ErrorIs(t, err, ErrOpen)
	_, err = newKey(t).Open(sealed)
	assert.ErrorIs(t, err, ErrOpen)
}

func TestKeyFile(t *testing.T) {
	t.Setenv(EnvMasterKey, "")
	path := filepath.Join(t.TempDir(), "master.key")
	k1, err := LoadOrCreateKeyFile(path)
	require.NoError(t, err)
	k2, err := LoadOrCreateKeyFile(path)
	require.NoError(t, err)
	plain, err := k2.Open(k1.Seal([]byte("x")))
	require.NoError(t, err)
	assert.Equal(t, "x", string(plain))

	_, err = LoadKey(filepath.Join(t.TempDir(), "missing"))
	assert.ErrorIs(t, err, ErrNoKey)
	_, err = ParseKey("c2hvcnQ=")
	assert.Error(t, err)
}

func TestResolve(t *testing.T) {
	k := newKey(t)
	t.Setenv("TEST_PG_PW", "from-env")
	v, err := Resolve(&controlv1.Credential{Source: &controlv1.Credential_Env{Env: "TEST_PG_PW"}}, nil)
	require.NoError(t, err)
	assert.Equal(t, "from-env", string(v))

	_, err = Resolve(&controlv1.Credential{Source: &controlv1.Credential_Env{Env: "TEST_UNSET_VAR_X"}}, nil)
	assert.ErrorContains(t, err, "not set")

	v, err = Resolve(&controlv1.Credential{Source: &controlv1.Credential_Sealed{Sealed: k.Seal([]byte("sealed-pw"))}}, k)
	require.NoError(t, err)
	assert.Equal(t, "sealed-pw", string(v))

	_, err = Resolve(&controlv1.Credential{Source: &controlv1.Credential_Sealed{Sealed: k.Seal([]byte("x"))}}, nil)
	assert.ErrorIs(t, err, ErrNoKey)
	assert.Equal(t, "sealed", Describe(&controlv1.Credential{Source: &controlv1.Credential_Sealed{Sealed: []byte{1}}}))
	assert.Equal(t, "env:X", Describe(&controlv1.Credential{Source: &controlv1.Credential_Env{Env: "X"}}))
}
