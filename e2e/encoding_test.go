package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"sluice.dev/sluice/libs/testkit"
)

// TestStatementsThatAreNotUTF8: a statement whose bytes are not valid UTF-8
// is refused as PostgreSQL refuses it (22021, naming the bytes), in both
// protocols and through psql; the session goes on (a transaction it was in
// is aborted, as the server would), the attempt is recorded with the bytes
// escaped, and the session's end is recorded. (Such a statement once ended
// the session with a false "audit stream is not accepting records" and left
// it active forever.)
func TestStatementsThatAreNotUTF8(t *testing.T) {
	env := startPG(t)
	eve := env.Token("--sub", "eve", "--groups", "engineers")
	ctx := context.Background()
	direct, err := pgconn.Connect(ctx, env.directDSN(t))
	require.NoError(t, err)
	defer direct.Close(ctx)
	// invalid checks that err is what PostgreSQL itself answers to sql.
	invalid := func(t *testing.T, err error, sql string) {
		t.Helper()
		var pgErr, want *pgconn.PgError
		require.ErrorAs(t, err, &pgErr)
		_, werr := direct.Exec(ctx, sql).ReadAll()
		require.ErrorAs(t, werr, &want)
		assert.Equal(t, "22021", pgErr.Code)
		assert.Equal(t, want.Code, pgErr.Code)
		assert.Equal(t, want.Message, pgErr.Message)
	}

	conn, err := pgconn.Connect(ctx, env.dsn(eve))
	require.NoError(t, err)
	for _, sql := range []string{"SELECT '\xff' AS x", "SELECT 1 /* caf\xc3( */", "SELECT 'abc\xe2\x82'", "SELECT '\xf0\x9f\x98'", "SELECT '\xed\xa0\x80'", "SELECT '\x80'", "SELECT 'ok' -- \xf8"} {
		_, err = conn.Exec(ctx, sql).ReadAll()
		invalid(t, err, sql)
	}
	res, err := conn.Exec(ctx, "SELECT 'still here'").ReadAll()
	require.NoError(t, err)
	assert.Equal(t, "still here", string(res[0].Rows[0][0]))

	// In a transaction: aborted, as by a server error.
	_, err = conn.Exec(ctx, "BEGIN").ReadAll()
	require.NoError(t, err)
	_, err = conn.Exec(ctx, "UPDATE orders SET status = '\xe2\x82' WHERE id = 1").ReadAll()
	invalid(t, err, "UPDATE orders SET status = '\xe2\x82' WHERE id = 1")
	_, err = conn.Exec(ctx, "SELECT 1").ReadAll()
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	assert.Equal(t, "25P02", pgErr.Code)
	_, err = conn.Exec(ctx, "ROLLBACK").ReadAll()
	require.NoError(t, err)

	// The extended protocol: an unnamed and a named statement.
	err = conn.ExecParams(ctx, "SELECT $1::text || '\xfe'", [][]byte{[]byte("a")}, nil, nil, nil).Read().Err
	invalid(t, err, "SELECT 'a' || '\xfe'")
	_, err = conn.Prepare(ctx, "bad", "SELECT '\xc0\xaf'", nil)
	invalid(t, err, "SELECT '\xc0\xaf'")
	res2 := conn.ExecParams(ctx, "SELECT $1::int + 1", [][]byte{[]byte("41")}, nil, nil, nil).Read()
	require.NoError(t, res2.Err)
	assert.Equal(t, "42", string(res2.Rows[0][0]))
	require.NoError(t, conn.Close(ctx))

	// psql, from a file.
	script := filepath.Join(t.TempDir(), "bad.sql")
	require.NoError(t, os.WriteFile(script, []byte("SELECT 'a\xffb';\nSELECT 'after' AS alive;\n"), 0o600))
	out, err := env.psql(t, eve, "", "-f", script)
	require.NoError(t, err, out)
	assert.Contains(t, out, `22021: invalid byte sequence for encoding "UTF8": 0xff`)
	assert.Contains(t, out, "after")

	// A token that is not UTF-8 is a malformed token, not an outage.
	cfg, err := pgconn.ParseConfig(env.dsn("x"))
	require.NoError(t, err)
	cfg.Password = "eyJ\xff.\xfe.x"
	_, err = pgconn.ConnectConfig(ctx, cfg)
	var authErr *pgconn.PgError
	require.ErrorAs(t, err, &authErr)
	assert.Equal(t, "28P01", authErr.Code)
	assert.Contains(t, authErr.Message, "(malformed)")

	// Every session ended and is recorded so; the attempts are in the
	// record, escaped.
	auditor := []string{"SLUICE_TOKEN=" + env.Token("--sub", "audrey", "--groups", "auditors")}
	var ids []string
	testkit.Eventually(t, 20*time.Second, func() error {
		out, err := env.CLI(auditor, "sessions", "list", "--principal", "eve", "-o", "json")
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		var res struct {
			Sessions []struct {
				ID      string     `json:"id"`
				EndedAt *time.Time `json:"ended_at"`
				Denied  int        `json:"denied"`
			} `json:"sessions"`
		}
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			return err
		}
		ids = ids[:0]
		for _, s := range res.Sessions {
			if s.EndedAt == nil {
				return fmt.Errorf("session %s has no recorded end", s.ID)
			}
			ids = append(ids, s.ID)
		}
		if len(ids) != 2 {
			return fmt.Errorf("%d sessions of eve", len(ids))
		}
		return nil
	})
	var replays string
	for _, id := range ids {
		out, err := env.CLI(auditor, "replay", id)
		require.NoError(t, err, out)
		replays += out
	}
	assert.Contains(t, replays, `SELECT '\xff' AS x`)
	assert.Contains(t, replays, `SELECT 'a\xffb'`)
	assert.Contains(t, replays, `SELECT '\xc0\xaf'`)
	assert.Contains(t, replays, "DENY by rule builtin:invalid-encoding")
	out, err = env.CLI(auditor, "audit", "verify")
	require.NoError(t, err, out)
}
