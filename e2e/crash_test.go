package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"sluice.dev/sluice/libs/auditlog"
	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/testkit"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
)

// crashTable is where the writers' statements land, one row per statement.
const crashTable = "CREATE TABLE crash_log (tag text PRIMARY KEY)"

// writers write through a PostgreSQL worker until stopped: four keep a
// connection (extended protocol), two open one per statement (simple
// protocol: a session's start and end records are in flight too). A
// writer whose session fails connects again. Each statement's tag is in
// its text (parameters are recorded only as a hash), named after prefix.
type writers struct {
	ran atomic.Int64
	// failed counts statements that failed; slowest is the longest a
	// statement took, in ns (how long a kill stalled the writers).
	failed, slowest atomic.Int64
	stop            chan struct{}
	wg              sync.WaitGroup
}

// String says how the writers fared.
func (w *writers) String() string {
	return fmt.Sprintf("%d statements failed, the slowest took %v", w.failed.Load(), time.Duration(w.slowest.Load()).Round(time.Millisecond))
}

func startWriters(ctx context.Context, dsn, prefix string) *writers {
	w := &writers{stop: make(chan struct{})}
	connect := func(mode pgx.QueryExecMode) (*pgx.Conn, error) {
		cfg, err := pgx.ParseConfig(dsn)
		if err != nil {
			return nil, err
		}
		cfg.DefaultQueryExecMode = mode
		return pgx.ConnectConfig(ctx, cfg)
	}
	stopped := func() bool {
		select {
		case <-w.stop:
			return true
		case <-ctx.Done():
			return true
		default:
			return false
		}
	}
	insert := func(conn *pgx.Conn, tag string) error {
		start := time.Now()
		_, err := conn.Exec(ctx, "INSERT INTO crash_log VALUES ('"+tag+"')")
		took := int64(time.Since(start))
		for {
			old := w.slowest.Load()
			if took <= old || w.slowest.CompareAndSwap(old, took) {
				break
			}
		}
		if err == nil {
			w.ran.Add(1)
		} else if ctx.Err() == nil {
			w.failed.Add(1)
		}
		return err
	}
	for c := 0; c < 6; c++ {
		perStatement := c >= 4
		mode := pgx.QueryExecModeExec
		if perStatement {
			mode = pgx.QueryExecModeSimpleProtocol
		}
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			for i := 0; !stopped(); {
				conn, err := connect(mode)
				if err != nil {
					time.Sleep(100 * time.Millisecond)
					continue
				}
				for ; !stopped(); i++ {
					if insert(conn, fmt.Sprintf("%s%d-%d", prefix, c, i)) != nil || perStatement {
						i++
						break
					}
				}
				conn.Close(context.Background())
			}
		}()
	}
	return w
}

// after waits until n more statements ran.
func (w *writers) after(t *testing.T, n int64) {
	t.Helper()
	want := w.ran.Load() + n
	testkit.Eventually(t, 90*time.Second, func() error {
		if got := w.ran.Load(); got < want {
			return fmt.Errorf("%d of %d statements so far", got, want)
		}
		return nil
	})
}

func (w *writers) halt() {
	close(w.stop)
	w.wg.Wait()
}

