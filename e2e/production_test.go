package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/devcert"
	"sluice.dev/sluice/libs/devissuer"
	"sluice.dev/sluice/libs/pglocal"
	"sluice.dev/sluice/libs/secrets"
	"sluice.dev/sluice/libs/testkit"
)

func secret(t *testing.T) string {
	t.Helper()
	b := make([]byte, 16)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return hex.EncodeToString(b)
}

// postgresBinaries finds PostgreSQL's server binaries; without them the
// test is skipped, or fails when end-to-end tests are required.
func postgresBinaries(t *testing.T) string {
	t.Helper()
	bin, err := pglocal.FindBinDir()
	if err != nil {
		if os.Getenv("SLUICE_E2E_REQUIRED") == "1" {
			t.Fatalf("PostgreSQL server binaries are required: %v", err)
		}
		t.Skip(err)
	}
	return bin
}

// startIssuer serves an OIDC issuer (audience sluice) on a loopback port
// until the test ends, and returns it with a function that mints tokens.
func startIssuer(t *testing.T, dir string) (*devissuer.Issuer, func(sub string, groups ...string) string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	key, err := devissuer.LoadOrCreateKey(filepath.Join(dir, "issuer.key"))
	require.NoError(t, err)
	iss := &devissuer.Issuer{URL: "http://" + ln.Addr().String(), Audience: "sluice", Key: key}
	idp := &http.Server{Handler: iss.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = idp.Serve(ln) }()
	t.Cleanup(func() { _ = idp.Close() })
	return iss, func(sub string, groups ...string) string {
		tok, err := iss.Mint(devissuer.Claims{Subject: sub, Groups: groups, TTL: 10 * time.Minute})
		require.NoError(t, err)
		return tok
	}
}

// The deployment of "Running in production" in README.md, on one machine:
// a three-node NATS cluster with one nkey identity per component and R3
// streams, an OIDC provider, a PostgreSQL target, and every service as its
// own `sluice serve` process with its own identity, bootstrapped with
// `sluice admin apply` and then administered with `sluice apply`. Then a
// client goes through it, and goes on after a NATS node is killed under
// load, with every statement that reached PostgreSQL in AUDIT; and a
// worker paused until its session is shown lost never takes it up again.
//
// component is one `sluice serve` process of the production topology.
type component struct {
	start func() *exec.Cmd
	cmd   *exec.Cmd
}

func (c *component) kill9(t *testing.T) {
	t.Helper()
	require.NoError(t, c.cmd.Process.Signal(syscall.SIGKILL))
	_, _ = c.cmd.Process.Wait()
}

// restart starts the component again with the same arguments.
func (c *component) restart() { c.cmd = c.start() }

