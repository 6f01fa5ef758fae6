package testkit

import (
	"syscall"
	"testing"
	"time"
)

// CPUPerOp measures the process's CPU time (user and system, every
// goroutine: clients, servers, services) from now until the returned
// function is called, and reports it per op as "cpu-µs/op".
func CPUPerOp(b *testing.B) (report func(ops int)) {
	var before syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &before)
	return func(ops int) {
		var after syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &after)
		cpu := time.Duration(after.Utime.Nano() + after.Stime.Nano() - before.Utime.Nano() - before.Stime.Nano())
		b.ReportMetric(float64(cpu.Nanoseconds())/1e3/float64(ops), "cpu-µs/op")
	}
}
