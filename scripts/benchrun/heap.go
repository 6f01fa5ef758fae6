package main

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// liveMemory is what a process holds live right after a collection, read
// from its heap profile (debug=1).
type liveMemory struct {
	// InuseKiB is the heap's spans in use plus goroutine stacks: the
	// process as a whole, fragmentation included.
	InuseKiB int64
	// StackKiB is the goroutine stacks in use.
	StackKiB int64
	// OwnKiB and NATSKiB split the live heap by who allocated it: the
	// profile's sampled objects, scaled to estimates, whose allocation
	// stack runs through the embedded NATS server's code (NATSKiB) or not
	// (OwnKiB). A worker runs apart from NATS in production, and the
	// server's caches move with the streams' traffic, not with sessions.
	OwnKiB, NATSKiB int64
}

// natsServer names the embedded server's frames in a profile.
const natsServer = "github.com/nats-io/nats-server/"

// parseHeapProfile reads the text form of a Go heap profile: a header
// "heap profile: ... @ heap/2×RATE", records "N: B [A: AB] @ addrs" each
// followed by "#\taddr\tfunc+off\tfile:line" frames, and the runtime's
// MemStats as "# Name = value" lines.
func parseHeapProfile(r io.Reader) (liveMemory, error) {
	var m liveMemory
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 1<<16), 1<<22)
	rate := 0.0
	var objs, bytes float64 // the current record's
	nats := false
	var own, inNATS float64
	flush := func() {
		_, b := scaleHeapSample(objs, bytes, rate)
		if nats {
			inNATS += b
		} else {
			own += b
		}
		objs, bytes, nats = 0, 0, false
	}
	found := 0
	for sc.Scan() {
		l := sc.Text()
		switch {
		case strings.HasPrefix(l, "heap profile:"):
			_, r, ok := strings.Cut(l, "@ heap/")
			if !ok {
				return m, fmt.Errorf("heap profile header without a sampling rate: %q", l)
			}
			v, err := strconv.ParseFloat(strings.TrimSpace(r), 64)
			if err != nil {
				return m, fmt.Errorf("heap profile rate: %w", err)
			}
			// The header gives twice the sampling rate, as early heap
			// profilers did (runtime/pprof keeps it for pprof's sake).
			rate = v / 2
		case strings.HasPrefix(l, "#\t"):
			if strings.Contains(l, "\t"+natsServer) {
				nats = true
			}
		case strings.HasPrefix(l, "# HeapInuse = "), strings.HasPrefix(l, "# Stack = "):
			k, v, _ := strings.Cut(l, " = ")
			v, _, _ = strings.Cut(v, "/")
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return m, fmt.Errorf("%s: %w", k, err)
			}
			m.InuseKiB += n / 1024
			if k == "# Stack" {
				m.StackKiB = n / 1024
			}
			found++
		case strings.Contains(l, " @ ") && len(l) > 0 && l[0] >= '0' && l[0] <= '9':
			flush()
			head, _, _ := strings.Cut(l, " @ ")
			inuse, _, _ := strings.Cut(head, " [")
			o, b, ok := strings.Cut(inuse, ": ")
			if !ok {
				return m, fmt.Errorf("heap profile record: %q", l)
			}
			var err1, err2 error
			objs, err1 = strconv.ParseFloat(strings.TrimSpace(o), 64)
			bytes, err2 = strconv.ParseFloat(strings.TrimSpace(b), 64)
			if err1 != nil || err2 != nil {
				return m, fmt.Errorf("heap profile record: %q", l)
			}
		}
	}
	flush()
	if err := sc.Err(); err != nil {
		return m, err
	}
	if rate == 0 {
		return m, fmt.Errorf("not a heap profile")
	}
	if found != 2 {
		return m, fmt.Errorf("no HeapInuse and Stack in the heap profile")
	}
	m.OwnKiB, m.NATSKiB = int64(own/1024), int64(inNATS/1024)
	return m, nil
}

// scaleHeapSample turns a record's sampled counts into estimates, as
// runtime/pprof does: an allocation of size s is sampled with probability
// 1-exp(-s/rate).
func scaleHeapSample(count, size, rate float64) (float64, float64) {
	if count == 0 || size == 0 {
		return 0, 0
	}
	if rate <= 1 {
		return count, size
	}
	scale := 1 / (1 - math.Exp(-(size/count)/rate))
	return count * scale, size * scale
}
