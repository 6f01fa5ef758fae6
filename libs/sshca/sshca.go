// Package sshca is Sluice's SSH user certificate authority. OpenSSH clients
// cannot present an OIDC access token (they pass at most 1023 bytes of a
// password), so Sluice exchanges a verified token for a short-lived SSH user
// certificate: it names the principal the token proved, it is valid no
// longer than the token, and the SSH worker accepts only certificates its
// authority signed. The principal travels in a certificate extension, signed
// with the rest: a client cannot change it.
package sshca

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"golang.org/x/crypto/ssh"
	"google.golang.org/protobuf/encoding/protojson"

	"sluice.dev/sluice/libs/secrets"
	commonv1 "sluice.dev/sluice/proto/sluice/common/v1"
)

// Certificate extensions. ExtPrincipal holds the principal (protojson of
// sluice.common.v1.Principal) for people reading the certificate; ExtToken
// the access token it was issued for, sealed (see TokenKeyPurpose): the SSH
// worker opens it and forwards it on the session's behalf, as the
// PostgreSQL worker forwards the password, so every service verifies the
// caller itself, and the session ends when the token does. A certificate
// file that leaks does not give its token away.
const (
	ExtPrincipal = "principal@sluice.dev"
	ExtToken     = "token@sluice.dev"
)

// TokenKeyPurpose names the subkey of the master key that seals the token
// in a certificate (secrets.Key.Subkey): the identity service seals, the SSH
// workers open.
const TokenKeyPurpose = "ssh certificate tokens"

// MaxLifetime bounds a certificate whatever the token's expiry.
const MaxLifetime = 12 * time.Hour

// CA signs user certificates.
type CA struct {
	signer ssh.Signer
}

// New wraps an ed25519 private key.
func New(key ed25519.PrivateKey) (*CA, error) {
	s, err := ssh.NewSignerFromKey(key)
	if err != nil {
		return nil, err
	}
	return &CA{signer: s}, nil
}

// Load reads a CA private key in OpenSSH format.
func Load(path string) (*CA, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	s, err := ssh.ParsePrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("sshca: %s: %w", path, err)
	}
	return &CA{signer: s}, nil
}

// LoadOrCreate reads the CA key at path, creating an ed25519 one (0600)
// when there is none.
func LoadOrCreate(path string) (*CA, error) {
	if _, err := os.Stat(path); err == nil {
		return Load(path)
	}
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	block, err := ssh.MarshalPrivateKey(key, "sluice ssh user ca")
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		return nil, err
	}
	return New(key)
}

// PublicKey is the authority's public key.
func (c *CA) PublicKey() ssh.PublicKey { return c.signer.PublicKey() }

// Signer signs with the authority's key.
func (c *CA) Signer() ssh.Signer { return c.signer }

// Issue signs a user certificate for pub naming p and carrying sealedToken
// (SealToken of the access token p was verified from), valid from a minute
// before now (clock skew) until notAfter, at most MaxLifetime from now.
func (c *CA) Issue(pub ssh.PublicKey, p *commonv1.Principal, sealedToken string, notAfter, now time.Time) (*ssh.Certificate, error) {
	if p.GetSubject() == "" {
		return nil, errors.New("sshca: the principal has no subject")
	}
	if _, isCert := pub.(*ssh.Certificate); isCert {
		return nil, errors.New("sshca: give a public key, not a certificate")
	}
	if limit := now.Add(MaxLifetime); notAfter.After(limit) {
		notAfter = limit
	}
	if !notAfter.After(now) {
		return nil, errors.New("sshca: the certificate would already be expired")
	}
	who, err := protojson.Marshal(p)
	if err != nil {
		return nil, err
	}
	var serial [8]byte
	if _, err := rand.Read(serial[:]); err != nil {
		return nil, err
	}
	cert := &ssh.Certificate{
		Key:             pub,
		Serial:          binary.BigEndian.Uint64(serial[:]),
		CertType:        ssh.UserCert,
		KeyId:           "sluice:" + p.GetSubject(),
		ValidPrincipals: []string{p.GetSubject()},
		ValidAfter:      uint64(now.Add(-time.Minute).Unix()),
		ValidBefore:     uint64(notAfter.Unix()),
		Permissions: ssh.Permissions{Extensions: map[string]string{
			ExtPrincipal: string(who),
			ExtToken:     sealedToken,
			// What the SSH worker allows is a policy decision, taken per
			// request; these only keep OpenSSH clients from refusing to
			// ask for a terminal.
			"permit-pty": "",
		}},
	}
	if err := cert.SignCert(rand.Reader, c.signer); err != nil {
		return nil, err
	}
	return cert, nil
}

