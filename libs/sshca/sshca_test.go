package sshca_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"

	"sluice.dev/sluice/libs/secrets"
	"sluice.dev/sluice/libs/sshca"
	commonv1 "sluice.dev/sluice/proto/sluice/common/v1"
)

func userKey(t *testing.T) (ssh.PublicKey, ssh.Signer) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	sp, err := ssh.NewPublicKey(pub)
	require.NoError(t, err)
	signer, err := ssh.NewSignerFromKey(priv)
	require.NoError(t, err)
	return sp, signer
}

func TestIssueAndVerify(t *testing.T) {
	dir := t.TempDir()
	ca, err := sshca.LoadOrCreate(filepath.Join(dir, "ca"))
	require.NoError(t, err)
	again, err := sshca.LoadOrCreate(filepath.Join(dir, "ca"))
	require.NoError(t, err)
	assert.Equal(t, ca.PublicKey().Marshal(), again.PublicKey().Marshal(), "the key is kept")

	now := time.Now()
	master, err := secrets.LoadOrCreateKeyFile(filepath.Join(dir, "master.key"))
	require.NoError(t, err)
	key := master.Subkey(sshca.TokenKeyPurpose)
	sealed := sshca.SealToken(key, "tok")
	assert.NotContains(t, sealed, "tok", "the token is not in the clear")
	pub, _ := userKey(t)
	alice := &commonv1.Principal{Subject: "alice", Groups: []string{"engineers"}, Issuer: "https://idp"}
	cert, err := ca.Issue(pub, alice, sealed, now.Add(time.Hour), now)
	require.NoError(t, err)

	checker := sshca.NewChecker(ca.PublicKey())
	p, got, err := checker.Verify(cert)
	require.NoError(t, err)
	assert.Equal(t, "alice", p.GetSubject())
	assert.Equal(t, []string{"engineers"}, p.GetGroups())
	assert.Equal(t, cert.Serial, got.Serial)
	tok, err := sshca.Token(key, got)
	require.NoError(t, err)
	assert.Equal(t, "tok", tok)
	otherMaster, err := secrets.LoadOrCreateKeyFile(filepath.Join(dir, "other-master.key"))
	require.NoError(t, err)
	_, err = sshca.Token(otherMaster.Subkey(sshca.TokenKeyPurpose), got)
	assert.Error(t, err, "another deployment's key does not open it")
	_, err = sshca.Token(master, got)
	assert.Error(t, err, "the master key itself does not open it")

	// A plain key, another authority, an expired certificate, a principal
	// edited after signing: all refused.
	_, _, err = checker.Verify(pub)
	assert.ErrorIs(t, err, sshca.ErrNotCertificate)
	other, err := sshca.LoadOrCreate(filepath.Join(dir, "other"))
	require.NoError(t, err)
	_, _, err = sshca.NewChecker(other.PublicKey()).Verify(cert)
	assert.Error(t, err)
	late := sshca.NewChecker(ca.PublicKey())
	late.Now = func() time.Time { return now.Add(2 * time.Hour) }
	_, _, err = late.Verify(cert)
	assert.Error(t, err)
	forged := *cert
	forged.Permissions.Extensions = map[string]string{sshca.ExtPrincipal: `{"subject":"alice","groups":["dba"]}`, sshca.ExtToken: sealed}
	_, _, err = checker.Verify(&forged)
	assert.Error(t, err, "the principal is signed with the rest")

	// Never longer than MaxLifetime; never already expired.
	long, err := ca.Issue(pub, alice, sealed, now.Add(1000*time.Hour), now)
	require.NoError(t, err)
	assert.LessOrEqual(t, sshca.ValidBefore(long).Sub(now), sshca.MaxLifetime+time.Second)
	_, err = ca.Issue(pub, alice, sealed, now.Add(-time.Second), now)
	assert.Error(t, err)
	_, err = ca.Issue(cert, alice, sealed, now.Add(time.Hour), now)
	assert.Error(t, err, "a certificate is not a key to certify")
	_, err = ca.Issue(pub, &commonv1.Principal{}, sealed, now.Add(time.Hour), now)
	assert.Error(t, err)
}
