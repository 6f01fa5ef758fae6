package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// errorObject decodes standard error as the one JSON object -o json
// writes there.
func errorObject(t *testing.T, stderr string) map[string]any {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(stderr))
	var v struct {
		Error map[string]any `json:"error"`
	}
	require.NoError(t, dec.Decode(&v), "stderr: %q", stderr)
	require.False(t, dec.More(), "one object only: %q", stderr)
	require.NotNil(t, v.Error, stderr)
	return v.Error
}

// Under -o json every error is one JSON object on standard error, with the
// same exit status as in text mode, which is unchanged.
func TestErrorsUnderJSONOutput(t *testing.T) {
	s := startStack(t)
	admin := s.idp.Token("root", "admins")
	engineer := s.idp.Token("alice", "engineers")
	file := writeFile(t, "sluice.yaml", bootstrap)
	missing := filepath.Join(t.TempDir(), "missing.yaml")

	for name, tc := range map[string]struct {
		token  string
		args   []string
		code   string
		status float64
		text   string
		check  func(t *testing.T, obj map[string]any)
	}{
		"unknown flag":      {token: admin, args: []string{"apply", "--bogus"}, code: "usage", text: "error: unknown flag: --bogus"},
		"missing file flag": {token: admin, args: []string{"apply"}, code: "usage", text: "error: give the file with -f"},
		"extra argument":    {token: admin, args: []string{"policy", "test", "--sub", "a", "--target", "t"}, code: "usage", text: "error: accepts 1 arg(s), received 0"},
		"forbidden": {token: engineer, args: []string{"apply", "-f", file}, code: "forbidden", status: 403, text: "(forbidden, HTTP 403)",
			check: func(t *testing.T, obj map[string]any) {
				assert.Contains(t, obj["message"], "admins", "the 403 names the groups that may")
				assert.NotContains(t, obj["message"], "HTTP 403")
			}},
		"not found":  {token: admin, args: []string{"policy", "test", "--sub", "alice", "--groups", "engineers", "--target", "nope", "SELECT 1"}, code: "not_found", status: 404, text: `there is no target "nope" (not_found, HTTP 404)`},
		"local file": {token: admin, args: []string{"apply", "-f", missing}, code: "error", text: "error: open " + missing},
		"no token":   {token: "", args: []string{"targets", "list"}, code: "no_token", text: "error: no token"},
	} {
		t.Run(name, func(t *testing.T) {
			text := s.cli(tc.token, tc.args...)
			assert.NotZero(t, text.code)
			assert.True(t, strings.HasPrefix(text.stderr, "error: "), text.stderr)
			assert.Contains(t, text.stderr, strings.TrimPrefix(tc.text, "error: "))
			if strings.HasPrefix(tc.text, "error: ") {
				assert.True(t, strings.HasPrefix(text.stderr, tc.text), text.stderr)
			}

			// -o json before and after the arguments.
			for _, args := range [][]string{append([]string{"-o", "json"}, tc.args...), append(append([]string{}, tc.args...), "--output=json")} {
				r := s.cli(tc.token, args...)
				assert.Equal(t, text.code, r.code, "the exit status does not depend on the output format")
				assert.Empty(t, r.stdout)
				obj := errorObject(t, r.stderr)
				assert.Equal(t, tc.code, obj["code"])
				assert.NotEmpty(t, obj["message"])
				if tc.status > 0 {
					assert.Equal(t, tc.status, obj["status"])
				} else {
					assert.NotContains(t, obj, "status")
				}
				if tc.check != nil {
					tc.check(t, obj)
				}
			}
		})
	}
}

// A local error has a code of its own: no API answers at that address.
func TestUnreachableAPIUnderJSON(t *testing.T) {
	t.Setenv("SLUICE_TOKEN", "x")
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"--api", "http://127.0.0.1:1", "-o", "json", "targets", "list"}, &out, &errOut)
	assert.Equal(t, 1, code)
	obj := errorObject(t, errOut.String())
	assert.Equal(t, "unreachable", obj["code"])
	assert.Contains(t, obj["message"], "cannot reach the Sluice API")
}
