package masking

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// detCase is one detector table row: the input and the exact matched texts.
type detCase struct {
	name string
	in   string
	want []string
}

// matches returns the texts of all matches in v, in order.
func matches(m *Masker, v string) []string {
	var out []string
	b := []byte(v)
	for i := 0; ; {
		sp, ok := m.next(b, i)
		if !ok {
			return out
		}
		out = append(out, v[sp.start:sp.end])
		i = sp.end
	}
}

func only(t *testing.T, cfg Config, names ...string) *Masker {
	t.Helper()
	cfg.Detectors = names
	m, err := New(cfg)
	require.NoError(t, err)
	return m
}

func runDetCases(t *testing.T, m *Masker, cases []detCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, matches(m, tc.in), "input %q", tc.in)
			require.Equal(t, len(tc.want) > 0, m.Contains([]byte(tc.in)))
		})
	}
}

func testKey(b byte) []byte { return []byte(strings.Repeat(string(rune('a'+b%26)), 32)) }

// jwtOf builds a compact JWS with the given header and payload JSON.
func jwtOf(header, payload, sig string) string {
	enc := base64.RawURLEncoding
	return enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString([]byte(payload)) + "." + sig
}
