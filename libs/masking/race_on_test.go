//go:build race

package masking

// raceEnabled: the race detector makes sync.Pool drop items on purpose, so
// pooled paths allocate.
const raceEnabled = true
