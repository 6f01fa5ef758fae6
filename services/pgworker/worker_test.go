package pgworker_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/controlstate"
	"sluice.dev/sluice/libs/devissuer"
	"sluice.dev/sluice/libs/pglocal"
	"sluice.dev/sluice/libs/secrets"
	"sluice.dev/sluice/libs/testkit"
	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
	"sluice.dev/sluice/services/identity"
	"sluice.dev/sluice/services/pgworker"
	"sluice.dev/sluice/services/policy"
)

// harness runs NATS, the identity and policy services, a real PostgreSQL
// target and the control state, in this process.
type harness struct {
	t    testing.TB
	conn *bus.Conn
	iss  *devissuer.Issuer
	ctx  context.Context
}

var pg *pglocal.Server

func TestMain(m *testing.M) {
	if _, err := pglocal.FindBinDir(); err != nil {
		if os.Getenv("SLUICE_E2E_REQUIRED") == "1" {
			fmt.Fprintln(os.Stderr, "PostgreSQL server binaries are required:", err)
			os.Exit(1)
		}
		fmt.Fprintln(os.Stderr, "skipping: no PostgreSQL server binaries")
		os.Exit(0)
	}
	dir, _ := os.MkdirTemp("", "pgworker-test-")
	var err error
	pg, err = pglocal.Start(context.Background(), pglocal.Config{Dir: dir + "/data"})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for _, q := range []string{"CREATE ROLE gw LOGIN PASSWORD 'gw-secret'", "CREATE DATABASE app OWNER gw"} {
		if err := pg.Exec(context.Background(), "postgres", q); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	code := m.Run()
	pg.Stop()
	os.RemoveAll(dir)
	os.Exit(code)
}

func newHarness(t testing.TB, rules ...*controlv1.Rule) *harness {
	t.Helper()
	t.Setenv("TEST_GW_PASSWORD", "gw-secret")
	_, conn := testkit.NATS(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	require.NoError(t, bus.Provision(ctx, conn.JS, bus.Topology{}))
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	iss := &devissuer.Issuer{Audience: "sluice", Key: key}
	srv := httptest.NewServer(http.StripPrefix("/oidc", iss.Handler()))
	t.Cleanup(srv.Close)
	iss.URL = srv.URL + "/oidc"
	go func() {
		_ = identity.Run(ctx, identity.Config{Conn: conn, Provider: identity.Provider{Issuer: iss.URL, Audience: "sluice"}})
	}()
	go func() { _ = policy.New(policy.Config{Conn: conn, Log: zerolog.Nop()}).Run(ctx) }()
	h := &harness{t: t, conn: conn, iss: iss, ctx: ctx}
	kv, err := controlstate.Bucket(ctx, conn.JS)
	require.NoError(t, err)
	target, _ := proto.Marshal(&controlv1.TargetConfigured{Spec: &controlv1.TargetSpec{Name: "app", Kind: "postgres",
		Endpoint: &controlv1.TargetSpec_Postgres{Postgres: &controlv1.PostgresTarget{Host: "127.0.0.1", Port: uint32(pg.Port), Database: "app", User: "gw", Sslmode: "disable",
			Password: &controlv1.Credential{Source: &controlv1.Credential_Env{Env: "TEST_GW_PASSWORD"}}}}}})
	_, err = kv.Put(ctx, controlstate.TargetKey("app"), target)
	require.NoError(t, err)
	if len(rules) == 0 {
		rules = []*controlv1.Rule{{Name: "allow-reads", Action: "allow", When: `sql.kind in ["read", "transaction", "session"] && !("side_effect_function" in sql.flags) || sql.functions.exists(f, f == "pg_sleep")`}}
	}
	h.setPolicy(1, rules...)
	testkit.IdentityAndPolicyAnswer(t, ctx, conn.NC)
	return h
}

func (h *harness) setPolicy(rev uint64, rules ...*controlv1.Rule) {
	kv, err := controlstate.Bucket(h.ctx, h.conn.JS)
	require.NoError(h.t, err)
	b, _ := proto.Marshal(&controlv1.PolicySetApplied{Rules: rules, Revision: rev})
	_, err = kv.Put(h.ctx, controlstate.KeyPolicy, b)
	require.NoError(h.t, err)
}

// worker starts a worker replica with cfg and returns its address.
func (h *harness) worker(cfg pgworker.Config) string {
	h.t.Helper()
	return h.start(cfg).Addr()
}

// start starts a worker replica with cfg.
func (h *harness) start(cfg pgworker.Config) *pgworker.Worker {
	h.t.Helper()
	cfg.Conn = h.conn
	cfg.TLSDir = h.t.TempDir()
	if cfg.MasterKey == nil {
		key, err := secrets.LoadOrCreateKeyFile(filepath.Join(h.t.TempDir(), "master.key"))
		require.NoError(h.t, err)
		cfg.MasterKey = key
	}
	cfg.Log = zerolog.Nop()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(h.t, err)
	cfg.Listener = ln
	w := pgworker.New(cfg)
	go func() { _ = w.Run(h.ctx) }()
	<-w.Ready()
	return w
}

func (h *harness) token(ttl time.Duration) string {
	tok, err := h.iss.Mint(devissuer.Claims{Subject: "alice", Groups: []string{"engineers"}, TTL: ttl})
	require.NoError(h.t, err)
	return tok
}

func (h *harness) connect(addr, token string) (*pgconn.PgConn, error) {
	host, port, _ := net.SplitHostPort(addr)
	ctx, cancel := context.WithTimeout(h.ctx, 15*time.Second)
	defer cancel()
	return pgconn.Connect(ctx, fmt.Sprintf("host=%s port=%s dbname=app user=alice sslmode=require password=%s", host, port, token))
}

func pgCode(err error) string {
	var pe *pgconn.PgError
	if errorAs(err, &pe) {
		return pe.Code
	}
	return ""
}

func TestLimits(t *testing.T) {
	h := newHarness(t)
	addr := h.worker(pgworker.Config{MaxSessions: 2, StartupTimeout: 500 * time.Millisecond, IdleTimeout: time.Second, MaxMessageSize: 1 << 16})
	tok := h.token(time.Hour)

	t.Run("slow startup is dropped", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		defer c.Close()
		_, _ = c.Write([]byte{0, 0}) // half a length, then nothing
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		start := time.Now()
		_, err = c.Read(make([]byte, 1))
		require.Error(t, err)
		assert.Less(t, time.Since(start), 3*time.Second)
	})

	t.Run("max message size", func(t *testing.T) {
		c, err := h.connect(addr, tok)
		require.NoError(t, err)
		defer c.Close(h.ctx)
		_, err = c.Exec(h.ctx, "SELECT '"+strings.Repeat("x", 1<<17)+"'").ReadAll()
		require.Error(t, err)
		assert.Equal(t, "08P01", pgCode(err))
	})

	t.Run("max sessions", func(t *testing.T) {
		a, err := h.connect(addr, tok)
		require.NoError(t, err)
		defer a.Close(h.ctx)
		b, err := h.connect(addr, tok)
		require.NoError(t, err)
		defer b.Close(h.ctx)
		_, err = h.connect(addr, tok)
		require.Error(t, err)
		assert.Equal(t, "53300", pgCode(err))
	})

	t.Run("idle timeout", func(t *testing.T) {
		var c *pgconn.PgConn
		testkit.Eventually(t, 5*time.Second, func() error { // the slots above are released
			var err error
			c, err = h.connect(addr, tok)
			return err
		})
		defer c.Close(h.ctx)
		time.Sleep(1500 * time.Millisecond)
		_, err := c.Exec(h.ctx, "SELECT 1").ReadAll()
		require.Error(t, err)
	})
}

func TestTokenExpiryEndsSession(t *testing.T) {
	h := newHarness(t)
	addr := h.worker(pgworker.Config{})
	c, err := h.connect(addr, h.token(2*time.Second))
	require.NoError(t, err)
	defer c.Close(h.ctx)
	_, err = c.Exec(h.ctx, "SELECT 1").ReadAll()
	require.NoError(t, err)
	time.Sleep(2500 * time.Millisecond)
	_, err = c.Exec(h.ctx, "SELECT 1").ReadAll()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "token expired")
}

