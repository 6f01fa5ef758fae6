package main

import (
	"fmt"
	"runtime"
	"strconv"
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
}

var targets = []string{"direct", "pgbouncer", "sluice"}

func (e *env) dsn(target string) string {
	switch target {
	case "direct":
		return e.directDSN()
	case "pgbouncer":
		return e.bouncerDSN()
	}
	return e.sluiceDSN(e.engineer)
}

// matrix runs pgbench -S over modes and client counts, rotating the order
// of the targets every round so that none always runs first or last.
func (e *env) matrix(res *results) error {
	type key struct {
		mode    string
		clients int
		connect bool
		target  string
	}
	cells := map[key]*cell{}
	var order []key
	get := func(k key) *cell {
		if c, ok := cells[k]; ok {
			return c
		}
		c := &cell{Mode: k.mode, Clients: k.clients, Connect: k.connect, Target: k.target}
		cells[k] = c
		order = append(order, k)
		return c
	}
	secs := strconv.Itoa(int(duration.Seconds()))
	for r := 0; r < *rounds; r++ {
		for _, mode := range []string{"simple", "extended", "prepared"} {
			for _, clients := range []int{1, 8, 32} {
				for i := range targets {
					t := targets[(i+r)%len(targets)]
					step(fmt.Sprintf("round %d: pgbench -S -M %s -c %d -> %s", r+1, mode, clients, t))
					tps, lat, err := pgbench(e.dsn(t), "-n", "-S", "-M", mode, "-c", strconv.Itoa(clients), "-j", strconv.Itoa(min(clients, 2)), "-T", secs)
					if err != nil {
						return err
					}
					c := get(key{mode, clients, false, t})
					c.TPS, c.Latency = append(c.TPS, tps), append(c.Latency, lat)
				}
			}
		}
		for i := range targets {
			t := targets[(i+r)%len(targets)]
			step(fmt.Sprintf("round %d: pgbench -S -C -c 8 -> %s", r+1, t))
			tps, lat, err := pgbench(e.dsn(t), "-n", "-S", "-C", "-c", "8", "-j", "2", "-T", secs)
			if err != nil {
				return err
			}
			c := get(key{"simple", 8, true, t})
			c.TPS, c.Latency = append(c.TPS, tps), append(c.Latency, lat)
		}
	}
	for _, k := range order {
		res.Matrix = append(res.Matrix, *cells[k])
	}
	return nil
}
