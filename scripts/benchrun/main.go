// Command benchrun is `make bench`: it measures Sluice side by side with
// direct PostgreSQL and PgBouncer (session mode) in one run on one machine
// and prints the results as ratios.
//
// It starts `sluice dev` (every control on: token auth, policy, write-ahead
// recording, masking rules loaded), PgBouncer in front of the same demo
// database, and runs pgbench -S in simple, extended and prepared modes at
// 1, 8 and 32 clients (and with -C), interleaving the three targets round
// by round. Then it measures decision latency (cold and cached), masking
// overhead on a 100,000-row result, memory per idle session, recorder
// throughput (one and two replicas) and two worker replicas.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"sluice.dev/sluice/libs/freeport"

	"sluice.dev/sluice/libs/secrets"
)

var (
	sluiceBin = flag.String("sluice", "bin/sluice", "the sluice binary")
	rounds    = flag.Int("rounds", 3, "rounds of the pgbench matrix")
	duration  = flag.Duration("duration", 5*time.Second, "length of one pgbench run")
	scale     = flag.Int("scale", 10, "pgbench scale")
	outJSON   = flag.String("json", "", "also write the raw results to this file")
	quick     = flag.Bool("quick", false, "one round, 3s runs, fewer extras (a smoke test)")
	profile   = flag.String("profile", "", "instead of the benchmarks: write a CPU profile of sluice under pgbench (-profile-args) to this file")
	profArgs  = flag.String("profile-args", "-S -M prepared -c 8 -j 2", "pgbench arguments for -profile")
	recOnly   = flag.Bool("recorder-only", false, "only measure recorder throughput (no PostgreSQL needed)")
	relaySpec = flag.String("relay", "", "internal: serve the bare Go TLS relay (LISTEN,UPSTREAM,TLSDIR) instead of benchmarking")
	sshMiB    = flag.Int("ssh-mib", 256, "MiB of output for the SSH bulk benchmark")
	sshOnly   = flag.Bool("ssh-only", false, "only the SSH bulk benchmark")
	memOnly   = flag.Bool("memory-only", false, "only the idle-session memory benchmark")
	heapOut   = flag.String("heap-profiles", "", "with the memory benchmark: write sluice's heap profiles before and after the idle sessions to PREFIX.before and PREFIX.after (go tool pprof -base)")
)

