package main

import (
	"fmt"
	"io"
	"runtime"
	"strings"
)

type latencyRow struct {
	Target           string  `json:"target"`
	WarmP50, WarmP99 float64 // µs
	ColdP50, ColdP99 float64 // µs
	// NewClassP50 and NewClassP99 time new shapes whose classification is
	// new too (alias-qualified columns: a parse and classification of their
	// own; the demo policy's rules read no column, so its verdict comes from
	// the policy service's memo).
	NewClassP50, NewClassP99 float64 // µs
}

type maskingRow struct {
	Rows                           int
	DirectMS, UnmaskedMS, MaskedMS float64
}

type replicaRow struct{ OneTPS, TwoTPS float64 }

type memoryRow struct {
	Sessions      int
	Before, After liveMemory
	// PerSessionKiB is the process's heap spans and stacks in use;
	// OwnPerSessionKiB leaves out what the embedded NATS server holds.
	PerSessionKiB, OwnPerSessionKiB float64
}

type recorderRow struct {
	Replicas     int
	EventsPerSec float64
	// Cores is the CPU the whole process used meanwhile (of runtime.NumCPU()).
	Cores float64
}

type results struct {
	Machine string
	Elapsed string
	Matrix  []cell
	// Floor is pgbench -S -c 8 through PgBouncer, the bare Go relay and
	// Sluice.
	Floor    []cell
	Latency  []latencyRow
	Masking  maskingRow
	Replicas replicaRow
	Memory   memoryRow
	Recorder []recorderRow
	SSH      sshRow
}

// cell finds a cell of the matrix (an empty one if it was not measured).
func (r *results) cell(mode string, clients int, connect bool, target string) cell {
	return findCell(r.Matrix, mode, clients, connect, target)
}

func findCell(cells []cell, mode string, clients int, connect bool, target string) cell {
	for _, c := range cells {
		if c.Mode == mode && c.Clients == clients && c.Connect == connect && c.Target == target {
			return c
		}
	}
	return cell{}
}

// eachRow calls fn for every row of the matrix tables, in order.
func eachRow(fn func(label, mode string, clients int, connect bool)) {
	for _, m := range []string{"simple", "extended", "prepared"} {
		for _, c := range []int{1, 8, 32} {
			fn(m, m, c, false)
		}
	}
	fn("simple -C", "simple", 8, true)
}

