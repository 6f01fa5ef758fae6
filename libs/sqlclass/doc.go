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
// target rows, where:
//
//   - no WHERE clause does not bound (a FROM or USING list does not help);
//   - WHERE CURRENT OF cursor bounds;
//   - e1 AND e2 ... bounds if any operand bounds;
//   - e1 OR e2 ... bounds only if every operand bounds;
//   - any other expression bounds if it contains a column reference that
//     can denote a column of the target: an unqualified column outside any
//     subquery, or a column qualified by the target's alias, name or
//     schema.name at any depth, unless a FROM item of the enclosing
//     subquery takes that same name.
//
// So WHERE true, WHERE 1=1, WHERE 'a'='a', WHERE NOT false, WHERE now() >
// '2000-01-01', WHERE $1, WHERE true OR id = 1 and USING u WHERE u.flag are
// unbounded; WHERE id = 1, WHERE t.id = u.id and a correlated EXISTS are
// bounded. The rule does not prove that a predicate filters anything: WHERE
// id = id and WHERE id IS NULL OR id IS NOT NULL count as bounded. TRUNCATE
// is unbounded by definition. MERGE and INSERT are never unbounded.
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