func main() {
	flag.Parse()
	if *relaySpec != "" {
		err := serveRelay(*relaySpec)
		fmt.Fprintln(os.Stderr, "relay:", err)
		os.Exit(1)
	}
	if *quick {
		*rounds, *duration = 1, 3*time.Second
	}
	if abs, err := filepath.Abs(*sluiceBin); err == nil {
		*sluiceBin = abs
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func freePort() int {
	p, err := freeport.Get()
	if err != nil {
		panic(err)
	}
	return p
}

type env struct {
	dir                         string
	apiPort, pgPort, natsPort   int
	demoPort, bouncerPort       int
	sshPort, demoSSHPort        int
	relayPort, pprofPort        int
	sluice                      *exec.Cmd
	bouncer, relay              *exec.Cmd
	engineer, dba, demoPassword string
}

func (e *env) directDSN() string {
	return fmt.Sprintf("host=127.0.0.1 port=%d dbname=demo user=sluice_gateway password=%s sslmode=disable", e.demoPort, e.demoPassword)
}
func (e *env) bouncerDSN() string {
	return fmt.Sprintf("host=127.0.0.1 port=%d dbname=demo user=sluice_gateway password=x sslmode=require", e.bouncerPort)
}
func (e *env) sluiceDSN(token string) string {
	return fmt.Sprintf("host=127.0.0.1 port=%d dbname=demo user=bench sslmode=require password=%s", e.pgPort, token)
}

func run() error {
	start := time.Now()
	base, err := os.MkdirTemp("", "sluice-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(base)
	if *recOnly {
		res := &results{}
		if err := recorderThroughput(res); err != nil {
			return err
		}
		for _, r := range res.Recorder {
			fmt.Printf("recorder throughput, %d replica(s): %.0f events/s, %.1f of %d cores busy (the emitting worker, NATS and the replicas share them)\n",
				r.Replicas, r.EventsPerSec, r.Cores, runtime.NumCPU())
		}
		return nil
	}
	e := &env{dir: filepath.Join(base, ".sluice"), apiPort: freePort(), pgPort: freePort(), natsPort: freePort(), demoPort: freePort(), bouncerPort: freePort(), relayPort: freePort(),
		sshPort: freePort(), demoSSHPort: freePort()}
	// The profiling endpoint (loopback only) also reads the live memory.
	e.pprofPort = freePort()
	defer e.stop()
	if err := e.startSluice(); err != nil {
		return err
	}
	step("sluice dev is up")
	if *sshOnly {
		res := &results{Machine: machine()}
		if err := e.sshBulk(res, *sshMiB); err != nil {
			return err
		}
		res.SSH.print(os.Stdout)
		return nil
	}
	if err := e.fixtures(); err != nil {
		return err
	}
	if *memOnly {
		res := &results{Machine: machine()}
		if err := e.idleMemory(res); err != nil {
			return err
		}
		res.Memory.print(os.Stdout)
		return nil
	}
	if err := e.startBouncer(base); err != nil {
		return err
	}
	if err := e.startRelay(); err != nil {
		return err
	}
	step("PgBouncer and the Go relay are up")
	if *profile != "" {
		return e.cpuProfile(*profile)
	}

	res := &results{Machine: machine()}
	if err := e.matrix(res); err != nil {
		return err
	}
	if err := e.floor(res); err != nil {
		return err
	}
	if err := e.latency(res); err != nil {
		return err
	}
	if err := e.masking(res); err != nil {
		return err
	}
	if err := e.twoWorkers(res); err != nil {
		return err
	}
	if err := e.idleMemory(res); err != nil {
		return err
	}
	if err := recorderThroughput(res); err != nil {
		return err
	}
	if err := e.sshBulk(res, *sshMiB); err != nil {
		return err
	}
	res.Elapsed = time.Since(start).Round(time.Second).String()
	res.print(os.Stdout)
	if *outJSON != "" {
		b, _ := json.MarshalIndent(res, "", "  ")
		return os.WriteFile(*outJSON, b, 0o644)
	}
	return nil
}

func step(s string) { fmt.Fprintf(os.Stderr, "%s  %s\n", time.Now().Format("15:04:05"), s) }

func (e *env) startSluice() error {
	cmd := exec.Command(*sluiceBin, "dev", "--dir", e.dir,
		"--api-addr", fmt.Sprintf("127.0.0.1:%d", e.apiPort), "--pg-addr", fmt.Sprintf("127.0.0.1:%d", e.pgPort),
		"--nats-port", strconv.Itoa(e.natsPort), "--demo-pg-port", strconv.Itoa(e.demoPort),
		"--ssh-addr", fmt.Sprintf("127.0.0.1:%d", e.sshPort), "--demo-ssh-port", strconv.Itoa(e.demoSSHPort),
		// The memory benchmark holds 1,500 sessions open (a first half-batch,
		// then the batch measured), each on a backend of its own.
		"--demo-pg-setting", "max_connections=1700", "--demo-pg-setting", "shared_buffers=256MB",
		"--log-level", "warn", "--log-format", "json")
	if e.pprofPort != 0 {
		cmd.Args = append(cmd.Args, "--pprof-addr", fmt.Sprintf("127.0.0.1:%d", e.pprofPort))
	}
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = os.Stderr
	cmd.Dir = filepath.Dir(e.dir)
	if err := cmd.Start(); err != nil {
		return err
	}
	e.sluice = cmd
	deadline := time.Now().Add(2 * time.Minute)
	for !strings.Contains(out.String(), "Press Ctrl-C") {
		if time.Now().After(deadline) {
			return fmt.Errorf("sluice dev did not start:\n%s", out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	var err error
	tok := func(args ...string) (string, error) {
		b, err := exec.Command(*sluiceBin, append([]string{"dev", "token", "--dir", e.dir, "--ttl", "3h"}, args...)...).Output()
		return strings.TrimSpace(string(b)), err
	}
	if e.engineer, err = tok("--sub", "bench", "--groups", "engineers"); err != nil {
		return err
	}
	if e.dba, err = tok("--sub", "bench-dba", "--groups", "engineers,dba"); err != nil {
		return err
	}
	key, err := secrets.LoadKey(filepath.Join(e.dir, "master.key"))
	if err != nil {
		return err
	}
	sealed, err := os.ReadFile(filepath.Join(e.dir, "demo-pg.sealed"))
	if err != nil {
		return err
	}
	raw, _ := base64.StdEncoding.DecodeString(strings.TrimSpace(string(sealed)))
	pw, err := key.Open(raw)
	if err != nil {
		return err
	}
	e.demoPassword = string(pw)
	return nil
}

func (e *env) fixtures() error {
	step(fmt.Sprintf("pgbench -i -s %d", *scale))
	if out, err := exec.Command("pgbench", "-i", "-q", "-s", strconv.Itoa(*scale), e.directDSN()).CombinedOutput(); err != nil {
		return fmt.Errorf("pgbench -i: %v: %s", err, out)
	}
	// 100,000 more customers for the masking benchmark.
	sql := `INSERT INTO customers (name, email, ssn, card_number, phone)
SELECT 'Customer ' || g, 'customer' || g || '@example.com',
       lpad((100 + g % 600)::text, 3, '0') || '-' || lpad((10 + g % 89)::text, 2, '0') || '-' || lpad((1000 + g % 9000)::text, 4, '0'),
       '4111111111111111', '+1-415-555-' || lpad((g % 10000)::text, 4, '0')
FROM generate_series(1, 100000) g; ANALYZE`
	if out, err := exec.Command("psql", e.directDSN(), "-q", "-c", sql).CombinedOutput(); err != nil {
		return fmt.Errorf("masking fixture: %v: %s", err, out)
	}
	return nil
}

func (e *env) startBouncer(base string) error {
	dir := filepath.Join(base, "pgbouncer")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, f := range []string{"cert.pem", "key.pem"} {
		b, err := os.ReadFile(filepath.Join(e.dir, "tls", f))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			return err
		}
	}
	ini := fmt.Sprintf(`[databases]
demo = host=127.0.0.1 port=%d dbname=demo user=sluice_gateway password=%s
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = trust
auth_file = %s/users.txt
pool_mode = session
max_client_conn = 2000
default_pool_size = 200
client_tls_sslmode = require
client_tls_key_file = %s/key.pem
client_tls_cert_file = %s/cert.pem
logfile = %s/pgbouncer.log
`, e.demoPort, e.demoPassword, e.bouncerPort, dir, dir, dir, dir)
	if err := os.WriteFile(filepath.Join(dir, "pgbouncer.ini"), []byte(ini), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "users.txt"), []byte(`"sluice_gateway" ""`+"\n"), 0o644); err != nil {
		return err
	}
	args := []string{filepath.Join(dir, "pgbouncer.ini")}
	if os.Geteuid() == 0 {
		args = append([]string{"-u", "postgres"}, args...)
		if u, err := user.Lookup("postgres"); err == nil {
			uid, _ := strconv.Atoi(u.Uid)
			gid, _ := strconv.Atoi(u.Gid)
			_ = os.Chown(dir, uid, gid)
			_ = os.Chmod(base, 0o755)
		}
	}
	bin := "pgbouncer"
	if _, err := exec.LookPath(bin); err != nil {
		bin = "/usr/sbin/pgbouncer"
	}
	cmd := exec.Command(bin, args...)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("pgbouncer: %w (install it: apt-get install pgbouncer)", err)
	}
	e.bouncer = cmd
	for i := 0; i < 100; i++ {
		if out, err := exec.Command("psql", e.bouncerDSN(), "-Atc", "SELECT 1").CombinedOutput(); err == nil && strings.TrimSpace(string(out)) == "1" {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "pgbouncer.log"))
	return fmt.Errorf("pgbouncer did not come up: %s", b)
}

func (e *env) stop() {
	for _, c := range []*exec.Cmd{e.relay, e.bouncer, e.sluice} {
		if c != nil && c.Process != nil {
			_ = c.Process.Signal(syscall.SIGINT)
			done := make(chan struct{})
			go func() { _ = c.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				_ = c.Process.Kill()
			}
		}
	}
}

var (
	tpsRE = regexp.MustCompile(`tps = ([0-9.]+) \((?:without initial connection time|including reconnection times)\)`)
	latRE = regexp.MustCompile(`latency average = ([0-9.]+) ms`)
)

// pgbench runs one pgbench and returns tps and average latency (ms).
func pgbench(dsn string, args ...string) (float64, float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), *duration+2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "pgbench", append(args, dsn)...).CombinedOutput()
	if err != nil {
		return 0, 0, fmt.Errorf("pgbench %v: %v: %s", args, err, tail(string(out)))
	}
	m, l := tpsRE.FindStringSubmatch(string(out)), latRE.FindStringSubmatch(string(out))
	if m == nil || l == nil || !strings.Contains(string(out), "number of failed transactions: 0") {
		return 0, 0, fmt.Errorf("pgbench %v: unexpected output: %s", args, tail(string(out)))
	}
	tps, _ := strconv.ParseFloat(m[1], 64)
	lat, _ := strconv.ParseFloat(l[1], 64)
	return tps, lat, nil
}

func tail(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > 8 {
		lines = lines[len(lines)-8:]
	}
	return strings.Join(lines, "\n")
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func machine() string {
	cpu := "unknown CPU"
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "model name") {
				cpu = strings.TrimSpace(strings.SplitN(sc.Text(), ":", 2)[1])
				break
			}
		}
		f.Close()
	}
	return fmt.Sprintf("%s, %d vCPU", cpu, numCPU())
}
