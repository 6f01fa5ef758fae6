package bus

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestToken(t *testing.T) {
	tests := []struct{ in, want string }{
		{"demo", "demo"},
		{"", "_"},
		{"Demo", "_44emo"},
		{"a.b", "a_2eb"},
		{"a*b>c d", "a_2ab_3ec_20d"},
		{"under_score", "under_5fscore"},
		{"01JABCXYZ", "01_4a_41_42_43_58_59_5a"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got := Token(tc.in)
			assert.Equal(t, tc.want, got)
			back, ok := DecodeToken(got)
			require.True(t, ok)
			assert.Equal(t, tc.in, back)
		})
	}
}

func TestDecodeTokenRejects(t *testing.T) {
	for _, bad := range []string{"A", "a_", "a_1", "a_zz", "a.b"} {
		_, ok := DecodeToken(bad)
		assert.False(t, ok, bad)
	}
}

func FuzzToken(f *testing.F) {
	for _, s := range []string{"", "demo", "a.b.c", "*", ">", "é", "_", "__5f"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tok := Token(s)
		if strings.ContainsAny(tok, ".*> \t\r\n") || tok == "" {
			t.Fatalf("unsafe token %q for %q", tok, s)
		}
		back, ok := DecodeToken(tok)
		if !ok || back != s {
			t.Fatalf("round trip %q -> %q -> %q", s, tok, back)
		}
	})
}
