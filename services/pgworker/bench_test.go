package pgworker_test

import (
	"context"
	"syscall"
	"testing"
	"time"

	"sluice.dev/sluice/services/pgworker"
)

// BenchmarkStatement is eight sessions running a read with a parameter
// (extended protocol, as pgbench -M extended) through a worker with a
// cached decision and write-ahead recording (no recorder consumes, so the
// recorder's share is not in it). allocs/op counts the whole process: the
// clients, the worker and the NATS server.
//
// go test -run - -bench Statement -benchmem ./services/pgworker
func BenchmarkStatement(b *testing.B) {
	h := newHarness(b)
	addr := h.worker(pgworker.Config{})
	token := h.token(time.Hour)
	ctx := context.Background()
	var before, after syscall.Rusage
	b.ReportAllocs()
	b.SetParallelism(4) // 8 sessions on 2 cores
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &before)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		conn, err := h.connect(addr, token)
		if err != nil {
			b.Error(err)
			return
		}
		defer conn.Close(ctx)
		for pb.Next() {
			res := conn.ExecParams(ctx, "SELECT $1::int + 1", [][]byte{[]byte("41")}, nil, nil, nil).Read()
			if res.Err != nil {
				b.Error(res.Err)
				return
			}
		}
	})
	b.StopTimer()
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &after)
	cpu := time.Duration(after.Utime.Nano() + after.Stime.Nano() - before.Utime.Nano() - before.Stime.Nano())
	b.ReportMetric(float64(cpu.Nanoseconds())/1e3/float64(b.N), "cpu-µs/op")
}