func TestReplicasAndCrossReplicaCancel(t *testing.T) {
	h := newHarness(t)
	a := h.worker(pgworker.Config{})
	b := h.worker(pgworker.Config{})
	tok := h.token(time.Hour)
	ca, err := h.connect(a, tok)
	require.NoError(t, err)
	defer ca.Close(h.ctx)
	cb, err := h.connect(b, tok)
	require.NoError(t, err)
	defer cb.Close(h.ctx)
	_, err = cb.Exec(h.ctx, "SELECT 1").ReadAll()
	require.NoError(t, err)

	// The cancel for a session on replica A arrives at replica B.
	done := make(chan error, 1)
	go func() {
		_, err := ca.Exec(h.ctx, "SELECT pg_sleep(20)").ReadAll()
		done <- err
	}()
	// Cancel only once the statement runs on the target.
	awaitRunning(t, h.ctx, "SELECT pg_sleep(20)")
	host, port, _ := net.SplitHostPort(b)
	other, err := pgconn.Connect(h.ctx, fmt.Sprintf("host=%s port=%s dbname=app sslmode=require password=%s", host, port, tok))
	require.NoError(t, err)
	defer other.Close(h.ctx)
	require.NoError(t, cancelVia(h.ctx, b, ca.PID(), ca.SecretKey()))
	select {
	case err := <-done:
		assert.Equal(t, "57014", pgCode(err))
	case <-time.After(10 * time.Second):
		t.Fatal("the query was not cancelled")
	}
	// A wrong secret cancels nothing.
	go func() {
		_, err := cb.Exec(h.ctx, "SELECT pg_sleep(1)").ReadAll()
		done <- err
	}()
	awaitRunning(t, h.ctx, "SELECT pg_sleep(1)")
	require.NoError(t, cancelVia(h.ctx, a, cb.PID(), []byte{1, 2, 3, 4}))
	assert.NoError(t, <-done)
}