func TestProductionTopology(t *testing.T) {
	requireTool(t, "psql")
	bin := postgresBinaries(t)
	ctx := context.Background()
	dir := t.TempDir()

	// One NATS identity per component, made the documented way.
	keys := filepath.Join(dir, "nats-keys")
	keyOut, err := exec.Command(sluiceBin, "admin", "nats-keys", "--dir", keys).CombinedOutput()
	require.NoError(t, err, string(keyOut))
	adminKey := keys + ".admin.nk"
	require.NoFileExists(t, bus.KeyFile(keys, bus.CompAdmin), "the break-glass seed is kept apart")
	require.FileExists(t, adminKey)
	// The NATS servers learn the public keys from nats.env.
	env, err := os.ReadFile(filepath.Join(keys, "nats.env"))
	require.NoError(t, err)
	pubs := map[string]string{}
	for _, c := range bus.ComponentNames() {
		for _, l := range strings.Split(string(env), "\n") {
			if v, ok := strings.CutPrefix(l, bus.KeyEnv(c)+"="); ok {
				pubs[c] = v
			}
		}
		require.NotEmpty(t, pubs[c], "nats.env names %s", c)
	}
	// Three nats-server processes, so that one can be killed under load.
	var natsEnv []string
	for _, l := range strings.Split(string(env), "\n") {
		if strings.HasPrefix(l, "SLUICE_NKEY_") {
			natsEnv = append(natsEnv, l)
		}
	}
	cluster := startNATSProcesses(t, natsEnv)
	testkit.Eventually(t, 60*time.Second, func() error {
		c, err := bus.Connect(ctx, bus.Config{URL: cluster.URL(), Component: bus.CompAdmin, NkeyFile: adminKey})
		if err != nil {
			return err
		}
		defer c.NC.Close()
		_, err = c.JS.AccountInfo(ctx)
		return err
	})

	// The identity provider.
	iss, token := startIssuer(t, dir)

	// The target, with a gateway role whose password only the worker holds.
	pg, err := pglocal.Start(ctx, pglocal.Config{Dir: filepath.Join(dir, "pg"), BinDir: bin})
	require.NoError(t, err)
	t.Cleanup(pg.Stop)
	ordersPW := secret(t)
	require.NoError(t, pg.Exec(ctx, "postgres", "CREATE DATABASE orders"))
	require.NoError(t, pg.Exec(ctx, "orders", fmt.Sprintf(`CREATE ROLE sluice_gateway LOGIN PASSWORD '%s';
		CREATE TABLE customers (id int PRIMARY KEY, name text, email text);
		INSERT INTO customers SELECT i, 'customer ' || i, 'c' || i || '@example.com' FROM generate_series(1, 10) i;
		GRANT SELECT, INSERT, UPDATE, DELETE ON customers TO sluice_gateway;
		`+crashTable+`; GRANT SELECT, INSERT ON crash_log TO sluice_gateway`, ordersPW)))

	masterFile, recorderFile := filepath.Join(dir, "master.key"), filepath.Join(dir, "recorder.key")
	_, err = secrets.LoadOrCreateKeyFile(masterFile)
	require.NoError(t, err)
	kg, err := exec.Command(sluiceBin, "audit", "keygen", "--out", recorderFile).CombinedOutput()
	require.NoError(t, err, string(kg))

	// Every service on its own.
	apiAddr, pgAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t)), fmt.Sprintf("127.0.0.1:%d", freePort(t))
	tlsDir := filepath.Join(dir, "tls")
	_, err = devcert.LoadOrCreate(tlsDir)
	require.NoError(t, err)
	// serve starts one component as a process of its own.
	serve := func(args ...string) *component {
		c := &component{start: func() *exec.Cmd {
			logs := &syncBuffer{}
			cmd := exec.Command(sluiceBin, append([]string{"serve"}, append(args, "--nats", cluster.URL(),
				"--nats-nkey-file", bus.KeyFile(keys, args[0]), "--replicas", "3", "--admin-addr", "127.0.0.1:0")...)...)
			cmd.Env = append(os.Environ(), "ORDERS_DB_PASSWORD="+ordersPW)
			cmd.Stderr = logs
			require.NoError(t, cmd.Start())
			t.Cleanup(func() {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
				if t.Failed() {
					t.Logf("sluice serve %s (pid %d):\n%s", args[0], cmd.Process.Pid, tail(logs.String(), 30))
				}
			})
			return cmd
		}}
		c.cmd = c.start()
		return c
	}
	// The worker first: it may not create streams, and waits for the
	// services that do (start order does not matter).
	worker := serve("pgworker", "--pg-addr", pgAddr, "--master-key-file", masterFile,
		"--tls-cert", filepath.Join(tlsDir, "cert.pem"), "--tls-key", filepath.Join(tlsDir, "key.pem"), "--hold-timeout", "30s")
	time.Sleep(500 * time.Millisecond)
	serve("identity", "--issuer", iss.URL, "--audience", "sluice")
	serve("policy")
	serve("approvals", "--hold-timeout", "30s")
	recorder := serve("recorder", "--recorder-key-file", recorderFile)
	serve("api", "--addr", apiAddr)
	serve("control")
	// The MCP endpoint on a listener of its own (the API runs elsewhere).
	mcpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	serve("mcpworker", "--mcp-addr", mcpAddr, "--master-key-file", masterFile)

	api := "SLUICE_API=http://" + apiAddr
	cli := func(tok string, args ...string) (string, error) {
		cmd := timedCommand(t, sluiceBin, args...)
		cmd.Env = append(os.Environ(), api, "SLUICE_TOKEN="+tok)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	admin := token("root", "sluice-admins")
	policies, err := os.ReadFile(filepath.Join("..", "services", "sluice", "internal", "dev", "sluice.yaml"))
	require.NoError(t, err)
	config := fmt.Sprintf(`oidc:
  issuer: %s
  audience: sluice
targets:
  - name: orders
    kind: postgres
    postgres:
      host: 127.0.0.1
      port: %d
      database: orders
      user: sluice_gateway
      sslmode: disable
      password: {env: ORDERS_DB_PASSWORD}
`, iss.URL, pg.Port) + string(policies)
	file := filepath.Join(dir, "sluice.yaml")
	require.NoError(t, os.WriteFile(file, []byte(config), 0o600))
	// No admin exists yet: a token naming an admin group is refused, and
	// says how to bootstrap...
	testkit.Eventually(t, 60*time.Second, func() error {
		_, err := cli(admin, "whoami")
		return err
	})
	out, err := cli(admin, "apply", "-f", file)
	require.Error(t, err, out)
	assert.Contains(t, out, "no group holds this role yet")
	assert.Contains(t, out, "sluice admin apply")
	// ...until the first configuration (with its access section) is applied
	// through the break-glass identity, as README's bootstrap says.
	testkit.Eventually(t, 60*time.Second, func() error {
		cmd := timedCommand(t, sluiceBin, "admin", "apply", "-f", file, "--nats", cluster.URL(), "--nats-nkey-file", adminKey)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	testkit.Eventually(t, 30*time.Second, func() error {
		out, err = cli(admin, "apply", "-f", file)
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	assert.Contains(t, out, "applied 0 change(s)")

	alice := token("alice", "engineers")
	dsn := fmt.Sprintf("host=127.0.0.1 port=%s dbname=orders user=alice sslmode=require password=%s connect_timeout=10",
		strings.TrimPrefix(pgAddr, "127.0.0.1:"), alice)
	as := func(sub, group string) func(args ...string) (string, error) {
		tok := token(sub, group)
		return func(args ...string) (string, error) { return cli(tok, args...) }
	}
	g := gatewayUser{psql: psqlAt(t, dsn), approver: as("bob", "approvers"), auditor: as("audrey", "auditors")}
	testkit.Eventually(t, 30*time.Second, func() error {
		if out, err := g.psql("SELECT name FROM customers WHERE id = 1"); err != nil || out != "customer 1\n" {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	// An agent over MCP, through the worker's own listener: masked rows,
	// recorded like the rest.
	agent := &mcpClient{t: t}
	testkit.Eventually(t, 30*time.Second, func() error {
		cs, err := mcp.NewClient(&mcp.Implementation{Name: "prod-agent", Version: "1"}, nil).Connect(ctx,
			&mcp.StreamableClientTransport{Endpoint: "http://" + mcpAddr + "/mcp",
				HTTPClient: &http.Client{Transport: bearer{token: alice, base: http.DefaultTransport}}}, nil)
		if err != nil {
			return err
		}
		agent.cs = cs
		return nil
	})
	t.Cleanup(func() { agent.cs.Close() })
	r := agent.call("run_sql", map[string]any{"target": "orders", "sql": "SELECT email FROM customers WHERE id = 1"}, nil)
	require.Equal(t, "ok", r.Status, r.text)
	assert.NotContains(t, fmt.Sprint(r.Results[0].Rows), "c1@example.com")
	g.checkControls(t, "SELECT email FROM customers WHERE id = 1", "DELETE 10")
	out, err = g.auditor("sessions", "list")
	require.NoError(t, err, out)
	assert.Contains(t, out, "alice")
	assert.Contains(t, out, "mcp")

	// SIGKILL under load, one part of the path at a time: a NATS node, the
	// PostgreSQL worker (started again on its address), the recorder (started
	// again once statements ran without it). Clients write before and after
	// each kill, connecting again when their session dies. After each, every
	// statement that reached PostgreSQL is in AUDIT, and the audit log
	// verifies; only the worker's death fails statements (those of the
	// sessions it held).
	siem, err := bus.Connect(ctx, bus.Config{URL: cluster.URL(), Component: bus.CompSIEM, NkeyFile: bus.KeyFile(keys, bus.CompSIEM)})
	require.NoError(t, err)
	defer siem.NC.Close()
	killedWorker := "" // the killed worker's name ends so
	for i, k := range []struct {
		what string
		kill func(w *writers)
		// failFree: no statement may fail (a cluster that loses one node
		// of three goes on; a worker's sessions die with it).
		failFree bool
	}{
		// The node that leads SESSIONS: no statement is recorded until
		// the others elect another leader (after 4 to 9 s), and the
		// batch in flight is lost if the worker was connected there.
		{"a NATS node", func(*writers) {
			leader := cluster.leaderOf(t, bus.StreamSessions)
			t.Logf("killing n%d, which leads %s", leader+1, bus.StreamSessions)
			cluster.kill9(t, leader)
		}, true},
		{"the PostgreSQL worker", func(*writers) {
			killedWorker = fmt.Sprintf("-%d", worker.cmd.Process.Pid)
			worker.kill9(t)
			worker.restart()
		}, false},
		{"the recorder", func(w *writers) {
			// Statements go on without a recorder (their records wait in
			// SESSIONS); the one started then is killed in turn before it can
			// have caught up, and another started.
			recorder.kill9(t)
			w.after(t, 50)
			recorder.restart()
			time.Sleep(200 * time.Millisecond)
			recorder.kill9(t)
			recorder.restart()
		}, true},
	} {
		wctx, wcancel := context.WithTimeout(ctx, 3*time.Minute)
		w := startWriters(wctx, dsn, fmt.Sprintf("k%d-", i))
		w.after(t, 100)
		killedAt := w.ran.Load()
		k.kill(w)
		w.after(t, 100)
		w.halt()
		wcancel()
		t.Logf("%s killed: %d statements before, %d after; %v", k.what, killedAt, w.ran.Load()-killedAt, w)
		if k.failFree {
			assert.Zero(t, w.failed.Load(), "no statement fails when %s is killed", k.what)
		}
		rows, err := timedCommand(t, "psql", "-h", pg.SocketDir, "-p", fmt.Sprint(pg.Port), "-U", "postgres", "-d", "orders",
			"-Atc", "SELECT tag FROM crash_log").CombinedOutput()
		require.NoError(t, err, string(rows))
		// Slow to read back: what the live nodes say of the cluster, in the log.
		diag := time.AfterFunc(30*time.Second, func() {
			for _, i := range cluster.live() {
				t.Logf("n%d /jsz: %s", i+1, cluster.jsz(i))
			}
		})
		requireAllRecorded(t, ctx, siem.JS, lines(string(rows)))
		requireIndexAgrees(t, ctx, siem.JS)
		diag.Stop()
		out, err := g.auditor("audit", "verify")
		require.NoError(t, err, "after %s was killed: %s", k.what, out)
		assert.Contains(t, out, "intact")
	}
	// The sessions the killed worker held have no end, and never will:
	// once it has been silent long enough, they are shown lost, and no
	// other session is; once their events are all chained, the recorder
	// closes each chain with a lost record (the session then has an end).
	var lostOne string
	testkit.Eventually(t, 90*time.Second, func() error {
		out, err := g.auditor("sessions", "list", "-o", "json", "--limit", "1000")
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		var res struct {
			Sessions []struct {
				ID, Worker, State, Lost string
				EndedAt                 *time.Time `json:"ended_at"`
			}
		}
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			return err
		}
		lost := 0
		for _, s := range res.Sessions {
			killed := strings.HasSuffix(s.Worker, killedWorker)
			switch {
			case s.State == "lost" && !killed:
				return fmt.Errorf("session %s of worker %s is shown lost: %s", s.ID, s.Worker, s.Lost)
			case s.State == "open" && killed:
				return fmt.Errorf("session %s of the killed worker %s is still shown open", s.ID, s.Worker)
			case s.State == "lost" && s.EndedAt == nil:
				return fmt.Errorf("session %s of the killed worker %s is lost, its chain not closed yet", s.ID, s.Worker)
			case s.State == "lost":
				assert.Contains(t, s.Lost, s.Worker)
				lost++
				lostOne = s.ID
			}
		}
		if lost == 0 {
			return fmt.Errorf("no session of the killed worker (*%s) is shown lost", killedWorker)
		}
		// --state lost lists those, and only those.
		out, err = g.auditor("sessions", "list", "-o", "json", "--limit", "1000", "--state", "lost")
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		res.Sessions = nil
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			return err
		}
		for _, s := range res.Sessions {
			if s.State != "lost" {
				return fmt.Errorf("--state lost lists session %s, %s", s.ID, s.State)
			}
		}
		if len(res.Sessions) != lost {
			return fmt.Errorf("--state lost lists %d sessions, the whole list %d", len(res.Sessions), lost)
		}
		// Ending one is answered at once: nobody holds it.
		out, err = as("root", "sluice-admins")("sessions", "kill", res.Sessions[0].ID, "--reason", "cleanup")
		if err == nil || !strings.Contains(out, "the session is lost (its worker") {
			return fmt.Errorf("killing lost session %s: %v: %s", res.Sessions[0].ID, err, out)
		}
		return nil
	})
	// Its replay ends with the lost record, and the closed chains verify
	// (an event after a lost record would not).
	replay, err := g.auditor("replay", lostOne)
	require.NoError(t, err, replay)
	assert.Contains(t, replay, "the session was lost: its worker")
	out, err = g.auditor("audit", "verify")
	require.NoError(t, err, "after the lost sessions were closed: %s", out)
	assert.Contains(t, out, "intact")
	testkit.Eventually(t, 60*time.Second, func() error {
		if out, err := g.psql("SELECT name FROM customers WHERE id = 2 OR id = 3 ORDER BY id LIMIT 1"); err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	g.inAuditLog(t, "id = 2 OR id = 3")

	// A worker paused (SIGSTOP: a VM paused, a process stopped) until its
	// session is shown lost never takes that session up again when it runs
	// again: its lease lapsed, so it is fenced, nothing of the session is
	// recorded or run, the session's chain is closed (its end recorded once
	// the worker writes its presence again, or a lost record from the
	// recorder, whichever comes first), and new sessions are served.
	paused, err := pgconn.Connect(ctx, dsn)
	require.NoError(t, err)
	defer paused.Close(ctx) //nolint:errcheck
	_, err = paused.Exec(ctx, "SELECT 1").ReadAll()
	require.NoError(t, err)
	pausedWorker := fmt.Sprintf("-%d", worker.cmd.Process.Pid)
	type listed struct {
		ID, Worker, State string
		EndReason         string     `json:"end_reason"`
		EndedAt           *time.Time `json:"ended_at"`
	}
	sessionsOf := func(state string) ([]listed, error) {
		args := []string{"sessions", "list", "-o", "json", "--limit", "1000"}
		if state != "" {
			args = append(args, "--state", state)
		}
		out, err := g.auditor(args...)
		if err != nil {
			return nil, fmt.Errorf("%v: %s", err, out)
		}
		var res struct{ Sessions []listed }
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			return nil, err
		}
		var mine []listed
		for _, s := range res.Sessions {
			if strings.HasSuffix(s.Worker, pausedWorker) {
				mine = append(mine, s)
			}
		}
		return mine, nil
	}
	require.NoError(t, worker.cmd.Process.Signal(syscall.SIGSTOP))
	var lostIDs []string
	testkit.Eventually(t, 90*time.Second, func() error {
		lost, err := sessionsOf("lost")
		if err != nil {
			return err
		}
		if len(lost) == 0 {
			return fmt.Errorf("no session of the paused worker (*%s) is shown lost yet", pausedWorker)
		}
		lostIDs = nil
		for _, s := range lost {
			lostIDs = append(lostIDs, s.ID)
		}
		return nil
	})
	require.NoError(t, worker.cmd.Process.Signal(syscall.SIGCONT))
	_, err = paused.Exec(ctx, "SELECT 2").ReadAll()
	require.Error(t, err, "a session shown lost does not go on")
	testkit.Eventually(t, 90*time.Second, func() error {
		all, err := sessionsOf("")
		if err != nil {
			return err
		}
		for _, s := range all {
			// Ended by the worker once it wrote its presence again, or
			// closed as lost by the recorder before that (the worker's
			// end then comes after the lost record, and is dropped).
			if slices.Contains(lostIDs, s.ID) && s.EndedAt == nil {
				return fmt.Errorf("session %s of the paused worker is %s, not ended", s.ID, s.State)
			}
		}
		return nil
	})
	out, err = g.auditor("audit", "verify")
	require.NoError(t, err, out)
	assert.Contains(t, out, "intact")
	testkit.Eventually(t, 60*time.Second, func() error {
		if out, err := g.psql("SELECT name FROM customers WHERE id = 1"); err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
}
