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
}

// newClient returns an API client with the caller's token.
func (g *globals) newClient(ctx context.Context) (*client, error) {
	tok, err := resolveToken(ctx, g.api)
	if err != nil {
		return nil, err
	}
	return &client{base: strings.TrimRight(g.api, "/"), token: tok, http: &http.Client{Timeout: 60 * time.Second}}, nil
}

func (c *client) do(ctx context.Context, method, path string, body []byte, out any) error {
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
		e := &apiError{Status: resp.StatusCode}
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
