package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"sluice.dev/sluice/libs/testkit"
)

// helperProc is a running `sluice connect`.
type helperProc struct {
	cmd      *exec.Cmd
	out, log *syncBuffer
	done     chan error
}

// startConnect runs `sluice connect TARGET` against env on a free port and
// waits until it says how to connect.
func startConnect(t *testing.T, env *devEnv, target string, extraEnv ...string) (*helperProc, int) {
	t.Helper()
	port := freePort(t)
	h := &helperProc{out: &syncBuffer{}, log: &syncBuffer{}, done: make(chan error, 1)}
	h.cmd = exec.Command(sluiceBin, "connect", target, "--listen", fmt.Sprintf("127.0.0.1:%d", port),
		"--server", env.PGAddr, "--ca", filepath.Join(env.Dir, "tls", "cert.pem"))
	h.cmd.Env = append(os.Environ(), "SLUICE_API="+env.API, "XDG_CONFIG_HOME="+filepath.Join(env.Dir, "cfg"))
	h.cmd.Env = append(h.cmd.Env, extraEnv...)
	h.cmd.Stdout, h.cmd.Stderr = h.out, h.log
	require.NoError(t, h.cmd.Start())
	go func() { h.done <- h.cmd.Wait() }()
	t.Cleanup(func() {
		h.stop(t)
		if t.Failed() {
			t.Logf("sluice connect output:\n%s\nlogs:\n%s", h.out.String(), tail(h.log.String(), 60))
		}
	})
	testkit.Eventually(t, 20*time.Second, func() error {
		select {
		case err := <-h.done:
			h.done <- err
			t.Fatalf("sluice connect exited: %v\n%s%s", err, h.out.String(), h.log.String())
		default:
		}
		if !strings.Contains(h.out.String(), fmt.Sprintf(`psql "host=127.0.0.1 port=%d dbname=%s"`, port, target)) {
			return fmt.Errorf("no banner yet")
		}
		return nil
	})
	return h, port
}

// stop sends Ctrl-C and expects a clean exit.
func (h *helperProc) stop(t *testing.T) {
	if h.cmd.ProcessState != nil {
		return
	}
	_ = h.cmd.Process.Signal(syscall.SIGINT)
	select {
	case err := <-h.done:
		h.done <- err
		assert.NoError(t, err, "sluice connect stops cleanly on Ctrl-C")
	case <-time.After(15 * time.Second):
		_ = h.cmd.Process.Kill()
		t.Errorf("sluice connect did not stop within 15s of Ctrl-C")
	}
}

