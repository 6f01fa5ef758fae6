// Package freeport picks loopback TCP ports for servers the tests and the
// local tools start. A port the kernel hands out for ":0" comes from its
// ephemeral range, where every outgoing connection also takes its source
// port: under load, another process's connection can hold it by the time
// a server binds it. The ports here come from below that range, at
// random, checked free when picked.
package freeport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
)

// low and high bound the ports picked when the ephemeral range starts
// above them.
const low, high = 20000, 32767

var (
	mu     sync.Mutex
	handed = map[int]bool{} // never the same port twice in a process
)

// Get returns a free loopback port.
func Get() (int, error) {
	mu.Lock()
	defer mu.Unlock()
	top := high
	if start := ephemeralStart(); start > low && start-1 < top {
		top = start - 1
	}
	for range 200 {
		p := low + rand.IntN(top-low+1)
		if handed[p] {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue
		}
		l.Close()
		handed[p] = true
		return p, nil
	}
	// A crowded range: let the kernel choose.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("freeport: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// ephemeralStart is the first port of the kernel's ephemeral range (0 if
// unknown).
func ephemeralStart() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	n, _ := strconv.Atoi(f[0])
	return n
}
