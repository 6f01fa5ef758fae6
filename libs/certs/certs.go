// Package certs issues the TLS certificates of a deployment: a private
// certificate authority and certificates it signs for the NATS servers and
// the workers, kept in a directory and reused. Bring your own from a real
// CA in production if you have one; these are for a deployment that has
// none yet (sluice admin init).
package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// CA is a certificate authority whose key is in a directory.
type CA struct {
	Cert *x509.Certificate
	key  *ecdsa.PrivateKey
	// CertFile is the authority's certificate (PEM), what clients trust.
	CertFile string
}

// LoadOrCreateCA loads dir/ca.pem and dir/ca-key.pem, creating them (a
// ten-year ECDSA P-256 authority named name) when missing.
func LoadOrCreateCA(dir, name string) (*CA, error) {
	certFile, keyFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")
	_, certErr := os.Stat(certFile)
	_, keyErr := os.Stat(keyFile)
	if (certErr == nil) != (keyErr == nil) {
		// Never a new authority beside an old one's certificate (its key
		// moved offline, say): every certificate it signed would break.
		return nil, fmt.Errorf("certs: %s and %s must both exist (to sign with that CA) or neither (to make one)", certFile, keyFile)
	}
	if pair, err := tls.LoadX509KeyPair(certFile, keyFile); err == nil {
		cert, err := x509.ParseCertificate(pair.Certificate[0])
		if err != nil {
			return nil, fmt.Errorf("certs: %s: %w", certFile, err)
		}
		key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("certs: %s: not an ECDSA key", keyFile)
		}
		return &CA{Cert: cert, key: key, CertFile: certFile}, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("certs: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"Sluice"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	if err := WritePair(dir, certFile, keyFile, key, der); err != nil {
		return nil, err
	}
	cert, _ := x509.ParseCertificate(der)
	return &CA{Cert: cert, key: key, CertFile: certFile}, nil
}

// Issue writes dir/name.pem and dir/name-key.pem, a two-year certificate
// for hosts (DNS names or IP addresses) good for servers and, for mutual
// TLS between NATS servers, clients. An existing pair that this authority
// signed for the same hosts, valid for another 30 days, is kept.
func (ca *CA) Issue(dir, name string, hosts []string) (certFile, keyFile string, err error) {
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	var dns []string
	var ips []net.IP
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			ips = append(ips, ip)
		} else if h != "" {
			dns = append(dns, h)
		}
	}
	if len(dns)+len(ips) == 0 {
		return "", "", fmt.Errorf("certs: %s: no host names", name)
	}
	if pair, err := tls.LoadX509KeyPair(certFile, keyFile); err == nil {
		if c, err := x509.ParseCertificate(pair.Certificate[0]); err == nil && c.CheckSignatureFrom(ca.Cert) == nil &&
			time.Until(c.NotAfter) > 30*24*time.Hour && sameHosts(c, dns, ips) {
			return certFile, keyFile, nil
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	cn := name
	if len(dns) > 0 {
		cn = dns[0]
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"Sluice"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(2, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:     dns,
		IPAddresses:  ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		return "", "", err
	}
	return certFile, keyFile, WritePair(dir, certFile, keyFile, key, der)
}

func sameHosts(c *x509.Certificate, dns []string, ips []net.IP) bool {
	if !slices.Equal(c.DNSNames, dns) || len(c.IPAddresses) != len(ips) {
		return false
	}
	for i := range ips {
		if !c.IPAddresses[i].Equal(ips[i]) {
			return false
		}
	}
	return true
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	return n
}

// WritePair stores a key (0600) then its certificate (DER), in dir
// (created 0700), each file renamed into place whole: a reader never sees
// half a file.
func WritePair(dir, certFile, keyFile string, key *ecdsa.PrivateKey, der []byte) error {
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := writeFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	if err := writeFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	return nil
}

func writeFile(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