// requireAllRecorded checks the write-ahead promise: every tag that reached
// PostgreSQL is in a recorded statement in AUDIT.
func requireAllRecorded(t *testing.T, ctx context.Context, js jetstream.JetStream, stored []string) {
	t.Helper()
	testkit.Eventually(t, 90*time.Second, func() error {
		recorded := map[string]bool{}
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		err := auditlog.Read(rctx, js, auditlog.Options{}, func(e auditlog.Entry) error {
			if _, tag, ok := strings.Cut(e.Event.GetCommand().GetText(), "INSERT INTO crash_log VALUES ('"); ok {
				recorded[strings.TrimSuffix(tag, "')")] = true
			}
			return nil
		})
		if err != nil {
			return err
		}
		var missing []string
		for _, tag := range stored {
			if !recorded[tag] {
				missing = append(missing, tag)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("%d of %d statements that reached PostgreSQL are not in AUDIT, such as %s", len(missing), len(stored), missing[0])
		}
		return nil
	})
}

// requireIndexAgrees checks the sessions index against AUDIT: every
// session's summary in sluice_sessions is what folding its records gives
// (auditlog.Summaries, what sluice admin reproject sessions would write),
// so no write of it was lost to the crash.
func requireIndexAgrees(t *testing.T, ctx context.Context, js jetstream.JetStream) {
	t.Helper()
	testkit.Eventually(t, 60*time.Second, func() error {
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		want, err := auditlog.Summaries(rctx, js)
		if err != nil {
			return err
		}
		index, err := auditlog.Sessions(rctx, js)
		if err != nil {
			return err
		}
		got := map[string]*sessionv1.Summary{}
		for _, s := range index {
			got[s.GetSessionId()] = s
		}
		var wrong []string
		for id, w := range want {
			if g := got[id]; !proto.Equal(w, g) {
				wrong = append(wrong, fmt.Sprintf("%s: index %v, AUDIT %v", id, g, w))
			}
		}
		for id := range got {
			if want[id] == nil {
				wrong = append(wrong, id+": indexed, not in AUDIT")
			}
		}
		if len(wrong) > 0 {
			return fmt.Errorf("%d of %d sessions indexed other than AUDIT says, such as %s", len(wrong), len(want), wrong[0])
		}
		return nil
	})
}

// TestKill9UnderLoad kills `sluice dev` with SIGKILL while clients write
// through it — its PostgreSQL worker, its recorder and its NATS server die
// at once, with batches of records in flight — then starts it again on the
// same directory and checks the write-ahead promise: every statement that
// reached PostgreSQL is in AUDIT, the sessions index agrees with it, and
// the audit log verifies.
func TestKill9UnderLoad(t *testing.T) {
	requireTool(t, "psql")
	dir := t.TempDir()
	env := withDemo(t, startDev(t, devOptions{dir: dir}))
	for _, q := range []string{crashTable, "GRANT ALL ON crash_log TO sluice_gateway"} {
		out, err := timedCommand(t, "psql", env.directDSN(t), "-v", "ON_ERROR_STOP=1", "-c", q).CombinedOutput()
		require.NoError(t, err, string(out))
	}
	ctx := context.Background()
	wctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	w := startWriters(wctx, env.dsn(env.Token("--sub", "alice", "--groups", "engineers")), "w")
	w.after(t, 300)
	require.NoError(t, env.cmd.Process.Signal(syscall.SIGKILL))
	err := <-env.done
	env.done <- err
	w.halt()
	t.Logf("killed after %d statements", w.ran.Load())

	env = withDemo(t, startDev(t, devOptions{dir: dir}))
	out, err := timedCommand(t, "psql", env.directDSN(t), "-Atc", "SELECT tag FROM crash_log").CombinedOutput()
	require.NoError(t, err, string(out))
	stored := lines(string(out))
	require.GreaterOrEqual(t, len(stored), 300)
	js, err := jetstream.New(env.NATS(bus.CompSIEM))
	require.NoError(t, err)
	requireAllRecorded(t, ctx, js, stored)
	requireIndexAgrees(t, ctx, js)
	auditor := []string{"SLUICE_TOKEN=" + env.Token("--sub", "audrey", "--groups", "auditors")}
	v, err := env.CLI(auditor, "audit", "verify")
	require.NoError(t, err, v)
	assert.Contains(t, v, "intact")
}

// natsProcesses is a three-node JetStream cluster of nats-server processes
// (built from the nats-server module go.mod pins), with the deployment's
// users and permissions (deploy/nats/users.conf) and their public keys from
// natsEnv (sluice admin nats-keys' nats.env), so a node can be killed with
// SIGKILL.
type natsProcesses struct {
	urls     []string
	monitors []string
	names    []string
	cmds     []*exec.Cmd
	killed   []int
}

func startNATSProcesses(t *testing.T, natsEnv []string) *natsProcesses {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "nats-server")
	build := exec.Command("go", "build", "-o", bin, "github.com/nats-io/nats-server/v2")
	build.Dir = ".."
	out, err := build.CombinedOutput()
	require.NoError(t, err, string(out))
	users, err := os.ReadFile(filepath.Join("..", "deploy", "nats", "users.conf"))
	require.NoError(t, err)
	var routes []string
	clusterPorts := make([]int, 3)
	for i := range clusterPorts {
		clusterPorts[i] = freePort(t)
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", clusterPorts[i]))
	}
	p := &natsProcesses{}
	for i := range 3 {
		dir := t.TempDir()
		port, monitor := freePort(t), freePort(t)
		require.NoError(t, os.WriteFile(filepath.Join(dir, "users.conf"), users, 0o600))
		conf := fmt.Sprintf("server_name: n%d\nlisten: 127.0.0.1:%d\nhttp: 127.0.0.1:%d\nmax_payload: 8MB\njetstream { store_dir: %q }\n"+
			"cluster { name: sluice-e2e, listen: 127.0.0.1:%d, routes: [%s] }\ninclude ./users.conf\n",
			i+1, port, monitor, filepath.Join(dir, "store"), clusterPorts[i], strings.Join(routes, ", "))
		file := filepath.Join(dir, "nats.conf")
		require.NoError(t, os.WriteFile(file, []byte(conf), 0o600))
		logs := &syncBuffer{}
		cmd := exec.Command(bin, "-c", file)
		cmd.Env, cmd.Stderr = append(os.Environ(), natsEnv...), logs
		require.NoError(t, cmd.Start())
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			if t.Failed() {
				t.Logf("nats-server n%d:\n%s", i+1, tail(logs.String(), 20))
			}
		})
		p.urls = append(p.urls, fmt.Sprintf("nats://127.0.0.1:%d", port))
		p.monitors = append(p.monitors, fmt.Sprintf("http://127.0.0.1:%d", monitor))
		p.names = append(p.names, fmt.Sprintf("n%d", i+1))
		p.cmds = append(p.cmds, cmd)
	}
	return p
}

