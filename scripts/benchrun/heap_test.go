package main

import (
	"bytes"
	"runtime"
	"runtime/pprof"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseHeapProfile(t *testing.T) {
	const profile = `heap profile: 3: 3145728 [9: 9437184] @ heap/1048576
1: 1048576 [1: 1048576] @ 0x1 0x2
#	0x1	github.com/nats-io/nats-server/v2/server.(*msgBlock).loadBlock+0x1	/x/filestore.go:1
#	0x2	runtime.main+0x2	/x/proc.go:1

2: 2097152 [8: 8388608] @ 0x3
#	0x3	sluice.dev/sluice/services/pgworker.newSession+0x3	/x/session.go:1

0: 0 [4: 4096] @ 0x4
#	0x4	sluice.dev/sluice/services/pgworker.gone+0x4	/x/session.go:2


# runtime.MemStats
# Alloc = 3145728
# HeapInuse = 4194304
# Stack = 65536 / 65536
`
	m, err := parseHeapProfile(strings.NewReader(profile))
	require.NoError(t, err)
	assert.Equal(t, int64(4096+64), m.InuseKiB)
	assert.Equal(t, int64(64), m.StackKiB)
	// 1 MiB objects at a 512 KiB rate are sampled with probability
	// 1-e^-2: the estimate is the sample divided by it.
	assert.Equal(t, int64(1184), m.NATSKiB, "1024/0.8647")
	assert.Equal(t, int64(2368), m.OwnKiB, "2048/0.8647")

	_, err = parseHeapProfile(strings.NewReader("goroutine profile: total 3\n"))
	assert.Error(t, err)
}

// The parser reads what this runtime writes, and finds what it holds.
func TestParseOwnHeapProfile(t *testing.T) {
	old := runtime.MemProfileRate
	runtime.MemProfileRate = 1
	defer func() { runtime.MemProfileRate = old }()
	keep := make([][]byte, 0, 256)
	for range 256 {
		keep = append(keep, make([]byte, 4096))
	}
	runtime.GC()
	var buf bytes.Buffer
	require.NoError(t, pprof.Lookup("heap").WriteTo(&buf, 1))
	m, err := parseHeapProfile(&buf)
	require.NoError(t, err)
	assert.GreaterOrEqual(t, m.OwnKiB, int64(1024), "the 1 MiB this test holds")
	assert.Less(t, m.NATSKiB, int64(64), "no NATS server runs here: only its package's initialization")
	assert.Positive(t, m.InuseKiB)
	runtime.KeepAlive(keep)
}
