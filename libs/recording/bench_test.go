package recording_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/recording"
	"sluice.dev/sluice/libs/testkit"
)

// BenchmarkRecord is one session recording statements one at a time, each
// waiting for its acknowledgement: the cost of one write-ahead round trip
// (a SESSIONS batch of one event) through an in-process NATS server.
func BenchmarkRecord(b *testing.B) {
	_, conn := testkit.NATS(b)
	ctx := context.Background()
	require.NoError(b, bus.Provision(ctx, conn.JS, bus.Topology{}))
	sess := recording.New(conn.JS).Open(recording.NewSessionID())
	i := 0
	report := testkit.CPUPerOp(b)
	for b.Loop() {
		i++
		if err := sess.Record(ctx, command(i)); err != nil {
			b.Fatal(err)
		}
	}
	report(i)
}
