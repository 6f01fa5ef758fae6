// Package devcert makes the self-signed TLS certificate a worker presents
// when no certificate is configured (development): ECDSA P-256, valid for
// localhost and 127.0.0.1, kept in a directory and reused.
package devcert

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"path/filepath"
	"sync"
	"time"

	"sluice.dev/sluice/libs/certs"
)

// LoadOrCreate returns the certificate in dir (cert.pem, key.pem), creating
// it if missing or expiring within a day.
func LoadOrCreate(dir string) (tls.Certificate, error) {
	// Workers in one process (sluice dev, serve all) start together: one
	// makes the pair, the others load it.
	mu.Lock()
	defer mu.Unlock()
	certPath, keyPath := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if c, err := tls.LoadX509KeyPair(certPath, keyPath); err == nil {
		if leaf, err := x509.ParseCertificate(c.Certificate[0]); err == nil && time.Until(leaf.NotAfter) > 24*time.Hour {
			return c, nil
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "sluice development", Organization: []string{"Sluice"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(1, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	if err := certs.WritePair(dir, certPath, keyPath, key, der); err != nil {
		return tls.Certificate{}, fmt.Errorf("devcert: %w", err)
	}
	return tls.LoadX509KeyPair(certPath, keyPath)
}

var mu sync.Mutex
