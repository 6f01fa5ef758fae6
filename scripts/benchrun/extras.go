package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/rs/zerolog"

	"sluice.dev/sluice/libs/auditlog"
	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/recording"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
	"sluice.dev/sluice/services/recorder"
)

func connect(dsn string) (*pgconn.PgConn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return pgconn.Connect(ctx, dsn)
}

// timeQueries runs each query once over c and returns the latencies.
func timeQueries(c *pgconn.PgConn, queries []string) ([]float64, error) {
	out := make([]float64, 0, len(queries))
	ctx := context.Background()
	for _, q := range queries {
		start := time.Now()
		if _, err := c.Exec(ctx, q).ReadAll(); err != nil {
			return nil, fmt.Errorf("%s: %w", q, err)
		}
		out = append(out, float64(time.Since(start).Microseconds()))
	}
	return out, nil
}

func percentile(v []float64, p float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s) == 0 {
		return 0
	}
	return s[min(len(s)-1, int(p*float64(len(s))))]
}

// latencyBlocks is how many turns each kind of statement takes.
const latencyBlocks = 10

// latency measures per-statement latency for one client: cached decisions
// (the same statement again and again) and cold ones (a new shape each
// time; then a new shape and a new classification each time), against
// direct PostgreSQL, PgBouncer and the bare Go relay.
func (e *env) latency(res *results) error {
	step("latency: warm and cold statements")
	warm := make([]string, 3000)
	for i := range warm {
		warm[i] = fmt.Sprintf("SELECT abalance FROM pgbench_accounts WHERE aid = %d", 1+i%1000)
	}
	n := 300
	if *quick {
		n = 100
	}
	cold := make([]string, n)
	for i := range cold {
		cold[i] = fmt.Sprintf("SELECT abalance AS c%d_%d FROM pgbench_accounts WHERE aid = %d", time.Now().UnixNano()%100000, i, 1+i)
	}
	// A column alias is no part of a classification, so the statements
	// above are new shapes of one classification. Qualifying the columns
	// with a new table alias makes each classification new as well (its
	// columns); the rules' own cost is services/policy's
	// BenchmarkColdEvaluate/classification=new.
	newClass := make([]string, n)
	for i := range newClass {
		alias := fmt.Sprintf("t%d_%d", time.Now().UnixNano()%100000, i)
		newClass[i] = fmt.Sprintf("SELECT %s.abalance FROM pgbench_accounts %s WHERE %s.aid = %d", alias, alias, alias, 1+i)
	}
	for _, t := range []string{"direct", "pgbouncer", "relay", "sluice"} {
		c, err := connect(e.dsn(t))
		if err != nil {
			return err
		}
		if _, err := timeQueries(c, warm[:200]); err != nil { // warm up
			return err
		}
		// The three kinds take turns in blocks, so that the host's speed,
		// which moves from one second to the next here, weighs on each
		// alike.
		var w, cl, nc []float64
		for b := range latencyBlocks {
			for _, k := range []struct {
				qs  []string
				out *[]float64
			}{{warm, &w}, {cold, &cl}, {newClass, &nc}} {
				n := len(k.qs) / latencyBlocks
				got, err := timeQueries(c, k.qs[b*n:(b+1)*n])
				if err != nil {
					return err
				}
				*k.out = append(*k.out, got...)
			}
		}
		c.Close(context.Background())
		res.Latency = append(res.Latency, latencyRow{Target: t, WarmP50: median(w), WarmP99: percentile(w, 0.99), ColdP50: median(cl), ColdP99: percentile(cl, 0.99),
			NewClassP50: median(nc), NewClassP99: percentile(nc, 0.99)})
	}
	return nil
}

// masking times a 100,000-row result with sensitive columns, masked (an
// engineer) and not (a dba), through Sluice, interleaved.
func (e *env) masking(res *results) error {
	step("masking: 100,000 rows")
	q := "SELECT id, name, email, ssn, card_number, phone FROM customers"
	var masked, clear, direct []float64
	roundsN := 5
	if *quick {
		roundsN = 2
	}
	for r := 0; r < roundsN; r++ {
		for _, who := range []string{"dba", "engineer", "direct"} {
			dsn := e.sluiceDSN(e.dba)
			switch who {
			case "engineer":
				dsn = e.sluiceDSN(e.engineer)
			case "direct":
				dsn = e.directDSN()
			}
			c, err := connect(dsn)
			if err != nil {
				return err
			}
			start := time.Now()
			rr, err := c.Exec(context.Background(), q).ReadAll()
			d := float64(time.Since(start).Milliseconds())
			c.Close(context.Background())
			if err != nil {
				return err
			}
			if who == "engineer" && strings.Contains(string(rr[0].Rows[100][2]), "@") {
				return fmt.Errorf("masking benchmark: emails were not masked")
			}
			switch who {
			case "engineer":
				masked = append(masked, d)
			case "dba":
				clear = append(clear, d)
			default:
				direct = append(direct, d)
			}
		}
	}
	res.Masking = maskingRow{Rows: 100064, DirectMS: median(direct), UnmaskedMS: median(clear), MaskedMS: median(masked)}
	return nil
}

