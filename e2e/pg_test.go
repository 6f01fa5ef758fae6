package e2e

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"sluice.dev/sluice/libs/secrets"
	"sluice.dev/sluice/libs/testkit"
)

// pgEnv is a sluice dev with the demo database.
type pgEnv struct {
	*devEnv
	demoPort int
}

func startPG(t *testing.T) *pgEnv {
	t.Helper()
	requireTool(t, "psql", "pgbench")
	// Statements held for approval give up quickly here: nobody approves.
	return withDemo(t, startDev(t, devOptions{extra: []string{"--hold-timeout", "2s"}}))
}

// withDemo is env with its demo database's port.
func withDemo(t *testing.T, env *devEnv) *pgEnv {
	t.Helper()
	var port int
	for _, l := range lines(env.Output()) {
		if strings.HasPrefix(l, "Demo target") {
			_, after, _ := strings.Cut(l, "127.0.0.1:")
			port, _ = strconv.Atoi(strings.TrimRight(strings.Fields(after)[0], ","))
		}
	}
	require.NotZero(t, port, "demo database port")
	return &pgEnv{devEnv: env, demoPort: port}
}

// dsn is a libpq connection string to Sluice.
func (e *pgEnv) dsn(token string, extra ...string) string {
	parts := append([]string{"host=127.0.0.1", fmt.Sprintf("port=%d", e.PGPort), "dbname=demo", "user=alice", "sslmode=require", "password=" + token, "connect_timeout=10"}, extra...)
	return strings.Join(parts, " ")
}

// directDSN reaches the demo database without Sluice, as the gateway role
// (for setting up fixtures such as pgbench's tables).
func (e *pgEnv) directDSN(t *testing.T) string {
	key, err := secrets.LoadKey(filepath.Join(e.Dir, "master.key"))
	require.NoError(t, err)
	sealed, err := os.ReadFile(filepath.Join(e.Dir, "demo-pg.sealed"))
	require.NoError(t, err)
	raw, _ := base64.StdEncoding.DecodeString(strings.TrimSpace(string(sealed)))
	pw, err := key.Open(raw)
	require.NoError(t, err)
	return fmt.Sprintf("host=127.0.0.1 port=%d dbname=demo user=sluice_gateway password=%s sslmode=disable", e.demoPort, pw)
}

