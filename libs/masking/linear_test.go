package masking

import (
	"bytes"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestLinearTime feeds repetitive adversarial values (many anchors whose
// validation scans far ahead) and checks the cost per byte stays flat:
// the time for 1 MiB must be within a small factor of 64 KiB's.
func TestLinearTime(t *testing.T) {
	if testing.Short() {
		t.Skip("timing test; skipped in -short")
	}
	m, err := New(Config{SSNBare: true})
	require.NoError(t, err)
	for _, unit := range []string{
		"ey-", "ey.", "eyJ", "sk-A1-", "sk-", "ghp_", "xoxb-1", "hooks.slack.com/services/", "@a", "a@",
		"+1", "+", "1-", "1 ", "(", "(415) ", "4111 ", "4", "GB82", "AKIA", "aws_secret_access_key=",
		"-----BEGIN PRIVATE KEY-----", "\\", "\\n", "\\u0041", "%2C", "a.", "e",
	} {
		t.Run(unit, func(t *testing.T) {
			small := bytes.Repeat([]byte(unit), 64<<10/len(unit))
			big := bytes.Repeat([]byte(unit), 1<<20/len(unit))
			dst := make([]byte, 0, 4<<20)
			cost := func(v []byte) time.Duration {
				best := time.Duration(1 << 62)
				for range 7 {
					start := time.Now()
					dst = m.AppendMasked(dst[:0], v, nil)
					best = min(best, time.Since(start))
				}
				return best
			}
			s, b := cost(small), cost(big)
			// 16x the input; allow 64x the time (noise, caches) but not 256x (quadratic).
			assert.Less(t, b, 64*s+20*time.Millisecond, "small %v big %v", s, b)
		})
	}
}