// twoWorkers runs a second PostgreSQL worker replica against the same NATS
// (as the pgworker identity sluice dev made a key for) and splits
// pgbench's clients between the two.
func (e *env) twoWorkers(res *results) error {
	step("two worker replicas")
	port := freePort()
	tls := filepath.Join(e.dir, "tls")
	cmd := exec.Command(*sluiceBin, "serve", "pgworker", "--nats", fmt.Sprintf("nats://127.0.0.1:%d", e.natsPort),
		"--nats-nkey-file", filepath.Join(e.dir, "nats-keys", "pgworker.nk"),
		"--pg-addr", fmt.Sprintf("127.0.0.1:%d", port), "--master-key-file", filepath.Join(e.dir, "master.key"),
		"--tls-cert", filepath.Join(tls, "cert.pem"), "--tls-key", filepath.Join(tls, "key.pem"), "--log-level", "warn")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	second := fmt.Sprintf("host=127.0.0.1 port=%d dbname=demo user=bench sslmode=require password=%s", port, e.engineer)
	for i := 0; ; i++ {
		if c, err := connect(second); err == nil {
			c.Close(context.Background())
			break
		}
		if i > 100 {
			return fmt.Errorf("the second worker did not start")
		}
		time.Sleep(100 * time.Millisecond)
	}
	secs := strconv.Itoa(int(duration.Seconds()))
	var one, two []float64
	for r := 0; r < *rounds; r++ {
		tps, _, err := pgbench(e.sluiceDSN(e.engineer), "-n", "-S", "-M", "prepared", "-c", "8", "-j", "2", "-T", secs)
		if err != nil {
			return err
		}
		one = append(one, tps)
		var wg sync.WaitGroup
		var mu sync.Mutex
		sum := 0.0
		var firstErr error
		for _, dsn := range []string{e.sluiceDSN(e.engineer), second} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				tps, _, err := pgbench(dsn, "-n", "-S", "-M", "prepared", "-c", "4", "-j", "1", "-T", secs)
				mu.Lock()
				defer mu.Unlock()
				sum += tps
				if err != nil && firstErr == nil {
					firstErr = err
				}
			}()
		}
		wg.Wait()
		if firstErr != nil {
			return firstErr
		}
		two = append(two, sum)
	}
	res.Replicas = replicaRow{OneTPS: median(one), TwoTPS: median(two)}
	return nil
}

// live reads what the sluice dev process holds live right after a
// collection (its pprof endpoint runs one first). Resident memory would
// not do: the heap keeps the pages earlier benchmarks grew it to, and
// gives them back at its own pace.
func (e *env) live() (liveMemory, error) {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/heap?gc=1&debug=1", e.pprofPort))
	if err != nil {
		return liveMemory{}, err
	}
	defer resp.Body.Close()
	return parseHeapProfile(resp.Body)
}