// psql runs psql against Sluice with args and returns stdout+stderr.
func (e *pgEnv) psql(t *testing.T, token string, stdin string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "psql", append([]string{e.dsn(token), "-X", "-v", "VERBOSITY=verbose"}, args...)...)
	cmd.Env = append(os.Environ(), "PGCONNECT_TIMEOUT=10")
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestPostgresWorker(t *testing.T) {
	env := startPG(t)
	alice := env.Token("--sub", "alice", "--groups", "engineers", "--email", "alice@example.com")
	ctx := context.Background()

	t.Run("psql -c", func(t *testing.T) {
		out, err := env.psql(t, alice, "", "-c", "SELECT name FROM customers WHERE id = 1")
		require.NoError(t, err, out)
		assert.Contains(t, out, "Ada Lovelace")
		assert.Contains(t, out, "(1 row)")
	})

	t.Run("psql -f with denials mid-script", func(t *testing.T) {
		script := filepath.Join(t.TempDir(), "script.sql")
		require.NoError(t, os.WriteFile(script, []byte(`
SELECT count(*) AS customers FROM customers;
SET ROLE postgres;
SELECT pg_read_file('/etc/passwd');
COPY customers TO PROGRAM 'cat > /tmp/leak';
SELECT 'still here' AS alive;
`), 0o600))
		out, err := env.psql(t, alice, "", "-f", script)
		require.NoError(t, err, out) // psql continues past errors without ON_ERROR_STOP
		assert.Contains(t, out, "64")
		assert.Contains(t, out, `42501: sluice: statement denied by rule "deny-role-changes"`)
		assert.Contains(t, out, `42501: sluice: statement denied by rule "deny-file-and-program-access"`)
		assert.Equal(t, 2, strings.Count(out, `"deny-file-and-program-access"`))
		assert.Contains(t, out, "still here")
		_, err = os.Stat("/tmp/leak")
		assert.True(t, os.IsNotExist(err), "the COPY PROGRAM never ran")
	})

	t.Run("psql interactive", func(t *testing.T) {
		requireTool(t, "script")
		// psql on a terminal, reading keystrokes: an interactive session.
		input := "\\set ON_ERROR_STOP 0\nBEGIN;\nUPDATE orders SET status = 'shipped' WHERE id = 1;\nDELETE FROM orders;\nSELECT 1;\nROLLBACK;\nSELECT status FROM orders WHERE id = 1;\n\\q\n"
		sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(sctx, "script", "-qec", "psql '"+env.dsn(alice)+"' -X -P pager=off", "/dev/null")
		cmd.Stdin = strings.NewReader(input)
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, string(out))
		s := string(out)
		assert.Contains(t, s, "UPDATE 1")
		assert.Contains(t, s, `statement denied by rule "review-unbounded-writes"`)
		// The denial inside the transaction aborts it, as a server error
		// would: the next statement is refused by PostgreSQL itself.
		assert.Contains(t, s, "current transaction is aborted")
		assert.Contains(t, s, "ROLLBACK")
	})

	t.Run("transaction state stays consistent", func(t *testing.T) {
		out, err := env.psql(t, alice, "BEGIN;\nUPDATE orders SET status = 'tx-test' WHERE id = 2;\nSET ROLE postgres;\nCOMMIT;\nSELECT status FROM orders WHERE id = 2;\n")
		require.NoError(t, err, out)
		assert.Contains(t, out, "ROLLBACK", "COMMIT of an aborted transaction rolls back")
		assert.NotContains(t, out, "tx-test")
	})

	t.Run("pgx extended protocol", func(t *testing.T) {
		conn, err := pgx.Connect(ctx, env.dsn(alice))
		require.NoError(t, err)
		defer conn.Close(ctx)
		var name string
		require.NoError(t, conn.QueryRow(ctx, "SELECT name FROM customers WHERE id = $1", 1).Scan(&name))
		assert.Equal(t, "Ada Lovelace", name)
		// The same statement again uses pgx's cached prepared statement:
		// Bind/Execute only.
		require.NoError(t, conn.QueryRow(ctx, "SELECT name FROM customers WHERE id = $1", 2).Scan(&name))
		_, err = conn.Exec(ctx, "DELETE FROM customers WHERE $1::int > 0 OR true", 1)
		var pgErr *pgconn.PgError
		require.ErrorAs(t, err, &pgErr)
		assert.Equal(t, "42501", pgErr.Code)
		assert.Contains(t, pgErr.Message, "review-unbounded-writes")
		_, err = conn.Exec(ctx, "SELECT pg_read_file($1)", "/etc/passwd")
		require.ErrorAs(t, err, &pgErr)
		assert.Equal(t, "42501", pgErr.Code)
		// Still usable. A pipeline sends three statements before reading
		// any answer; the denied one in the middle fails alone.
		p := conn.PgConn().StartPipeline(ctx)
		for _, q := range []string{"SELECT 1", "SELECT set_config('role', 'postgres', false)", "SELECT 2"} {
			p.SendQueryParams(q, nil, nil, nil, nil)
			p.SendPipelineSync()
		}
		require.NoError(t, p.Flush())
		var codes []string
		for i := 0; i < 6; i++ {
			res, err := p.GetResults()
			if err != nil {
				require.ErrorAs(t, err, &pgErr)
				codes = append(codes, pgErr.Code)
				continue
			}
			switch r := res.(type) {
			case *pgconn.ResultReader:
				_, err := r.Close()
				if err != nil {
					require.ErrorAs(t, err, &pgErr)
					codes = append(codes, pgErr.Code)
				} else {
					codes = append(codes, "ok")
				}
			case *pgconn.PipelineSync:
			}
		}
		require.NoError(t, p.Close())
		assert.Equal(t, []string{"ok", "42501", "ok"}, codes)
		var role string
		require.NoError(t, conn.QueryRow(ctx, "SELECT current_user").Scan(&role))
		assert.Equal(t, "sluice_gateway", role, "nothing slipped past the denial")
	})

	t.Run("schema inspection is not masked", func(t *testing.T) {
		// psql's describe commands read the system catalogs: types,
		// defaults, indexes and constraints are metadata, not row data, and
		// a masked principal sees exactly what PostgreSQL shows directly.
		for _, meta := range []string{`\d customers`, `\d+ customers`, `\d customer_orders`, `\d+ customer_orders`, `\d orders`,
			`\dt`, `\di`, `\dv`, `\ds`, `\dn`, `\dT`, `\df pg_catalog.format_type`, `\dp customers`, `\l demo`} {
			direct, err := exec.Command("psql", env.directDSN(t), "-X", "-P", "pager=off", "-c", meta).CombinedOutput()
			require.NoError(t, err, string(direct))
			through, err := env.psql(t, alice, "", "-P", "pager=off", "-c", meta)
			require.NoError(t, err, through)
			assert.Equal(t, string(direct), through, meta)
			assert.NotContains(t, through, "****", meta)
		}
		// The data itself is still masked.
		out, err := env.psql(t, alice, "", "-c", "SELECT email FROM customers WHERE id = 1")
		require.NoError(t, err, out)
		assert.Contains(t, out, "****")
	})

	t.Run("pgbench", func(t *testing.T) {
		// Fixtures through Sluice under the default policy, with no
		// approval: on a development target (env: dev) a human engineer's
		// schema changes run, and VACUUM and ANALYZE are allowed.
		init := timedCommand(t, "pgbench", "-i", "-s", "1", "-q", env.dsn(alice))
		out, err := init.CombinedOutput()
		require.NoError(t, err, string(out))
		assert.Contains(t, string(out), "done in")
		assert.NotContains(t, string(out), "held for approval")
		for _, mode := range []string{"simple", "extended", "prepared"} {
			t.Run(mode, func(t *testing.T) {
				cmd := timedCommand(t, "pgbench", "-n", "-S", "-M", mode, "-c", "4", "-j", "2", "-t", "200", env.dsn(alice))
				out, err := cmd.CombinedOutput()
				require.NoError(t, err, string(out))
				assert.Contains(t, string(out), "number of failed transactions: 0")
				assert.Contains(t, string(out), "number of transactions actually processed: 800/800")
			})
		}
		// The default pgbench script writes: bounded updates by a human
		// engineer are allowed. Without -n pgbench first vacuums its tables
		// and truncates its history, as everyday use does.
		cmd := timedCommand(t, "pgbench", "-M", "prepared", "-c", "2", "-t", "50", env.dsn(alice))
		out, err = cmd.CombinedOutput()
		require.NoError(t, err, string(out))
		assert.Contains(t, string(out), "actually processed: 100/100")
		assert.NotContains(t, string(out), "held for approval")
	})

	t.Run("node-postgres", func(t *testing.T) {
		requireTool(t, "node")
		dir, _ := filepath.Abs("node")
		if _, err := os.Stat(filepath.Join(dir, "node_modules", "pg")); err != nil {
			out, err := timedCommand(t, "npm", "--prefix", dir, "ci", "--no-audit", "--no-fund").CombinedOutput()
			require.NoError(t, err, string(out))
		}
		cmd := timedCommand(t, "node", filepath.Join(dir, "client.js"))
		cmd.Env = append(os.Environ(), "SLUICE_PG_HOST=127.0.0.1", fmt.Sprintf("SLUICE_PG_PORT=%d", env.PGPort), "SLUICE_PG_DB=demo", "SLUICE_PG_USER=alice", "SLUICE_PG_TOKEN="+alice)
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, string(out))
		steps := map[string]map[string]any{}
		for _, l := range lines(string(out)) {
			var m map[string]any
			require.NoError(t, json.Unmarshal([]byte(l), &m), l)
			steps[m["step"].(string)] = m
		}
		assert.Equal(t, float64(1), steps["select"]["rows"])
		assert.Equal(t, "42501", steps["denied"]["code"])
		assert.Contains(t, steps["denied"]["message"], "review-unbounded-writes")
		assert.Equal(t, float64(200), steps["after"]["n"])
	})

	t.Run("bad tokens", func(t *testing.T) {
		for name, tok := range map[string]string{
			"garbage": "not-a-token",
			"expired": mustMint(t, env.devEnv, "alice", -time.Minute),
		} {
			_, err := pgconn.Connect(ctx, env.dsn(tok))
			var pgErr *pgconn.PgError
			require.ErrorAs(t, err, &pgErr, name)
			assert.Equal(t, "28P01", pgErr.Code, name)
			assert.Contains(t, pgErr.Message, "token refused", name)
		}
		_, err := pgconn.Connect(ctx, env.dsn(alice, "dbname=nonexistent"))
		var pgErr *pgconn.PgError
		require.ErrorAs(t, err, &pgErr)
		assert.Equal(t, "3D000", pgErr.Code)
	})

	t.Run("startup attacks", func(t *testing.T) {
		// A healthy session is open throughout.
		conn, err := pgx.Connect(ctx, env.dsn(alice))
		require.NoError(t, err)
		defer conn.Close(ctx)
		addr := env.PGAddr

		// Plaintext is refused before any password is requested.
		_, err = pgconn.Connect(ctx, env.dsn(alice, "sslmode=disable"))
		require.Error(t, err)
		assert.Contains(t, err.Error(), "TLS is required")

		// GSS encryption is declined; TLS still works afterwards.
		c, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		_, _ = c.Write([]byte{0, 0, 0, 8, 4, 210, 22, 48})
		resp := make([]byte, 1)
		_, err = c.Read(resp)
		require.NoError(t, err)
		assert.Equal(t, byte('N'), resp[0])
		c.Close()

		// Bytes injected after SSLRequest, before the handshake: the worker
		// answers 'S', then closes the connection when the "handshake" is
		// a Query instead (never runs it).
		c, err = net.Dial("tcp", addr)
		require.NoError(t, err)
		_, _ = c.Write(append([]byte{0, 0, 0, 8, 4, 210, 22, 47}, []byte("Q\x00\x00\x00\x0dSELECT 1\x00")...))
		got := assertClosedPromptly(t, c)
		assert.True(t, strings.HasPrefix(string(got), "S"), "SSLRequest accepted before the injected bytes: %q", got)

		// A malformed length is refused and the connection closed.
		c, err = net.Dial("tcp", addr)
		require.NoError(t, err)
		_, _ = c.Write([]byte{0xff, 0xff, 0xff, 0xff, 0, 3, 0, 0})
		assertClosedPromptly(t, c)
		buf := make([]byte, 16)

		// A slow client that never finishes its startup is dropped after
		// the startup timeout; others are unaffected meanwhile.
		slow, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		defer slow.Close()
		_, _ = slow.Write([]byte{0, 0})
		var one int
		require.NoError(t, conn.QueryRow(ctx, "SELECT 1").Scan(&one))

		// Direct TLS (PostgreSQL 17): ALPN postgresql is required.
		tc, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"postgresql"}})
		require.NoError(t, err)
		start := make([]byte, 0, 64)
		body := []byte("user\x00alice\x00database\x00demo\x00\x00")
		start = binary.BigEndian.AppendUint32(start, uint32(8+len(body)))
		start = binary.BigEndian.AppendUint32(start, 196608)
		start = append(start, body...)
		_, err = tc.Write(start)
		require.NoError(t, err)
		_ = tc.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = tc.Read(buf)
		require.NoError(t, err)
		assert.Equal(t, byte('R'), buf[0], "direct TLS reaches the password request")
		assert.Equal(t, uint32(3), binary.BigEndian.Uint32(buf[5:9]), "cleartext password (the token)")
		tc.Close()
		_, err = tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
		if err == nil {
			t.Log("handshake without ALPN postgresql completed; the worker must then close it")
		}
	})

	t.Run("cancel", func(t *testing.T) {
		conn, err := pgconn.Connect(ctx, env.dsn(alice))
		require.NoError(t, err)
		defer conn.Close(ctx)
		other, err := pgconn.Connect(ctx, env.dsn(alice))
		require.NoError(t, err)
		defer other.Close(ctx)
		done := make(chan error, 1)
		start := time.Now()
		go func() {
			_, err := conn.Exec(ctx, "SELECT pg_sleep(30) FROM customers LIMIT 1").ReadAll()
			done <- err
		}()
		// Cancel only once the statement runs on the target: a cancel that
		// arrived before it would prove nothing.
		testkit.Eventually(t, 10*time.Second, func() error {
			rows, err := other.Exec(ctx, "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE 'SELECT pg_sleep(30)%'").ReadAll()
			if err != nil {
				return err
			}
			if len(rows) != 1 || len(rows[0].Rows) != 1 || string(rows[0].Rows[0][0]) != "1" {
				return fmt.Errorf("pg_sleep is not running yet")
			}
			return nil
		})
		// pg_sleep is a side-effect function: the policy allows it only for
		// human engineers' bounded statements. Cancel it.
		require.NoError(t, conn.CancelRequest(ctx))
		err = <-done
		var pgErr *pgconn.PgError
		require.ErrorAs(t, err, &pgErr)
		assert.Equal(t, "57014", pgErr.Code, "query_canceled")
		assert.Less(t, time.Since(start), 10*time.Second)
		// The other session was not cancelled.
		_, err = other.Exec(ctx, "SELECT 1").ReadAll()
		require.NoError(t, err)
	})

	t.Run("replay shows statements and decisions", func(t *testing.T) {
		auditor := []string{"SLUICE_TOKEN=" + env.Token("--sub", "audrey", "--groups", "auditors")}
		var id string
		testkit.Eventually(t, 20*time.Second, func() error {
			out, err := env.CLI(auditor, "sessions", "list", "--principal", "alice", "-o", "json")
			if err != nil {
				return err
			}
			var res struct {
				Sessions []struct {
					ID       string `json:"id"`
					Commands int    `json:"commands"`
					Denied   int    `json:"denied"`
				} `json:"sessions"`
			}
			if err := json.Unmarshal([]byte(out), &res); err != nil {
				return err
			}
			for _, s := range res.Sessions {
				if s.Commands == 5 && s.Denied == 3 { // the -f script
					id = s.ID
					return nil
				}
			}
			return fmt.Errorf("script session not found yet")
		})
		out, err := env.CLI(auditor, "replay", id)
		require.NoError(t, err, out)
		assert.Contains(t, out, "alice (human) <alice@example.com>")
		assert.Contains(t, out, "SELECT count(*) AS customers FROM customers")
		assert.Contains(t, out, "ALLOW by rule allow-engineer-reads")
		assert.Contains(t, out, "SET ROLE postgres")
		assert.Contains(t, out, "DENY by rule deny-role-changes")
		assert.Contains(t, out, "→ SELECT 1, 1 row(s)")
		assert.Contains(t, out, "5 command(s), 3 denied")
		t.Logf("replay:\n%s", out)
	})
}

func mustMint(t *testing.T, env *devEnv, sub string, ttl time.Duration) string {
	iss := env.Issuer()
	tok, err := iss.Mint(devissuerClaims(sub, ttl))
	require.NoError(t, err)
	return tok
}

// assertClosedPromptly reads until the peer closes c and fails unless it
// does so well before the read deadline: a refusal, not a timeout. It
// returns what the peer sent first.
func assertClosedPromptly(t *testing.T, c net.Conn) []byte {
	t.Helper()
	defer c.Close()
	start := time.Now()
	_ = c.SetReadDeadline(start.Add(10 * time.Second))
	got, err := io.ReadAll(c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the connection was still open after %s (read %q)", time.Since(start).Round(time.Millisecond), got)
	}
	// io.ReadAll turns EOF into nil; a reset is a close too.
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("unexpected read error: %v", err)
	}
	assert.Less(t, time.Since(start), 3*time.Second, "closed promptly")
	return got
}
