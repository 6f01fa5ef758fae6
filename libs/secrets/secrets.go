// Package secrets seals and resolves target credentials. A sealed credential
// is AES-256-GCM ciphertext under the master key (SLUICE_MASTER_KEY, base64,
// or a key file); only processes holding the master key (the protocol
// workers) can open it. References (env, file) are resolved on the worker.
// A resolved secret is returned to the caller and never logged or stored.
package secrets

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
)

const (
	version = 1
	// EnvMasterKey holds the base64 master key.
	EnvMasterKey = "SLUICE_MASTER_KEY"
	aad          = "sluice credential v1"
)

var (
	// ErrNoKey means no master key is configured.
	ErrNoKey = errors.New("secrets: no master key (set SLUICE_MASTER_KEY or a key file)")
	// ErrOpen means a sealed secret could not be opened (wrong key or altered).
	ErrOpen = errors.New("secrets: cannot open sealed secret (wrong master key or altered ciphertext)")
)

// Key is a 32-byte master key.
type Key struct {
	aead cipher.AEAD
	id   byte
	raw  []byte
}

// Derive returns a 32-byte subkey for a purpose (for example the masking
// token key), so that one master key serves several uses without reuse.
func (k *Key) Derive(purpose string) []byte {
	mac := hmac.New(sha256.New, k.raw)
	mac.Write([]byte("sluice derive v1: " + purpose))
	return mac.Sum(nil)
}

// Subkey is a sealing key of its own for a purpose, derived from k: what it
// seals only the holders of the master key can open, and it never opens
// what k itself seals (target credentials).
func (k *Key) Subkey(purpose string) *Key {
	sub, err := ParseKey(base64.StdEncoding.EncodeToString(k.Derive("subkey: " + purpose)))
	if err != nil {
		panic(err) // a 32-byte key always parses
	}
	return sub
}

// ParseKey decodes a base64 32-byte key.
func ParseKey(b64 string) (*Key, error) {
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(b64))
	if err != nil {
		return nil, fmt.Errorf("secrets: master key is not base64: %w", err)
	}
	if len(raw) != 32 {
		return nil, fmt.Errorf("secrets: master key must be 32 bytes, got %d", len(raw))
	}
	block, err := aes.NewCipher(raw)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(raw)
	return &Key{aead: aead, id: sum[0], raw: raw}, nil
}

// LoadKey reads the key from SLUICE_MASTER_KEY, else from path (if not empty).
func LoadKey(path string) (*Key, error) {
	if v := os.Getenv(EnvMasterKey); v != "" {
		return ParseKey(v)
	}
	if path == "" {
		return nil, ErrNoKey
	}
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, ErrNoKey
		}
		return nil, fmt.Errorf("secrets: %w", err)
	}
	return ParseKey(string(b))
}

// LoadOrCreateKeyFile reads the key file, creating it (mode 0600) with a
// random key if it does not exist. For `sluice dev`.
func LoadOrCreateKeyFile(path string) (*Key, error) {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		raw := make([]byte, 32)
		if _, err := rand.Read(raw); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, err
		}
		if err := os.WriteFile(path, []byte(base64.StdEncoding.EncodeToString(raw)+"\n"), 0o600); err != nil {
			return nil, fmt.Errorf("secrets: %w", err)
		}
	}
	return LoadKey(path)
}

// Seal encrypts a secret.
func (k *Key) Seal(plain []byte) []byte {
	nonce := make([]byte, k.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		panic(err)
	}
	out := append([]byte{version, k.id}, nonce...)
	return k.aead.Seal(out, nonce, plain, []byte(aad))
}

// Open decrypts a sealed secret.
func (k *Key) Open(sealed []byte) ([]byte, error) {
	n := k.aead.NonceSize()
	if len(sealed) < 2+n+k.aead.Overhead() || sealed[0] != version {
		return nil, ErrOpen
	}
	if sealed[1] != k.id {
		return nil, fmt.Errorf("%w: sealed under a different key", ErrOpen)
	}
	plain, err := k.aead.Open(nil, sealed[2:2+n], sealed[2+n:], []byte(aad))
	if err != nil {
		return nil, ErrOpen
	}
	return plain, nil
}

// Resolve returns the secret a credential refers to. key may be nil when
// the credential is not sealed.
func Resolve(c *controlv1.Credential, key *Key) ([]byte, error) {
	switch src := c.GetSource().(type) {
	case nil:
		return nil, nil
	case *controlv1.Credential_Env:
		v, ok := os.LookupEnv(src.Env)
		if !ok {
			return nil, fmt.Errorf("secrets: environment variable %s is not set", src.Env)
		}
		return []byte(v), nil
	case *controlv1.Credential_File:
		b, err := os.ReadFile(src.File)
		if err != nil {
			return nil, fmt.Errorf("secrets: credential file: %w", err)
		}
		return []byte(strings.TrimRight(string(b), "\r\n")), nil
	case *controlv1.Credential_Sealed:
		if key == nil {
			return nil, ErrNoKey
		}
		return key.Open(src.Sealed)
	}
	return nil, errors.New("secrets: unknown credential source")
}

// Describe says how a credential is held, without revealing it.
func Describe(c *controlv1.Credential) string {
	switch src := c.GetSource().(type) {
	case *controlv1.Credential_Env:
		return "env:" + src.Env
	case *controlv1.Credential_File:
		return "file:" + src.File
	case *controlv1.Credential_Sealed:
		return "sealed"
	}
	return "none"
}