// awaitRunning waits until the target runs query (as the gateway's user).
func awaitRunning(t *testing.T, ctx context.Context, query string) {
	t.Helper()
	c, err := pgconn.Connect(ctx, pg.SuperuserDSN("app"))
	require.NoError(t, err)
	defer c.Close(ctx)
	testkit.Eventually(t, 10*time.Second, func() error {
		res, err := c.Exec(ctx, "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query = '"+query+"'").ReadAll()
		if err != nil {
			return err
		}
		if string(res[0].Rows[0][0]) != "1" {
			return fmt.Errorf("%s is not running yet", query)
		}
		return nil
	})
}

func TestNewRevisionTakesEffect(t *testing.T) {
	h := newHarness(t)
	addr := h.worker(pgworker.Config{})
	c, err := h.connect(addr, h.token(time.Hour))
	require.NoError(t, err)
	defer c.Close(h.ctx)
	for i := 0; i < 3; i++ { // cached after the first
		_, err = c.Exec(h.ctx, "SELECT 42").ReadAll()
		require.NoError(t, err)
	}
	h.setPolicy(2, &controlv1.Rule{Name: "deny-everything", Action: "deny", When: "true"})
	testkit.Eventually(t, 10*time.Second, func() error {
		_, err := c.Exec(h.ctx, "SELECT 42").ReadAll()
		if pgCode(err) != "42501" || !strings.Contains(err.Error(), "deny-everything") {
			return fmt.Errorf("still allowed: %v", err)
		}
		return nil
	})
}

// A prepared statement is ruled on again when the policy (or a grant)
// changes: neither a Parse nor a SQL PREPARE keeps its first verdict.
func TestNewRevisionReachesPreparedStatements(t *testing.T) {
	h := newHarness(t, &controlv1.Rule{Name: "allow-all", Action: "allow", When: "true"})
	addr := h.worker(pgworker.Config{})
	c, err := h.connect(addr, h.token(time.Hour))
	require.NoError(t, err)
	defer c.Close(h.ctx)
	_, err = c.Prepare(h.ctx, "p", "SELECT pg_backend_pid()", nil)
	require.NoError(t, err)
	_, err = c.Exec(h.ctx, "PREPARE q AS SELECT pg_backend_pid()").ReadAll()
	require.NoError(t, err)
	run := func() (error, error) {
		ext := c.ExecPrepared(h.ctx, "p", nil, nil, nil).Read().Err
		_, sql := c.Exec(h.ctx, "EXECUTE q").ReadAll()
		return ext, sql
	}
	ext, sql := run()
	require.NoError(t, ext)
	require.NoError(t, sql)

	h.setPolicy(2, &controlv1.Rule{Name: "deny-pid", Action: "deny", When: `sql.functions.exists(f, f == "pg_backend_pid")`},
		&controlv1.Rule{Name: "allow-all", Action: "allow", When: "true"})
	testkit.Eventually(t, 10*time.Second, func() error {
		ext, sql := run()
		for _, err := range []error{ext, sql} {
			if pgCode(err) != "42501" || !strings.Contains(err.Error(), "deny-pid") {
				return fmt.Errorf("still allowed: %v, %v", ext, sql)
			}
		}
		return nil
	})
	// Refused again, however often it is bound and run.
	for range 3 {
		ext, sql := run()
		assert.Equal(t, "42501", pgCode(ext), ext)
		assert.Equal(t, "42501", pgCode(sql), sql)
	}
	// The session goes on: what the policy allows still runs.
	_, err = c.Exec(h.ctx, "SELECT 1").ReadAll()
	require.NoError(t, err)
}

