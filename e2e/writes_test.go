package e2e

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestWritesThatLookLikeReadsOrBounded: a call of a function that is not
// known to be read-only may write (SELECT wipe() emptied a table), and a
// WHERE or ON that holds no constant or parameter bounds nothing (MERGE ...
// ON true, WHERE id = id). Both are held under the default policy, in both
// protocols; what is really bounded still runs.
func TestWritesThatLookLikeReadsOrBounded(t *testing.T) {
	env := startPG(t) // held statements give up after 2 s: nobody approves
	for _, q := range []string{
		"CREATE TABLE scratch (id int PRIMARY KEY, v text)",
		"INSERT INTO scratch SELECT i, 'v' || i FROM generate_series(1, 10) i",
		"CREATE FUNCTION wipe() RETURNS void LANGUAGE sql AS 'DELETE FROM scratch'",
		"CREATE FUNCTION report() RETURNS bigint LANGUAGE sql STABLE AS 'SELECT count(*) FROM scratch'",
		"GRANT ALL ON scratch TO sluice_gateway",
	} {
		out, err := timedCommand(t, "psql", env.directDSN(t), "-v", "ON_ERROR_STOP=1", "-c", q).CombinedOutput()
		require.NoError(t, err, string(out))
	}
	bot := env.Token("--sub", "etl-bot", "--groups", "engineers", "--machine")
	alice := env.Token("--sub", "alice", "--groups", "engineers")
	count := func() string {
		out, err := timedCommand(t, "psql", env.directDSN(t), "-Atc", "SELECT count(*) FROM scratch").CombinedOutput()
		require.NoError(t, err, string(out))
		return strings.TrimSpace(string(out))
	}
	held := func(t *testing.T, token, sql, rule string) {
		t.Helper()
		out, err := env.psql(t, token, "", "-c", sql)
		require.Error(t, err, out)
		assert.Contains(t, out, "held for approval", sql)
		assert.Contains(t, out, rule, sql)
		assert.Equal(t, "10", count(), "%s ran", sql)
	}

	t.Run("a machine's call of a function that may write is held", func(t *testing.T) {
		for _, sql := range []string{"SELECT wipe()", "SELECT public.wipe()", "SELECT 1 FROM scratch WHERE wipe() IS NULL", "SELECT * FROM wipe()"} {
			held(t, bot, sql, "review-machine-writes")
		}
		// And over the extended protocol (pgx, parameters).
		out, err := env.psql(t, bot, "", "-c", "PREPARE w AS SELECT wipe()", "-c", "EXECUTE w")
		require.Error(t, err, out)
		assert.Contains(t, out, "held for approval")
		assert.Equal(t, "10", count())
		res, err := env.CLI([]string{"SLUICE_TOKEN=" + env.Token("--sub", "audrey", "--groups", "auditors")},
			"policy", "test", "-v", "--sub", "etl-bot", "--groups", "engineers", "--machine", "--target", "demo", "-o", "json", "SELECT report()")
		require.NoError(t, err, res)
		assert.Contains(t, res, `"opaque_function"`, "visible to CEL as a flag")
		assert.Contains(t, res, `"kind": "write"`)
	})

	t.Run("bounds that bound nothing are held", func(t *testing.T) {
		for _, sql := range []string{
			"MERGE INTO scratch t USING (SELECT 1) s ON true WHEN MATCHED THEN DELETE",
			"MERGE INTO scratch t USING (SELECT 1 AS one) s ON t.id = t.id WHEN MATCHED THEN UPDATE SET v = 'x'",
			"MERGE INTO scratch t USING scratch s ON t.id = s.id WHEN MATCHED THEN DELETE",
			"DELETE FROM scratch WHERE id = id",
			"DELETE FROM scratch WHERE lower(v) = lower(v)",
			"UPDATE scratch SET v = 'x' WHERE id = id + 0",
			"DELETE FROM scratch WHERE v IS NOT NULL",
			"DELETE FROM scratch WHERE NOT (id = 1)",
			"DELETE FROM scratch WHERE id <> 1",
			"DELETE FROM scratch s USING scratch u WHERE s.id = u.id",
			"WITH d AS (DELETE FROM scratch WHERE id = id RETURNING *) SELECT count(*) FROM d",
		} {
			held(t, alice, sql, "review-unbounded-writes")
		}
	})

	t.Run("bounded writes still run", func(t *testing.T) {
		for _, sql := range []string{
			"DELETE FROM scratch WHERE id = 10",
			"UPDATE scratch SET v = 'y' WHERE id IN (1, 2)",
			"MERGE INTO scratch t USING (VALUES (3, 'z')) s(id, v) ON t.id = s.id WHEN MATCHED THEN UPDATE SET v = s.v",
		} {
			out, err := env.psql(t, alice, "", "-c", sql)
			require.NoError(t, err, "%s: %s", sql, out)
		}
		assert.Equal(t, "9", count())
	})
}
