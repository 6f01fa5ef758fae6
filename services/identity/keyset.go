package identity

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// keySet is a go-oidc KeySet over a remote JWKS that refetches on unknown
// key ids at most once per interval, and refreshes in the background every
// maxAge so that removed keys stop being trusted.
type keySet struct {
	url      string
	client   *http.Client
	interval time.Duration
	maxAge   time.Duration
	algs     []jose.SignatureAlgorithm

	mu        sync.Mutex
	keys      map[string]jose.JSONWebKey
	fetchedAt time.Time
	lastTry   time.Time
	fetching  chan struct{}
	fetches   int
}

var (
	errUnknownKey   = errors.New("unknown key id")
	errRateLimited  = errors.New("unknown key id; key refresh is rate-limited")
	errBadSignature = errors.New("signature does not verify")
	errJWKS         = errors.New("cannot fetch the issuer's keys")
)

// verdict carries the key set's finding back through go-oidc, which flattens
// errors into strings.
type verdict struct{ err error }

type verdictKey struct{}

func withVerdict(ctx context.Context, v *verdict) context.Context {
	return context.WithValue(ctx, verdictKey{}, v)
}

func (k *keySet) VerifySignature(ctx context.Context, raw string) ([]byte, error) {
	payload, err := k.verify(ctx, raw)
	if v, ok := ctx.Value(verdictKey{}).(*verdict); ok {
		v.err = err
	}
	return payload, err
}

func (k *keySet) verify(ctx context.Context, raw string) ([]byte, error) {
	jws, err := jose.ParseSignedCompact(raw, k.algs)
	if err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	if len(jws.Signatures) != 1 {
		return nil, errBadSignature
	}
	kid := jws.Signatures[0].Header.KeyID
	key, err := k.key(ctx, kid)
	if err != nil {
		return nil, err
	}
	payload, err := jws.Verify(key)
	if err != nil {
		return nil, errBadSignature
	}
	return payload, nil
}

func (k *keySet) key(ctx context.Context, kid string) (jose.JSONWebKey, error) {
	k.mu.Lock()
	key, ok := k.keys[kid]
	stale := k.keys == nil || time.Since(k.fetchedAt) > k.maxAge
	k.mu.Unlock()
	if ok && !stale {
		return key, nil
	}
	if !ok && !stale {
		// Unknown key id with fresh keys: maybe a rotation; refetch, but
		// not more than once per interval.
		k.mu.Lock()
		limited := time.Since(k.lastTry) < k.interval
		k.mu.Unlock()
		if limited {
			return jose.JSONWebKey{}, errRateLimited
		}
	}
	if err := k.refresh(ctx); err != nil {
		if ok {
			return key, nil // keep using a known key while the issuer is unreachable
		}
		return jose.JSONWebKey{}, err
	}
	k.mu.Lock()
	key, ok = k.keys[kid]
	k.mu.Unlock()
	if !ok {
		return jose.JSONWebKey{}, errUnknownKey
	}
	return key, nil
}

// refresh fetches the JWKS; concurrent callers share one fetch.
func (k *keySet) refresh(ctx context.Context) error {
	k.mu.Lock()
	if ch := k.fetching; ch != nil {
		k.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
		k.mu.Lock()
		defer k.mu.Unlock()
		if k.keys == nil {
			return errJWKS
		}
		return nil
	}
	if time.Since(k.lastTry) < k.interval && k.keys != nil {
		k.mu.Unlock()
		return nil
	}
	ch := make(chan struct{})
	k.fetching = ch
	k.lastTry = time.Now()
	k.fetches++
	k.mu.Unlock()

	keys, err := k.fetch(ctx)

	k.mu.Lock()
	defer k.mu.Unlock()
	k.fetching = nil
	close(ch)
	if err != nil {
		return fmt.Errorf("%w: %v", errJWKS, err)
	}
	k.keys = keys
	k.fetchedAt = time.Now()
	return nil
}

func (k *keySet) fetch(ctx context.Context) (map[string]jose.JSONWebKey, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := k.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("jwks: HTTP %d", resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(body, &set); err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	keys := make(map[string]jose.JSONWebKey, len(set.Keys))
	for _, key := range set.Keys {
		if !key.Valid() || !key.IsPublic() || key.Use == "enc" {
			continue
		}
		keys[key.KeyID] = key
	}
	return keys, nil
}

// Fetches reports how many JWKS fetches were made (for tests and metrics).
func (k *keySet) Fetches() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.fetches
}
