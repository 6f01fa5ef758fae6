package targets_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"

	"sluice.dev/sluice/libs/secrets"
	"sluice.dev/sluice/libs/targets"
	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
)

// newSigner returns an ed25519 key and its OpenSSH private key PEM.
func newSigner(t *testing.T) (ssh.Signer, []byte) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	signer, err := ssh.NewSignerFromKey(priv)
	require.NoError(t, err)
	block, err := ssh.MarshalPrivateKey(priv, "")
	require.NoError(t, err)
	return signer, pem.EncodeToMemory(block)
}

// sshServer is an in-process SSH server on 127.0.0.1 that accepts one
// client key.
type sshServer struct {
	addr  *net.TCPAddr
	auths atomic.Int32 // public key authentication attempts
}

func startSSH(t *testing.T, host ssh.Signer, client ssh.PublicKey, ciphers []string) *sshServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	s := &sshServer{addr: ln.Addr().(*net.TCPAddr)}
	cfg := &ssh.ServerConfig{
		Config: ssh.Config{Ciphers: ciphers},
		PublicKeyCallback: func(_ ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			s.auths.Add(1)
			if string(key.Marshal()) != string(client.Marshal()) {
				return nil, assert.AnError
			}
			return &ssh.Permissions{}, nil
		},
	}
	cfg.AddHostKey(host)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				conn, chans, reqs, err := ssh.NewServerConn(c, cfg)
				if err != nil {
					return
				}
				defer conn.Close()
				go ssh.DiscardRequests(reqs)
				for ch := range chans {
					_ = ch.Reject(ssh.Prohibited, "no channels here")
				}
			}()
		}
	}()
	return s
}

// sshTarget is the configuration of srv's target, pinning the host key
// pinned and holding the client key keyPEM sealed under key.
func sshTarget(srv *sshServer, pinned ssh.PublicKey, key *secrets.Key, keyPEM []byte) *controlv1.SSHTarget {
	return &controlv1.SSHTarget{Host: "127.0.0.1", Port: uint32(srv.addr.Port), User: "deploy",
		HostKey:    string(ssh.MarshalAuthorizedKey(pinned)),
		PrivateKey: &controlv1.Credential{Source: &controlv1.Credential_Sealed{Sealed: key.Seal(keyPEM)}}}
}

func TestDialSSH(t *testing.T) {
	key := newKey(t)
	host, _ := newSigner(t)
	client, clientPEM := newSigner(t)
	srv := startSSH(t, host, client.PublicKey(), nil)
	target := sshTarget(srv, host.PublicKey(), key, clientPEM)

	c, err := targets.DialSSH(context.Background(), target, key, 5*time.Second)
	require.NoError(t, err)
	defer c.Close()
	assert.Equal(t, "deploy", c.User())
	assert.Equal(t, int32(1), srv.auths.Load())
}

func TestDialSSHRefusesAnotherHostKey(t *testing.T) {
	key := newKey(t)
	host, _ := newSigner(t)
	pinned, _ := newSigner(t)
	client, clientPEM := newSigner(t)
	srv := startSSH(t, host, client.PublicKey(), nil)
	target := sshTarget(srv, pinned.PublicKey(), key, clientPEM)

	c, err := targets.DialSSH(context.Background(), target, key, 5*time.Second)
	require.Error(t, err)
	assert.Nil(t, c)
	assert.Contains(t, err.Error(), "does not match the one pinned in configuration")
	assert.Contains(t, err.Error(), ssh.FingerprintSHA256(host.PublicKey()))
	assert.Contains(t, err.Error(), ssh.FingerprintSHA256(pinned.PublicKey()))
	assert.Zero(t, srv.auths.Load(), "the key Sluice holds is never offered to an impostor")
}

func TestDialSSHOnlyAESGCM(t *testing.T) {
	key := newKey(t)
	host, _ := newSigner(t)
	client, clientPEM := newSigner(t)
	srv := startSSH(t, host, client.PublicKey(), []string{"chacha20-poly1305@openssh.com"})
	target := sshTarget(srv, host.PublicKey(), key, clientPEM)

	_, err := targets.DialSSH(context.Background(), target, key, 5*time.Second)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "cipher")
	assert.Equal(t, []string{"aes128-gcm@openssh.com", "aes256-gcm@openssh.com"}, targets.SSHCiphers)
}

func TestDialSSHBadConfiguration(t *testing.T) {
	key := newKey(t)
	host, _ := newSigner(t)
	client, clientPEM := newSigner(t)
	srv := startSSH(t, host, client.PublicKey(), nil)
	for name, c := range map[string]struct {
		target func(*controlv1.SSHTarget)
		want   string
	}{
		"unset env": {func(tg *controlv1.SSHTarget) {
			tg.PrivateKey = &controlv1.Credential{Source: &controlv1.Credential_Env{Env: "SLUICE_TARGETS_TEST_UNSET"}}
		}, "the target's private key: secrets: environment variable SLUICE_TARGETS_TEST_UNSET is not set"},
		"not a key": {func(tg *controlv1.SSHTarget) {
			tg.PrivateKey = &controlv1.Credential{Source: &controlv1.Credential_Sealed{Sealed: key.Seal([]byte("not a key"))}}
		}, "the target's private key: "},
		"no pinned key": {func(tg *controlv1.SSHTarget) { tg.HostKey = "" }, "the target's pinned host key: "},
	} {
		t.Run(name, func(t *testing.T) {
			target := sshTarget(srv, host.PublicKey(), key, clientPEM)
			c.target(target)
			_, err := targets.DialSSH(context.Background(), target, key, 5*time.Second)
			require.Error(t, err)
			assert.Contains(t, err.Error(), c.want)
			assert.Zero(t, srv.auths.Load())
		})
	}
}

// TestDialSSHTimeout: a target that accepts the connection and never
// answers is given up after the timeout.
func TestDialSSHTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close() // held open, silent
		}
	}()
	key := newKey(t)
	host, _ := newSigner(t)
	_, clientPEM := newSigner(t)
	srv := &sshServer{addr: ln.Addr().(*net.TCPAddr)}
	target := sshTarget(srv, host.PublicKey(), key, clientPEM)
	start := time.Now()
	_, err = targets.DialSSH(context.Background(), target, key, 300*time.Millisecond)
	require.Error(t, err)
	assert.Less(t, time.Since(start), 5*time.Second)
}
