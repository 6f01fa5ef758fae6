package certs

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A certificate the authority issues verifies for its hosts over a real
// TLS handshake, and is kept when asked again for the same hosts.
func TestIssueVerifiesAndIsReused(t *testing.T) {
	dir := t.TempDir()
	ca, err := LoadOrCreateCA(dir, "test CA")
	require.NoError(t, err)
	certFile, keyFile, err := ca.Issue(dir, "nats", []string{"nats-1", "nats-2", "127.0.0.1"})
	require.NoError(t, err)
	before, _ := os.ReadFile(certFile)

	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	require.NoError(t, err)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pair}})
	require.NoError(t, err)
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	pool := x509.NewCertPool()
	caPEM, _ := os.ReadFile(ca.CertFile)
	require.True(t, pool.AppendCertsFromPEM(caPEM))
	conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "nats-2"})
	require.NoError(t, err)
	conn.Close()
	_, err = tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "elsewhere"})
	assert.Error(t, err, "a name the certificate does not carry")

	again, err := LoadOrCreateCA(dir, "test CA")
	require.NoError(t, err)
	assert.True(t, again.Cert.Equal(ca.Cert), "the authority is reused")
	_, _, err = again.Issue(dir, "nats", []string{"nats-1", "nats-2", "127.0.0.1"})
	require.NoError(t, err)
	after, _ := os.ReadFile(certFile)
	assert.Equal(t, before, after, "same hosts: the pair is kept")
	_, _, err = again.Issue(dir, "nats", []string{"nats-1", "nats-2", "nats-3", "127.0.0.1"})
	require.NoError(t, err)
	changed, _ := os.ReadFile(certFile)
	assert.NotEqual(t, before, changed, "other hosts: reissued")
	_, _, err = again.Issue(dir, "none", nil)
	assert.Error(t, err)
}

// Half an authority (its key moved away) is an error, never a new one.
func TestHalfAnAuthorityIsRefused(t *testing.T) {
	dir := t.TempDir()
	_, err := LoadOrCreateCA(dir, "test CA")
	require.NoError(t, err)
	require.NoError(t, os.Rename(dir+"/ca-key.pem", dir+"/offline.pem"))
	before, _ := os.ReadFile(dir + "/ca.pem")
	_, err = LoadOrCreateCA(dir, "test CA")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "must both exist")
	after, _ := os.ReadFile(dir + "/ca.pem")
	assert.Equal(t, before, after)
}
