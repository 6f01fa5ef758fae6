package freeport

import (
	"net"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Ports are free, outside the ephemeral range, and never handed twice.
func TestGet(t *testing.T) {
	seen := map[int]bool{}
	for range 50 {
		p, err := Get()
		require.NoError(t, err)
		assert.False(t, seen[p])
		seen[p] = true
		if s := ephemeralStart(); s > low {
			assert.Less(t, p, s)
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		require.NoError(t, err)
		l.Close()
	}
}
