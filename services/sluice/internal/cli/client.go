package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// apiError is an error answer of the HTTP API.
type apiError struct {
	Status int    `json:"-"`
	Code   string `json:"error"`
	Reason string `json:"reason"`
	// Body is the whole answer, when it is a JSON object: -o json shows
	// its other fields (an apply's located errors, for one).
	Body map[string]any `json:"-"`
	// retryAfter is the answer's Retry-After, in seconds (0: none).
	retryAfter time.Duration
}

// parseRetryAfter reads a Retry-After of delay-seconds, bounded to a
// minute; an HTTP date or anything else counts as none.
func parseRetryAfter(v string) time.Duration {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n < 0 {
		return 0
	}
	return time.Duration(min(n, 60)) * time.Second
}

func (e *apiError) Error() string {
	if e.Reason != "" {
		return fmt.Sprintf("%s (%s, HTTP %d)", e.Reason, e.Code, e.Status)
	}
	return fmt.Sprintf("HTTP %d", e.Status)
}

// message is the error without its code and status.
func (e *apiError) message() string {
	if e.Reason != "" {
		return e.Reason
	}
	return e.Error()
}

type client struct {
	base  string
	token string
	http  *http.Client
	// progress, when set, hears each retry of a read the API could not
	// answer for now (503: a store between leaders, a service restarting).
	progress io.Writer
	// retryFor bounds how long a read is retried on 503 (0: not at all).
	retryFor time.Duration
}

// unavailableRetryWindow is how long a read waits out an API that answers
// 503: longer than a JetStream leader election on a loaded cluster, short
// enough that a service that is truly down is reported soon.
const unavailableRetryWindow = 30 * time.Second

// newClient returns an API client with the caller's token.
func (g *globals) newClient(ctx context.Context) (*client, error) {
	tok, err := resolveToken(ctx, g.api)
	if err != nil {
		return nil, err
	}
	c := &client{base: strings.TrimRight(g.api, "/"), token: tok, http: &http.Client{Timeout: 60 * time.Second}, retryFor: unavailableRetryWindow}
	if !g.json() { // under -o json, standard error holds one JSON object or nothing
		c.progress = g.stderr
	}
	return c, nil
}

// do sends one request. A GET the API answers 503 is sent again, after the
// answer's Retry-After, until c.retryFor has passed (see read).
func (c *client) do(ctx context.Context, method, path string, body []byte, out any) error {
	return c.send(ctx, method, path, body, out, method == http.MethodGet || method == http.MethodHead)
}

// read is do for a POST that changes nothing (a verification, a policy
// test), which may be sent again as a GET would.
func (c *client) read(ctx context.Context, method, path string, body []byte, out any) error {
	return c.send(ctx, method, path, body, out, true)
}

func (c *client) send(ctx context.Context, method, path string, body []byte, out any, idempotent bool) error {
	deadline := time.Now().Add(c.retryFor)
	for attempt := 1; ; attempt++ {
		err := c.once(ctx, method, path, body, out)
		var ae *apiError
		if !idempotent || !errors.As(err, &ae) || ae.Status != http.StatusServiceUnavailable {
			return err
		}
		wait := ae.retryAfter
		if wait <= 0 {
			wait = 2 * time.Second
		}
		if time.Now().Add(wait).After(deadline) {
			return err
		}
		if c.progress != nil {
			fmt.Fprintf(c.progress, "sluice: %s; trying again in %s (attempt %d)\n", ae.message(), wait, attempt+1)
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
	}
}

func (c *client) once(ctx context.Context, method, path string, body []byte, out any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return &cliError{code: "unreachable", err: fmt.Errorf("cannot reach the Sluice API at %s: %w", c.base, err)}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		e := &apiError{Status: resp.StatusCode, retryAfter: parseRetryAfter(resp.Header.Get("Retry-After"))}
		if json.Unmarshal(data, e) == nil {
			_ = json.Unmarshal(data, &e.Body)
		}
		// Some endpoints return a structured body with details even on
		// failure; hand it to the caller as well.
		if out != nil {
			_ = json.Unmarshal(data, out)
		}
		return e
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("unexpected answer from the API: %w", err)
	}
	return nil
}

// cachedToken is what `sluice login` stores.
type cachedToken struct {
	AccessToken string    `json:"access_token"`
	ExpiresAt   time.Time `json:"expires_at"`
	Issuer      string    `json:"issuer"`
	API         string    `json:"api"`
}

func tokenCachePath() (string, error) {
	dir := os.Getenv("XDG_CONFIG_HOME")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", err
		}
		dir = filepath.Join(home, ".config")
	}
	return filepath.Join(dir, "sluice", "token.json"), nil
}

func loadCachedToken() (*cachedToken, error) {
	p, err := tokenCachePath()
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	var t cachedToken
	if err := json.Unmarshal(b, &t); err != nil {
		return nil, err
	}
	return &t, nil
}

func saveCachedToken(t *cachedToken) (string, error) {
	p, err := tokenCachePath()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return "", err
	}
	b, _ := json.MarshalIndent(t, "", "  ")
	return p, os.WriteFile(p, b, 0o600)
}

var errNoToken = errors.New("no token: set SLUICE_TOKEN, run 'sluice login', or set SLUICE_CLIENT_ID and SLUICE_CLIENT_SECRET")

// resolveToken finds the caller's token: $SLUICE_TOKEN, then client
// credentials from $SLUICE_CLIENT_ID/$SLUICE_CLIENT_SECRET, then the cache.
func resolveToken(ctx context.Context, api string) (string, error) {
	if t := strings.TrimSpace(os.Getenv("SLUICE_TOKEN")); t != "" {
		return t, nil
	}
	if os.Getenv("SLUICE_CLIENT_ID") != "" {
		tok, _, err := clientCredentials(ctx, api)
		return tok, err
	}
	t, err := loadCachedToken()
	if err != nil {
		return "", errNoToken
	}
	if time.Now().After(t.ExpiresAt.Add(-10 * time.Second)) {
		return "", errors.New("the cached token has expired: run 'sluice login' again")
	}
	return t.AccessToken, nil
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