func TestFailsClosedWhenRecordingStops(t *testing.T) {
	h := newHarness(t)
	addr := h.worker(pgworker.Config{RecordTimeout: 500 * time.Millisecond})
	c, err := h.connect(addr, h.token(time.Hour))
	require.NoError(t, err)
	defer c.Close(h.ctx)
	_, err = c.Exec(h.ctx, "SELECT 1").ReadAll()
	require.NoError(t, err)
	// The ingest stream is full and refuses new events (discard new).
	stream, err := h.conn.JS.Stream(h.ctx, bus.StreamSessions)
	require.NoError(t, err)
	info, err := stream.Info(h.ctx)
	require.NoError(t, err)
	cfg := info.Config
	cfg.MaxMsgs = int64(info.State.Msgs)
	_, err = h.conn.JS.UpdateStream(h.ctx, cfg)
	require.NoError(t, err)
	_, err = c.Exec(h.ctx, "SELECT 2").ReadAll()
	require.Error(t, err)
	assert.Equal(t, "58000", pgCode(err))
	assert.Contains(t, err.Error(), "audit stream")

}

// A session that ends while a statement waits for its record (here its
// target connection is terminated while the audit stream refuses events for
// a moment) is not taken for a failure of the audit stream: the statement
// does not run, and once the stream accepts events again the session's end
// is recorded, with the reason it ended for.
func TestAnEndWhileARecordWaitsIsRecorded(t *testing.T) {
	h := newHarness(t, &controlv1.Rule{Name: "allow-all", Action: "allow", When: "true"})
	addr := h.worker(pgworker.Config{RecordTimeout: 5 * time.Second})
	c, err := h.connect(addr, h.token(time.Hour))
	require.NoError(t, err)
	defer c.Close(h.ctx)
	_, err = c.Exec(h.ctx, "SELECT 1").ReadAll()
	require.NoError(t, err)
	evs := testkit.SessionEvents(t, h.ctx, h.conn.JS, "")
	require.NotEmpty(t, evs)
	id := evs[0].GetSessionId()

	// The stream refuses events: the write's record is retried, and the
	// write waits for it.
	stream, err := h.conn.JS.Stream(h.ctx, bus.StreamSessions)
	require.NoError(t, err)
	info, err := stream.Info(h.ctx)
	require.NoError(t, err)
	full := info.Config
	full.MaxMsgs = int64(info.State.Msgs)
	_, err = h.conn.JS.UpdateStream(h.ctx, full)
	require.NoError(t, err)
	wrote := make(chan error, 1)
	go func() {
		_, err := c.Exec(h.ctx, "CREATE TABLE made_while_waiting (x int)").ReadAll()
		wrote <- err
	}()
	time.Sleep(300 * time.Millisecond)
	require.NoError(t, pg.Exec(h.ctx, "postgres",
		"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'gw' AND datname = 'app'"))
	require.Error(t, <-wrote)
	full.MaxMsgs = -1
	_, err = h.conn.JS.UpdateStream(h.ctx, full)
	require.NoError(t, err)

	evs = eventsToTheEnd(t, h, id)
	assert.NotContains(t, evs[len(evs)-1].GetEnded().GetReason(), "audit stream", "the audit stream did not fail")
	for i, ev := range evs {
		assert.Equal(t, uint64(i+1), ev.GetSeq(), "no gap")
	}
	direct, err := pgconn.Connect(h.ctx, pg.SuperuserDSN("app"))
	require.NoError(t, err)
	defer direct.Close(h.ctx)
	res, err := direct.Exec(h.ctx, "SELECT to_regclass('made_while_waiting') IS NULL").ReadAll()
	require.NoError(t, err)
	assert.Equal(t, "t", string(res[0].Rows[0][0]), "the write did not run without its record")
}

// eventsToTheEnd waits until session id's last stored event is its end,
// and returns its events.
func eventsToTheEnd(t *testing.T, h *harness, id string) []*sessionv1.Event {
	t.Helper()
	var evs []*sessionv1.Event
	testkit.Eventually(t, 10*time.Second, func() error {
		evs = testkit.SessionEvents(t, h.ctx, h.conn.JS, id)
		if last := evs[len(evs)-1]; last.GetEnded() == nil {
			return fmt.Errorf("the session's last event is %v, not its end", last)
		}
		return nil
	})
	return evs
}
