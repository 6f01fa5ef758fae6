package pgworker_test

import (
	"context"
	"testing"
	"time"

	"sluice.dev/sluice/libs/testkit"
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
	b.ReportAllocs()
	b.SetParallelism(4) // 8 sessions on 2 cores
	report := testkit.CPUPerOp(b)
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
	report(b.N)
}
