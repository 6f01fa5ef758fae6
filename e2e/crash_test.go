package e2e

import (
	"context"
	"fmt"
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

	"sluice.dev/sluice/libs/auditlog"
	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/testkit"
)

// TestKill9UnderLoad kills `sluice dev` with SIGKILL while clients write
// through it — its PostgreSQL worker, its recorder and its NATS server die
// at once, with batches of records in flight — then starts it again on the
// same directory and checks the write-ahead promise: every statement that
// reached PostgreSQL is in AUDIT, and the audit log verifies. Some clients
// keep one connection, others open one per statement (a session's start
// and end records in flight too).
func TestKill9UnderLoad(t *testing.T) {
	requireTool(t, "psql")
	dir := t.TempDir()
	env := withDemo(t, startDev(t, devOptions{dir: dir}))
	for _, q := range []string{"CREATE TABLE crash_log (tag text PRIMARY KEY)", "GRANT ALL ON crash_log TO sluice_gateway"} {
		out, err := timedCommand(t, "psql", env.directDSN(t), "-v", "ON_ERROR_STOP=1", "-c", q).CombinedOutput()
		require.NoError(t, err, string(out))
	}
	alice := env.Token("--sub", "alice", "--groups", "engineers")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	var ran atomic.Int64
	var wg sync.WaitGroup
	// The tag is in the statement's text: parameters are recorded only
	// as a hash.
	insert := func(conn *pgx.Conn, tag string) error {
		_, err := conn.Exec(ctx, "INSERT INTO crash_log VALUES ('"+tag+"')")
		if err == nil {
			ran.Add(1)
		}
		return err
	}
	connect := func(mode pgx.QueryExecMode) (*pgx.Conn, error) {
		cfg, err := pgx.ParseConfig(env.dsn(alice))
		if err != nil {
			return nil, err
		}
		cfg.DefaultQueryExecMode = mode
		return pgx.ConnectConfig(ctx, cfg)
	}
	for c := 0; c < 4; c++ {
		wg.Add(1)
		go func() { // one connection, statement after statement (extended protocol)
			defer wg.Done()
			conn, err := connect(pgx.QueryExecModeExec)
			if err != nil {
				t.Errorf("connect: %v", err)
				return
			}
			defer conn.Close(context.Background())
			for i := 0; insert(conn, fmt.Sprintf("kept-%d-%d", c, i)) == nil; i++ {
			}
		}()
	}
	for c := 0; c < 2; c++ {
		wg.Add(1)
		go func() { // a connection per statement (simple protocol)
			defer wg.Done()
			for i := 0; ; i++ {
				conn, err := connect(pgx.QueryExecModeSimpleProtocol)
				if err != nil {
					return
				}
				err = insert(conn, fmt.Sprintf("new-%d-%d", c, i))
				conn.Close(context.Background())
				if err != nil {
					return
				}
			}
		}()
	}
	testkit.Eventually(t, 60*time.Second, func() error {
		if n := ran.Load(); n < 300 {
			return fmt.Errorf("%d statements so far", n)
		}
		return nil
	})
	require.NoError(t, env.cmd.Process.Signal(syscall.SIGKILL))
	err := <-env.done
	env.done <- err
	wg.Wait()
	t.Logf("killed after %d statements", ran.Load())

	env = withDemo(t, startDev(t, devOptions{dir: dir}))
	out, err := timedCommand(t, "psql", env.directDSN(t), "-Atc", "SELECT tag FROM crash_log").CombinedOutput()
	require.NoError(t, err, string(out))
	stored := lines(string(out))
	require.GreaterOrEqual(t, len(stored), 300)

	js, err := jetstream.New(env.NATS(bus.CompSIEM))
	require.NoError(t, err)
	testkit.Eventually(t, 60*time.Second, func() error {
		recorded := map[string]bool{}
		err := auditlog.Read(ctx, js, auditlog.Options{}, func(e auditlog.Entry) error {
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
	auditor := []string{"SLUICE_TOKEN=" + env.Token("--sub", "audrey", "--groups", "auditors")}
	v, err := env.CLI(auditor, "audit", "verify")
	require.NoError(t, err, v)
	assert.Contains(t, v, "intact")
}