// saveHeap writes sluice's heap profile to the -heap-profiles file of
// that suffix, if asked.
func (e *env) saveHeap(suffix string) error {
	if *heapOut == "" {
		return nil
	}
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/heap?gc=1", e.pprofPort))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	f, err := os.Create(*heapOut + "." + suffix)
	if err != nil {
		return err
	}
	if _, err := f.ReadFrom(resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// idleMemory opens 1,000 idle sessions through Sluice and reads the
// process's live memory before and after; a first 500 are open
// before the first reading, so that what is measured is what a session
// more takes, not the first sessions' share of the process.
func (e *env) idleMemory(res *results) error {
	n := 1000
	if *quick {
		n = 200
	}
	step(fmt.Sprintf("memory: %d idle sessions", n))
	conns := make([]*pgconn.PgConn, 0, n+n/2)
	defer func() {
		for _, c := range conns {
			c.Close(context.Background())
		}
	}()
	open := func(k int) error {
		for i := 0; i < k; i++ {
			c, err := connect(e.sluiceDSN(e.engineer))
			if err != nil {
				return fmt.Errorf("session %d: %w", len(conns), err)
			}
			conns = append(conns, c)
		}
		return nil
	}
	if err := open(n / 2); err != nil {
		return err
	}
	time.Sleep(3 * time.Second)
	before, err := e.live()
	if err != nil {
		return err
	}
	if err := e.saveHeap("before"); err != nil {
		return err
	}
	if err := open(n); err != nil {
		return err
	}
	time.Sleep(3 * time.Second)
	after, err := e.live()
	if err != nil {
		return err
	}
	if err := e.saveHeap("after"); err != nil {
		return err
	}
	res.Memory = memoryRow{Sessions: n, Before: before, After: after,
		PerSessionKiB:    float64(after.InuseKiB-before.InuseKiB) / float64(n),
		OwnPerSessionKiB: float64(after.OwnKiB+after.StackKiB-before.OwnKiB-before.StackKiB) / float64(n)}
	return nil
}

// recorderThroughput records events through an embedded NATS with one and
// then two recorder replicas, and reports events per second.
func recorderThroughput(res *results) error {
	for _, replicas := range []int{1, 2} {
		step(fmt.Sprintf("recorder throughput, %d replica(s)", replicas))
		rate, cores, err := recordRate(replicas)
		if err != nil {
			return err
		}
		res.Recorder = append(res.Recorder, recorderRow{Replicas: replicas, EventsPerSec: rate, Cores: cores})
	}
	return nil
}

// recordRate returns the events per second the replicas chained, and the
// cores the whole process (the emitting worker, NATS and the replicas,
// which share the machine) used meanwhile.
func recordRate(replicas int) (rate, cores float64, err error) {
	dir, err := os.MkdirTemp("", "sluice-rec-bench-")
	if err != nil {
		return 0, 0, err
	}
	defer os.RemoveAll(dir)
	srv, err := bus.StartEmbedded(bus.EmbeddedConfig{StoreDir: dir})
	if err != nil {
		return 0, 0, err
	}
	defer srv.Shutdown()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	conn, err := bus.Connect(ctx, bus.Config{URL: srv.ClientURL()})
	if err != nil {
		return 0, 0, err
	}
	defer conn.NC.Close()
	if err := bus.Provision(ctx, conn.JS, bus.Topology{}); err != nil {
		return 0, 0, err
	}
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	for i := 0; i < replicas; i++ {
		rc, err := bus.Connect(ctx, bus.Config{URL: srv.ClientURL()})
		if err != nil {
			return 0, 0, err
		}
		defer rc.NC.Close()
		go func() { _ = recorder.New(recorder.Config{Conn: rc, SigningKey: key, Log: zerolog.Nop()}).Run(ctx) }()
	}
	// The replicas are up once a first event has gone through.
	rec := recording.New(conn.JS)
	warm := rec.Open(recording.NewSessionID())
	if err := warm.Record(ctx, &sessionv1.Event{Body: &sessionv1.Event_Command{Command: &sessionv1.Command{Text: "warm-up"}}}); err != nil {
		return 0, 0, err
	}
	if err := drained(ctx, conn, time.Now()); err != nil {
		return 0, 0, err
	}
	sessions, perSession := 200, 1000
	if *quick {
		perSession = 200
	}
	start := time.Now()
	cpuStart := processCPU()
	var wg sync.WaitGroup
	errs := make(chan error, sessions)
	sem := make(chan struct{}, 16)
	for s := 0; s < sessions; s++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			sess := rec.Open(recording.NewSessionID())
			for i := 0; i < perSession; i++ {
				if _, err := sess.Emit(&sessionv1.Event{Body: &sessionv1.Event_Command{Command: &sessionv1.Command{CommandId: uint64(i), Text: "SELECT abalance FROM pgbench_accounts WHERE aid = 42"}}}); err != nil {
					errs <- err
					return
				}
			}
			if err := sess.Durable(ctx); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		return 0, 0, err
	}
	if err := drained(ctx, conn, start); err != nil {
		return 0, 0, err
	}
	elapsed := time.Since(start)
	cores = (processCPU() - cpuStart).Seconds() / elapsed.Seconds()
	// Every event is in AUDIT, in its chain.
	events := 0
	err = auditlog.Read(ctx, conn.JS, auditlog.Options{}, func(e auditlog.Entry) error {
		if e.Event != nil {
			events++
		}
		return nil
	})
	if err != nil {
		return 0, 0, err
	}
	if want := sessions*perSession + 1; events != want {
		return 0, 0, fmt.Errorf("recorder throughput: %d events in AUDIT, want %d", events, want)
	}
	return float64(sessions*perSession) / elapsed.Seconds(), cores, nil
}

// processCPU is this process's user and system CPU time so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// drained waits until the recorder has moved everything out of SESSIONS.
func drained(ctx context.Context, conn *bus.Conn, start time.Time) error {
	stream, err := conn.JS.Stream(ctx, bus.StreamSessions)
	if err != nil {
		return err
	}
	for {
		info, err := stream.Info(ctx)
		if err != nil {
			return err
		}
		if info.State.Msgs == 0 {
			return nil
		}
		if time.Since(start) > 5*time.Minute {
			return fmt.Errorf("recorder did not drain")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