// Checker verifies user certificates against a set of authorities.
type Checker struct {
	authorities []ssh.PublicKey
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
}

// NewChecker trusts certificates signed by any of authorities.
func NewChecker(authorities ...ssh.PublicKey) *Checker {
	return &Checker{authorities: authorities}
}

// Errors of Verify.
var (
	ErrNotCertificate = errors.New("sshca: a plain public key is not accepted; log in with a Sluice certificate (sluice ssh login)")
	ErrNoPrincipal    = errors.New("sshca: the certificate names no Sluice principal")
)

// Verify checks that key is a user certificate signed by a trusted
// authority, valid now, and returns the principal it names. The token in it
// (Token) still has to be verified by the identity service.
func (c *Checker) Verify(key ssh.PublicKey) (*commonv1.Principal, *ssh.Certificate, error) {
	cert, ok := key.(*ssh.Certificate)
	if !ok {
		return nil, nil, ErrNotCertificate
	}
	raw, ok := cert.Permissions.Extensions[ExtPrincipal]
	if !ok {
		return nil, nil, ErrNoPrincipal
	}
	var p commonv1.Principal
	if err := protojson.Unmarshal([]byte(raw), &p); err != nil || p.GetSubject() == "" {
		return nil, nil, ErrNoPrincipal
	}
	if cert.CertType != ssh.UserCert {
		return nil, nil, errors.New("sshca: not a user certificate")
	}
	// CertChecker.CheckCert verifies the signature, the validity window
	// and the principals, but not who signed: that is checked here.
	if !slices.ContainsFunc(c.authorities, func(a ssh.PublicKey) bool { return keysEqual(a, cert.SignatureKey) }) {
		return nil, nil, errors.New("sshca: the certificate is not signed by a Sluice authority this worker trusts")
	}
	checker := &ssh.CertChecker{Clock: c.Now}
	// The certificate must be issued for the principal it carries.
	if err := checker.CheckCert(p.GetSubject(), cert); err != nil {
		return nil, nil, fmt.Errorf("sshca: %w", err)
	}
	return &p, cert, nil
}

func keysEqual(a, b ssh.PublicKey) bool {
	return a.Type() == b.Type() && string(a.Marshal()) == string(b.Marshal())
}

// SealToken seals a token for a certificate's ExtToken (base64).
func SealToken(key *secrets.Key, token string) string {
	return base64.StdEncoding.EncodeToString(key.Seal([]byte(token)))
}

// Token opens the access token a certificate carries.
func Token(key *secrets.Key, cert *ssh.Certificate) (string, error) {
	raw, err := base64.StdEncoding.DecodeString(cert.Permissions.Extensions[ExtToken])
	if err != nil {
		return "", errors.New("sshca: the certificate's token is not sealed")
	}
	tok, err := key.Open(raw)
	if err != nil {
		return "", errors.New("sshca: the certificate's token cannot be opened (another deployment's certificate?)")
	}
	return string(tok), nil
}

// ValidBefore is when the certificate expires.
func ValidBefore(cert *ssh.Certificate) time.Time {
	return time.Unix(int64(cert.ValidBefore), 0)
}
