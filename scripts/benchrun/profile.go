package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// cpuProfile runs pgbench (-profile-args) through PgBouncer, the bare Go
// relay, then through Sluice while taking a CPU profile of the sluice process, and prints both
// rates and CPU costs: the quick loop for work on the hot path.
func (e *env) cpuProfile(path string) error {
	secs := int(duration.Seconds())
	if secs < 5 {
		secs = 5
	}
	args := append([]string{"-n"}, strings.Fields(*profArgs)...)
	args = append(args, "-T", strconv.Itoa(secs))
	bouncer, err := e.measureCost("pgbouncer", args...)
	if err != nil {
		return err
	}
	relay, err := e.measureCost("relay", args...)
	if err != nil {
		return err
	}
	type answer struct {
		data []byte
		err  error
	}
	done := make(chan answer, 1)
	go func() {
		time.Sleep(500 * time.Millisecond) // past connection setup
		url := fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=%d", e.pprofPort, secs-1)
		resp, err := http.Get(url)
		if err != nil {
			done <- answer{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		done <- answer{b, err}
	}()
	sluice, err := e.measureCost("sluice", args...)
	if err != nil {
		return err
	}
	a := <-done
	if a.err != nil {
		return fmt.Errorf("profile: %w", a.err)
	}
	if err := os.WriteFile(path, a.data, 0o644); err != nil {
		return err
	}
	fmt.Printf("pgbench %s, %d s: PgBouncer %.0f tps, bare Go relay %.0f tps (%.2f×), Sluice %.0f tps (%.2f×)\n", *profArgs, secs,
		bouncer.tps, relay.tps, relay.tps/bouncer.tps, sluice.tps, sluice.tps/bouncer.tps)
	fmt.Printf("proxy CPU per transaction: PgBouncer %.0f µs, bare Go relay %.0f µs, Sluice %.0f µs (%.2f×)\n", bouncer.cpu, relay.cpu, sluice.cpu, sluice.cpu/bouncer.cpu)
	fmt.Printf("  of which in the kernel: PgBouncer %.0f µs, bare Go relay %.0f µs, Sluice %.0f µs\n", bouncer.sys, relay.sys, sluice.sys)
	fmt.Printf("  read and write system calls: PgBouncer %.1f, bare Go relay %.1f, Sluice %.1f\n", bouncer.syscalls, relay.syscalls, sluice.syscalls)
	fmt.Printf("CPU profile of sluice: %s (go tool pprof -top %s)\n", path, path)
	return nil
}
