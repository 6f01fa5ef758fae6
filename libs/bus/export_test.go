package bus

import "github.com/nats-io/nats.go/jetstream"

// StallAt makes f's watch number watch (from 0) stop delivering at the
// first entry for which stall reports true, as a stuck watch would.
func (f Follow) StallAt(stall func(watch int, e jetstream.KeyValueEntry) bool) Follow {
	f.stall = stall
	return f
}