// TestConnect: a session through `sluice connect` outlives its first token
// (tokens live 8 seconds here): the helper renews it with fresh client
// credentials tokens, the gateway records each renewal, and a token of
// another principal renews nothing. A direct session with no helper still
// ends when its token expires. Cancel requests go through the helper.
func TestConnect(t *testing.T) {
	requireTool(t, "psql")
	const life = 8 * time.Second
	env := startDev(t, devOptions{extra: []string{"--token-ttl", life.String()}})
	secret, err := os.ReadFile(filepath.Join(env.Dir, "demo-agent.secret"))
	require.NoError(t, err)
	helper, port := startConnect(t, env, "demo", "SLUICE_CLIENT_ID=demo-agent", "SLUICE_CLIENT_SECRET="+strings.TrimSpace(string(secret)))
	dsn := fmt.Sprintf("host=127.0.0.1 port=%d dbname=demo user=agent", port)
	ctx := context.Background()

	// psql needs no password (-w: it would fail rather than ask).
	psql := timedCommand(t, "psql", dsn, "-w", "-X", "-A", "-t", "-c", "SELECT name FROM customers WHERE id = 1")
	psql.Env = append(os.Environ(), "PGPASSWORD=", "PGSSLMODE=prefer")
	out, err := psql.CombinedOutput()
	require.NoError(t, err, string(out))
	assert.Equal(t, "Ada Lovelace", strings.TrimSpace(string(out)))
	wrong := timedCommand(t, "psql", fmt.Sprintf("host=127.0.0.1 port=%d dbname=prod user=agent", port), "-w", "-X", "-c", "SELECT 1")
	out, err = wrong.CombinedOutput()
	require.Error(t, err)
	assert.Contains(t, string(out), `this port serves target "demo"`)

	// The long session, and a direct one whose token lives as long.
	start := time.Now()
	long, err := pgconn.Connect(ctx, dsn+" sslmode=disable")
	require.NoError(t, err)
	defer long.Close(ctx)
	id := long.ParameterStatus("sluice.session_id")
	require.Len(t, id, 26, "the gateway tells the client its session id")
	direct, err := pgconn.Connect(ctx, fmt.Sprintf("host=%s port=%d dbname=demo user=alice sslmode=require password=%s",
		env.PGHost, env.PGPort, env.Token("--sub", "alice", "--groups", "engineers", "--ttl", life.String())))
	require.NoError(t, err)
	defer direct.Close(ctx)
	directID := direct.ParameterStatus("sluice.session_id")
	directEnded := make(chan error, 1)
	go func() {
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for range tick.C {
			if _, err := direct.Exec(ctx, "SELECT 1").ReadAll(); err != nil {
				directEnded <- err
				return
			}
		}
	}()

	// Another principal's token renews nothing: refused, recorded, and the
	// session goes on. A token the API cannot verify never reaches a worker.
	mallory := env.Token("--sub", "mallory", "--groups", "engineers")
	status, body := env.HTTP("POST", "/api/v1/sessions/"+id+"/renew", mallory, nil)
	assert.Equal(t, 403, status, body)
	assert.Equal(t, "forbidden", body["error"])
	status, _ = env.HTTP("POST", "/api/v1/sessions/"+id+"/renew", "not-a-token", nil)
	assert.Equal(t, 401, status)

	// Cancel through the helper: the request reaches the gateway with the
	// key it gave.
	done := make(chan error, 1)
	go func() {
		_, err := long.Exec(ctx, "SELECT count(*) FROM generate_series(1, 100000000000)").ReadAll()
		done <- err
	}()
	cancelled := false
	for deadline := time.Now().Add(10 * time.Second); !cancelled && time.Now().Before(deadline); {
		require.NoError(t, long.CancelRequest(ctx))
		select {
		case err := <-done:
			var pe *pgconn.PgError
			require.ErrorAs(t, err, &pe)
			assert.Equal(t, "57014", pe.Code, "query_canceled")
			cancelled = true
		case <-time.After(300 * time.Millisecond): // a cancel sent before the statement ran cancels nothing
		}
	}
	require.True(t, cancelled, "the statement was cancelled")

	// Querying for more than two token lifetimes: the session stays.
	queries := 0
	tick := time.NewTicker(400 * time.Millisecond)
	defer tick.Stop()
	for time.Since(start) < 2*life+2*time.Second {
		<-tick.C
		res, err := long.Exec(ctx, "SELECT count(*) FROM customers").ReadAll()
		require.NoError(t, err, "the session through the helper is open %s after it started", time.Since(start).Round(time.Millisecond))
		require.Equal(t, "64", string(res[0].Rows[0][0]))
		queries++
	}
	assert.Greater(t, queries, 30)

	// The direct session ended when its token expired, as before.
	select {
	case err := <-directEnded:
		var pe *pgconn.PgError
		require.ErrorAs(t, err, &pe)
		assert.Equal(t, "57P01", pe.Code)
		assert.Contains(t, pe.Message, "the access token expired")
	default:
		t.Fatal("the direct session outlived its token")
	}
	// ... and renewing it now is too late.
	testkit.Eventually(t, 10*time.Second, func() error {
		status, body := env.HTTP("POST", "/api/v1/sessions/"+directID+"/renew", env.Token("--sub", "alice", "--groups", "engineers"), nil)
		if status != 410 {
			return fmt.Errorf("HTTP %d %v", status, body)
		}
		return nil
	})

	// The audit log: at least two renewals, each with its new expiry, and
	// the refused one naming who tried.
	auditor := env.Token("--sub", "audrey", "--groups", "auditors")
	testkit.Eventually(t, 10*time.Second, func() error {
		status, body := env.HTTP("GET", "/api/v1/sessions/"+id, auditor, nil)
		if status != 200 {
			return fmt.Errorf("HTTP %d %v", status, body)
		}
		var renewals, refusals int
		events, _ := body["events"].([]any)
		for _, e := range events {
			ev, _ := e.(map[string]any)["event"].(map[string]any)
			if r, ok := ev["token_renewed"].(map[string]any); ok {
				assert.NotNil(t, r["expires_at"], "a renewal records the new expiry")
				assert.NotNil(t, r["previous_expires_at"])
				renewals++
			}
			if r, ok := ev["renewal_refused"].(map[string]any); ok {
				assert.Equal(t, "mallory", r["subject"])
				assert.Equal(t, "forbidden", r["code"])
				refusals++
			}
		}
		if renewals < 2 || refusals != 1 {
			return fmt.Errorf("%d renewals and %d refusals recorded so far", renewals, refusals)
		}
		raw, _ := json.Marshal(events)
		assert.NotContains(t, string(raw), "eyJ", "no token reaches the audit log")
		return nil
	})
	assert.GreaterOrEqual(t, strings.Count(helper.log.String(), "session renewed"), 2, helper.log.String())

	require.NoError(t, long.Close(ctx))
	helper.stop(t)
	assert.Contains(t, helper.log.String(), "stopped")
}