// URL names every node.
func (p *natsProcesses) URL() string { return strings.Join(p.urls, ",") }

// kill9 kills node i with SIGKILL.
func (p *natsProcesses) kill9(t *testing.T, i int) {
	t.Helper()
	require.NoError(t, p.cmds[i].Process.Signal(syscall.SIGKILL))
	_, _ = p.cmds[i].Process.Wait()
	p.killed = append(p.killed, i)
}

// live lists the nodes not killed.
func (p *natsProcesses) live() []int {
	var nodes []int
	for i := range p.cmds {
		if !slices.Contains(p.killed, i) {
			nodes = append(nodes, i)
		}
	}
	return nodes
}

// leaderOf is the node that leads stream (what the live nodes' /jsz say).
func (p *natsProcesses) leaderOf(t *testing.T, stream string) int {
	t.Helper()
	leader := -1
	testkit.Eventually(t, 30*time.Second, func() error {
		for _, i := range p.live() {
			resp, err := http.Get(p.monitors[i] + "/jsz?streams=true")
			if err != nil {
				return err
			}
			var jsz struct {
				AccountDetails []struct {
					StreamDetail []struct {
						Name    string `json:"name"`
						Cluster struct {
							Leader string `json:"leader"`
						} `json:"cluster"`
					} `json:"stream_detail"`
				} `json:"account_details"`
			}
			err = json.NewDecoder(resp.Body).Decode(&jsz)
			resp.Body.Close()
			if err != nil {
				return err
			}
			for _, a := range jsz.AccountDetails {
				for _, s := range a.StreamDetail {
					if s.Name == stream && s.Cluster.Leader != "" {
						leader = slices.Index(p.names, s.Cluster.Leader)
						if leader < 0 {
							return fmt.Errorf("%s is led by %q, not a node of this cluster", stream, s.Cluster.Leader)
						}
						return nil
					}
				}
			}
		}
		return fmt.Errorf("no node names a leader of %s", stream)
	})
	return leader
}

// jsz is what node i says of the JetStream cluster (its /jsz), for a
// failure's log.
func (p *natsProcesses) jsz(i int) string {
	resp, err := http.Get(p.monitors[i] + "/jsz?streams=true&consumers=true&raft=true")
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
