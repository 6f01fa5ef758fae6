package recording_test

import (
	"context"
	"syscall"
	"testing"
	"time"

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
	var before syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &before)
	for b.Loop() {
		i++
		if err := sess.Record(ctx, command(i)); err != nil {
			b.Fatal(err)
		}
	}
	var after syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &after)
	cpu := time.Duration(after.Utime.Nano() + after.Stime.Nano() - before.Utime.Nano() - before.Stime.Nano())
	b.ReportMetric(float64(cpu.Microseconds())/float64(i), "cpu-µs/op")
}
