// Package sqlclass classifies SQL the way PostgreSQL will execute it, so that
// the gateway can rule on every statement an agent sends.
//
// It owns the mapping from SQL text to a [Result]: one [Statement] per
// statement with its [Kind], command name, tables read and written,
// functions called, [Flag]s, and a cache key. It does not decide anything:
// policies do, from the classification.
//
// # Invariants
//
//   - The real PostgreSQL 17 grammar (pg_query_go, libpg_query) parses the
//     input; classification walks the parse tree. Nothing here matches
//     keywords or regular expressions against SQL text, so comments inside
//     statements, nested block comments, dollar quoting, E” strings,
//     U&"" identifiers and quoted identifiers are read as the server reads
//     them (with standard_conforming_strings on and a UTF-8 client
//     encoding: see FlagLexerSetting).
//   - Fail closed: input the parser rejects, input with a NUL byte and input
//     that is not valid UTF-8 return [ErrParse]; input with no statement
//     returns [ErrEmpty]. A statement type this package does not know is
//     [KindAdmin].
//   - When in doubt the classification is the more dangerous one: an
//     unknown set_config name gets every setting flag, an EXPLAIN ANALYZE
//     option that is not plainly false counts as true, RESET ALL and DISCARD
//     ALL count as role changes.
//   - A statement's Kind is the most privileged of what it does, in
//     [Kind.Rank] order: a SELECT calling pg_terminate_backend is
//     [KindAdmin], one calling nextval is [KindWrite], one with a
//     DELETE in a CTE is [KindWrite]. KindRead therefore means "no known
//     side effect", never "starts with SELECT".
//   - Reads, Writes, Functions and Flags are sorted and unique; Classify is
//     deterministic.
//
// # Names
//
// Table names are as PostgreSQL folds them: unquoted identifiers lower-case,
// quoted ones as written, "schema.table" when the statement qualifies the
// name and "table" when it does not (so "customers" and "public.customers"
// are different strings: a policy must match both, and FlagSearchPath warns
// that the unqualified one may resolve elsewhere). A database qualifier is
// dropped. The name of a CTE in scope is not a table; a CTE shadows a table
// only inside the statement that defines it. Function names follow the same
// rules; the pg_catalog prefix that the parser adds to SQL-syntax functions
// (EXTRACT, SUBSTRING ... FROM) is dropped. Known side-effect functions are
// matched by their last name part, case-insensitively, whatever the schema.
//
// Writes holds INSERT/UPDATE/DELETE/MERGE targets, SELECT INTO and CREATE
// TABLE AS targets, COPY FROM targets, and tables whose definition or
// access the statement changes: TRUNCATE, CREATE/ALTER/DROP of tables,
// views, indexes and sequences, the table of CREATE INDEX and of a trigger,
// rule or policy, COMMENT ON, SECURITY LABEL, GRANT/REVOKE on tables, VACUUM,
// ANALYZE, CLUSTER, REINDEX, REFRESH MATERIALIZED VIEW. LOCK TABLE's
// tables are Reads. Views, rules, triggers, defaults and SECURITY DEFINER
// functions hide further tables and effects: the classification names only
// what the statement itself names.
//
// # The unbounded rule
//
// An UPDATE or DELETE is [FlagUnbounded] unless its WHERE clause bounds the
// target rows; a MERGE with a WHEN MATCHED THEN UPDATE or DELETE is unless
// its ON condition does. A bound must name a constant or a parameter:
//
//   - no WHERE clause does not bound (a FROM or USING list does not help);
//   - WHERE CURRENT OF cursor bounds;
//   - e1 AND e2 ... bounds if any operand bounds; e1 OR e2 ... only if every
//     operand bounds; NOT e never does (the complement of a part is all but
//     that part);
//   - a comparison (=, <, >, <=, >=, LIKE, ILIKE, ~, IN, = ANY, BETWEEN, IS
//     NOT DISTINCT FROM) bounds when one side refers to the target and the
//     other does not but holds a constant or a parameter: id = 1,
//     email = lower($1), created_at < now() - '1 day', id IN (SELECT id
//     FROM u WHERE u.state = 'x'). The other comparisons (<>, NOT IN, NOT
//     LIKE, IS DISTINCT FROM) do not;
//   - EXISTS (subquery) bounds when it is correlated with the target and
//     its WHERE holds a constant or a parameter;
//   - any other predicate bounds when it refers to the target and holds a
//     constant or a parameter; a bare column, IS NULL and IS TRUE do not;
//   - in a MERGE, the columns of a source of explicit rows (VALUES, or a
//     SELECT with no FROM) count as constants.
//
// So WHERE true, WHERE 1=1, WHERE id = id, WHERE lower(a) = lower(a), WHERE
// id = id + 0, WHERE a = b, WHERE t.id = u.id (u may hold every id), WHERE
// archived, WHERE NOT (id = 1), WHERE id <> 1 and MERGE ... ON true are
// unbounded; WHERE id = 1, WHERE t.id = u.id AND t.state = 'done' and MERGE
// ... USING (VALUES ($1, $2)) s(id, v) ON t.id = s.id are bounded. The rule
// is syntactic: WHERE id > 0 counts as bounded. TRUNCATE is unbounded by
// definition; INSERT never is.
//
// # Statements inside statements
//
//   - A data-modifying statement in a WITH clause, at any depth, makes the
//     statement [KindWrite] with [FlagCTEWrite] and its targets in Writes.
//   - EXPLAIN ANALYZE (any spelling: ANALYZE, ANALYSE, (ANALYZE), (ANALYZE
//     true|on|1)) is the inner statement plus [FlagExplainAnalyze]. Plain
//     EXPLAIN is [KindRead] with the inner statement's reads and functions
//     and the flags its function calls carry, but not its writes.
//   - PREPARE is the inner statement plus [FlagPrepare] and PreparedName;
//     DECLARE CURSOR is the inner query plus [FlagCursor] and Cursor;
//     COPY (query) TO is the query (which may be DELETE ... RETURNING).
//   - EXECUTE is [KindUtility] with [FlagExecute] and PreparedName: the
//     caller must look the name up in what it recorded for the session.
//     FETCH/MOVE/CLOSE carry Cursor the same way.
//   - DO blocks and function bodies are not analysed: [FlagDynamicSQL]. A
//     SQL-standard body (BEGIN ATOMIC, RETURN) is walked for its tables and
//     calls. C and untrusted-language functions and DO blocks are
//     [KindAdmin] with [FlagExtension].
//
// # Fingerprints
//
// pg_query's fingerprint (Result.QueryFingerprint) ignores literal values,
// but also: aliases, the names of prepared statements, cursors and NOTIFY
// channels, every option of BEGIN/START TRANSACTION (READ WRITE included),
// of CREATE FUNCTION (LANGUAGE, SECURITY DEFINER, body) and of DO, the
// type of a cast constant, runs of two or more digits in table names (t01
// = t99), the names of temporary tables, and everything below node depth
// 100; it also sorts and de-duplicates some lists. Result.Fingerprint therefore
// digests QueryFingerprint together with the whole classification: equal
// Fingerprints mean equal classifications, and it is the key to cache
// decisions by. [FlagLiteralSensitive] marks statements whose
// classification QueryFingerprint does not determine (a literal decides it,
// or one of the cases above applies); a decision for them must not be
// cached by QueryFingerprint, and should not be cached at all if the policy
// looks at anything beyond the classification (a set_config value, a file
// path).
package sqlclass
