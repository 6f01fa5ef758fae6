package targets

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"time"

	"golang.org/x/crypto/ssh"

	"sluice.dev/sluice/libs/secrets"
	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
)

// SSHCiphers are the AES-GCM ciphers, which run on the CPU's AES
// instructions; the Go ChaCha20-Poly1305 (which OpenSSH clients prefer when
// offered) has no assembly on amd64 and would cost a worker several times
// the CPU for every byte, twice (client and target side). Sluice offers
// only these, to its clients and to its targets.
var SSHCiphers = []string{"aes128-gcm@openssh.com", "aes256-gcm@openssh.com"}

// DialSSH logs in to an SSH target with the key Sluice holds (masterKey
// opens it when it is sealed, and may be nil otherwise), checking the
// target's host key against the one pinned in its configuration: a target
// that shows another key is refused before any credential is used. timeout
// (positive) bounds the TCP connection and the handshake; the client has no
// deadline after that.
func DialSSH(ctx context.Context, t *controlv1.SSHTarget, masterKey *secrets.Key, timeout time.Duration) (*ssh.Client, error) {
	pem, err := secrets.Resolve(t.GetPrivateKey(), masterKey)
	if err != nil {
		return nil, fmt.Errorf("the target's private key: %w", err)
	}
	signer, err := ssh.ParsePrivateKey(pem)
	if err != nil {
		return nil, fmt.Errorf("the target's private key: %w", err)
	}
	pinned, _, _, _, err := ssh.ParseAuthorizedKey([]byte(t.GetHostKey()))
	if err != nil {
		return nil, fmt.Errorf("the target's pinned host key: %w", err)
	}
	port := t.GetPort()
	if port == 0 {
		port = 22
	}
	addr := net.JoinHostPort(t.GetHost(), strconv.Itoa(int(port)))
	d := net.Dialer{Timeout: timeout}
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	_ = raw.SetDeadline(time.Now().Add(timeout))
	c, chans, reqs, err := ssh.NewClientConn(raw, addr, &ssh.ClientConfig{
		User: t.GetUser(), Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: func(_ string, _ net.Addr, key ssh.PublicKey) error {
			if string(key.Marshal()) != string(pinned.Marshal()) {
				return fmt.Errorf("the target's host key %s does not match the one pinned in configuration (%s)", ssh.FingerprintSHA256(key), ssh.FingerprintSHA256(pinned))
			}
			return nil
		},
		HostKeyAlgorithms: []string{pinned.Type()},
		Config:            ssh.Config{Ciphers: SSHCiphers},
		Timeout:           timeout,
	})
	if err != nil {
		raw.Close()
		return nil, err
	}
	_ = raw.SetDeadline(time.Time{})
	return ssh.NewClient(c, chans, reqs), nil
}