func (r *results) print(w io.Writer) {
	fmt.Fprintf(w, "\n## Results (%s; %s)\n\n", r.Machine, r.Elapsed)
	fmt.Fprintf(w, "pgbench -S, median tps of %d rounds (latency ms); ratios are Sluice/PgBouncer and Sluice/direct.\n\n", *rounds)
	fmt.Fprintln(w, "| mode | clients | direct | PgBouncer | Sluice | Sluice/PgBouncer | Sluice/direct |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|")
	eachRow(func(label, mode string, clients int, connect bool) {
		d, b, s := r.cell(mode, clients, connect, "direct"), r.cell(mode, clients, connect, "pgbouncer"), r.cell(mode, clients, connect, "sluice")
		fmt.Fprintf(w, "| %s | %d | %.0f (%.3f) | %.0f (%.3f) | %.0f (%.3f) | %.2f | %.2f |\n", label, clients,
			median(d.TPS), median(d.Latency), median(b.TPS), median(b.Latency), median(s.TPS), median(s.Latency),
			median(s.TPS)/median(b.TPS), median(s.TPS)/median(d.TPS))
	})

	fmt.Fprintln(w, "\nProxy CPU time per transaction (µs, median; user + system time of the PgBouncer and sluice processes):")
	fmt.Fprintln(w, "\n| mode | clients | PgBouncer | Sluice | Sluice/PgBouncer |")
	fmt.Fprintln(w, "|---|---|---|---|---|")
	eachRow(func(label, mode string, clients int, connect bool) {
		b, s := median(r.cell(mode, clients, connect, "pgbouncer").CPU), median(r.cell(mode, clients, connect, "sluice").CPU)
		fmt.Fprintf(w, "| %s | %d | %.0f | %.0f | %.2f |\n", label, clients, b, s, s/b)
	})

	fmt.Fprintln(w, "\nThe floor: a bare Go TLS relay (copies bytes, reads no message) beside PgBouncer and Sluice, pgbench -S -c 8, median tps (proxy CPU µs per transaction):")
	fmt.Fprintln(w, "\n| mode | PgBouncer | Go relay | Sluice | relay/PgBouncer | Sluice/relay |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|")
	for _, mode := range []string{"simple", "prepared"} {
		b, g, s := findCell(r.Floor, mode, 8, false, "pgbouncer"), findCell(r.Floor, mode, 8, false, "relay"), findCell(r.Floor, mode, 8, false, "sluice")
		fmt.Fprintf(w, "| %s | %.0f (%.0f) | %.0f (%.0f) | %.0f (%.0f) | %.2f | %.2f |\n", mode, median(b.TPS), median(b.CPU), median(g.TPS), median(g.CPU),
			median(s.TPS), median(s.CPU), median(g.TPS)/median(b.TPS), median(s.TPS)/median(g.TPS))
	}

	fmt.Fprintln(w, "\nOne client, per-statement latency (µs, simple protocol over TLS except direct):")
	fmt.Fprintln(w, "\n| target | cached p50 | cached p99 | new shape p50 | new shape p99 | new classification p50 | new classification p99 |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|")
	var direct, bouncer, relay, sluice latencyRow
	for _, l := range r.Latency {
		fmt.Fprintf(w, "| %s | %.0f | %.0f | %.0f | %.0f | %.0f | %.0f |\n", l.Target, l.WarmP50, l.WarmP99, l.ColdP50, l.ColdP99, l.NewClassP50, l.NewClassP99)
		switch l.Target {
		case "direct":
			direct = l
		case "pgbouncer":
			bouncer = l
		case "relay":
			relay = l
		default:
			sluice = l
		}
	}
	fmt.Fprintf(w, "\nAdded latency over direct: PgBouncer %.0f µs; the bare Go relay %.0f µs; Sluice %.0f µs with a cached decision (%+.0f µs vs PgBouncer's), %.0f µs for a new statement shape (parse + policy round trip + record), %.0f µs when its classification is new too (new columns; the demo policy's rules read none).\n",
		bouncer.WarmP50-direct.WarmP50, relay.WarmP50-direct.WarmP50, sluice.WarmP50-direct.WarmP50, (sluice.WarmP50-direct.WarmP50)-(bouncer.WarmP50-direct.WarmP50), sluice.ColdP50-direct.ColdP50, sluice.NewClassP50-direct.NewClassP50)
	fmt.Fprintf(w, "\nA new shape over a cached one, Sluice: %+.0f µs (new classification: %+.0f µs); the target is at most +250 µs.\n",
		sluice.ColdP50-sluice.WarmP50, sluice.NewClassP50-sluice.WarmP50)

	m := r.Masking
	fmt.Fprintf(w, "\nMasking: %d rows, 6 columns (4 masked by lineage, all scanned by detectors): direct %.0f ms, Sluice unmasked (dba) %.0f ms, Sluice masked %.0f ms: masking costs %+.0f%% over unmasked.\n",
		m.Rows, m.DirectMS, m.UnmaskedMS, m.MaskedMS, 100*(m.MaskedMS/m.UnmaskedMS-1))
	fmt.Fprintf(w, "\nTwo worker replicas (pgbench -S -M prepared, 8 clients): one replica %.0f tps, two replicas (4+4 clients) %.0f tps (ratio %.2f).\n",
		r.Replicas.OneTPS, r.Replicas.TwoTPS, r.Replicas.TwoTPS/r.Replicas.OneTPS)
	r.Memory.print(w)

	var parts []string
	for _, rr := range r.Recorder {
		parts = append(parts, fmt.Sprintf("%d replica(s) %.0f events/s (%.1f of %d cores busy)", rr.Replicas, rr.EventsPerSec, rr.Cores, runtime.NumCPU()))
	}
	fmt.Fprintf(w, "\nRecorder throughput (200 sessions emitting 1,000 events each, 16 at a time, until every event is chained in AUDIT and checked there): %s.\n", strings.Join(parts, ", "))
	r.SSH.print(w)
}

func (mem memoryRow) print(w io.Writer) {
	fmt.Fprintf(w, "\nMemory: %d idle sessions, opened after %d others, raised the sluice dev process's live memory (heap spans and stacks in use after a collection) from %d to %d KiB: %.0f KiB per session. Leaving out the embedded NATS server's share (sampled live objects allocated by its code: %d KiB before, %d after), the live heap and stacks went from %d to %d KiB (stacks %d to %d): %.0f KiB per session (TLS, buffers, two goroutines; upstream connections are PostgreSQL's).\n",
		mem.Sessions, mem.Sessions/2, mem.Before.InuseKiB, mem.After.InuseKiB, mem.PerSessionKiB,
		mem.Before.NATSKiB, mem.After.NATSKiB, mem.Before.OwnKiB+mem.Before.StackKiB, mem.After.OwnKiB+mem.After.StackKiB, mem.Before.StackKiB, mem.After.StackKiB, mem.OwnPerSessionKiB)
}
