package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

func numCPU() int { return runtime.NumCPU() }

// run of the matrix: one pgbench invocation.
type cell struct {
	Mode    string    `json:"mode"`
	Clients int       `json:"clients"`
	Connect bool      `json:"connect_per_tx"`
	Target  string    `json:"target"`
	TPS     []float64 `json:"tps"`
	Latency []float64 `json:"latency_ms"`
	// CPU is the proxy process's CPU time per transaction (µs); none for direct.
	CPU []float64 `json:"proxy_cpu_us_per_tx,omitempty"`
}

// pid is the process serving a target (0 for direct).
func (e *env) pid(target string) int {
	switch target {
	case "pgbouncer":
		return e.bouncer.Process.Pid
	case "sluice":
		return e.sluice.Process.Pid
	case "relay":
		return e.relay.Process.Pid
	}
	return 0
}

// measure runs pgbench against a target and also returns the proxy's CPU
// time per transaction in µs (0 for direct).
func (e *env) measure(target string, args ...string) (tps, lat, cpu float64, err error) {
	c, err := e.measureCost(target, args...)
	return c.tps, c.lat, c.cpu, err
}

// cost is what one pgbench run through a target measured: its rate, and
// what the proxy process spent per transaction (CPU µs, the part of it in
// the kernel, and read and write system calls).
type cost struct {
	tps, lat, cpu, sys, syscalls float64
}

func (e *env) measureCost(target string, args ...string) (cost, error) {
	var c cost
	pid := e.pid(target)
	var before procUsage
	if pid != 0 {
		before, _ = procUse(pid)
	}
	start := time.Now()
	var err error
	c.tps, c.lat, err = pgbench(e.dsn(target), args...)
	if err != nil || pid == 0 {
		return c, err
	}
	after, err := procUse(pid)
	if err != nil {
		return c, err
	}
	if tx := c.tps * time.Since(start).Seconds(); tx > 0 {
		c.cpu = float64((after.user + after.sys - before.user - before.sys).Microseconds()) / tx
		c.sys = float64((after.sys - before.sys).Microseconds()) / tx
		c.syscalls = float64(after.syscalls-before.syscalls) / tx
	}
	return c, nil
}

// procUsage is a process's user and system CPU time, and its read and
// write system calls.
type procUsage struct {
	user, sys time.Duration
	syscalls  int64
}

func procUse(pid int) (procUsage, error) {
	var u procUsage
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return u, err
	}
	// Fields after the command name (which may hold spaces): state is
	// field 3, utime 14, stime 15.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 13 {
		return u, fmt.Errorf("/proc/%d/stat: short", pid)
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	u.user, u.sys = time.Duration(ut)*time.Second/clockTicks, time.Duration(st)*time.Second/clockTicks
	// syscr and syscw count read and write system calls (of any kind of
	// file); unreadable for another user's process, then left at 0.
	if io, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid)); err == nil {
		for _, line := range strings.Split(string(io), "\n") {
			if k, v, ok := strings.Cut(line, ": "); ok && (k == "syscr" || k == "syscw") {
				n, _ := strconv.ParseInt(v, 10, 64)
				u.syscalls += n
			}
		}
	}
	return u, nil
}

// clockTicks is USER_HZ, 100 on Linux.
const clockTicks = 100

var targets = []string{"direct", "pgbouncer", "sluice"}

func (e *env) dsn(target string) string {
	switch target {
	case "direct":
		return e.directDSN()
	case "pgbouncer":
		return e.bouncerDSN()
	case "relay":
		return e.relayDSN()
	}
	return e.sluiceDSN(e.engineer)
}

// cellSet gathers the runs of each configuration, keeping the order in
// which configurations first ran.
type cellSet struct {
	cells map[cellKey]*cell
	order []cellKey
}

type cellKey struct {
	mode    string
	clients int
	connect bool
	target  string
}

// add records one run.
func (s *cellSet) add(k cellKey, tps, lat, cpu float64) {
	if s.cells == nil {
		s.cells = map[cellKey]*cell{}
	}
	c, ok := s.cells[k]
	if !ok {
		c = &cell{Mode: k.mode, Clients: k.clients, Connect: k.connect, Target: k.target}
		s.cells[k] = c
		s.order = append(s.order, k)
	}
	c.TPS, c.Latency = append(c.TPS, tps), append(c.Latency, lat)
	if cpu > 0 {
		c.CPU = append(c.CPU, cpu)
	}
}

// list returns the cells in first-run order.
func (s *cellSet) list() []cell {
	out := make([]cell, 0, len(s.order))
	for _, k := range s.order {
		out = append(out, *s.cells[k])
	}
	return out
}

// matrix runs pgbench -S over modes and client counts, rotating the order
// of the targets every round so that none always runs first or last.
func (e *env) matrix(res *results) error {
	var set cellSet
	secs := strconv.Itoa(int(duration.Seconds()))
	for r := 0; r < *rounds; r++ {
		for _, mode := range []string{"simple", "extended", "prepared"} {
			for _, clients := range []int{1, 8, 32} {
				for i := range targets {
					t := targets[(i+r)%len(targets)]
					step(fmt.Sprintf("round %d: pgbench -S -M %s -c %d -> %s", r+1, mode, clients, t))
					tps, lat, cpu, err := e.measure(t, "-n", "-S", "-M", mode, "-c", strconv.Itoa(clients), "-j", strconv.Itoa(min(clients, 2)), "-T", secs)
					if err != nil {
						return err
					}
					set.add(cellKey{mode, clients, false, t}, tps, lat, cpu)
				}
			}
		}
		for i := range targets {
			t := targets[(i+r)%len(targets)]
			step(fmt.Sprintf("round %d: pgbench -S -C -c 8 -> %s", r+1, t))
			tps, lat, cpu, err := e.measure(t, "-n", "-S", "-C", "-c", "8", "-j", "2", "-T", secs)
			if err != nil {
				return err
			}
			set.add(cellKey{"simple", 8, true, t}, tps, lat, cpu)
		}
	}
	res.Matrix = set.list()
	return nil
}
