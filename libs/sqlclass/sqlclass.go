package sqlclass

import (
	"errors"
	"slices"
)

// Kind is the coarse class of one statement. A statement has exactly one
// Kind; when several apply (a SELECT that calls pg_terminate_backend) the
// most privileged one wins, in the order given by [Kind.Rank].
type Kind string

// Kinds, from least to most privileged.
const (
	// KindRead: SELECT, TABLE, VALUES, SHOW, EXPLAIN without ANALYZE,
	// COPY ... TO STDOUT and DECLARE CURSOR over a read, when nothing in the
	// statement is known to write, run dynamic SQL, or reach the server's
	// files, processes, roles or configuration. FlagLock (FOR UPDATE,
	// advisory locks) and FlagSideEffectFunc (pg_sleep, txid_current) may
	// still be set.
	KindRead Kind = "read"
	// KindSession: SET/RESET of settings other than role and session
	// authorization (lexer settings and search_path included, with their
	// flags), DISCARD, LISTEN, UNLISTEN, NOTIFY, pg_notify, set_config of
	// such settings.
	KindSession Kind = "session"
	// KindTransaction: BEGIN, START TRANSACTION, COMMIT, ROLLBACK,
	// SAVEPOINT, RELEASE, SET TRANSACTION, SET CONSTRAINTS, two-phase commit.
	KindTransaction Kind = "transaction"
	// KindUtility: PREPARE's siblings EXECUTE and DEALLOCATE, FETCH, MOVE,
	// CLOSE, DO, CALL, LOCK, and dynamic-SQL functions (dblink, query_to_xml).
	KindUtility Kind = "utility"
	// KindWrite: INSERT, UPDATE, DELETE, MERGE, SELECT INTO, COPY FROM STDIN,
	// REFRESH MATERIALIZED VIEW, a data-modifying CTE, and reads that call a
	// writing function (nextval, setval, lo_create, ...).
	KindWrite Kind = "write"
	// KindDDL: CREATE/ALTER/DROP of schema objects, TRUNCATE, COMMENT,
	// CREATE TABLE AS, CREATE FUNCTION/PROCEDURE.
	KindDDL Kind = "ddl"
	// KindPrivilege: GRANT, REVOKE, roles, SET ROLE, SET SESSION
	// AUTHORIZATION, RESET ROLE, RESET ALL, DISCARD ALL, ALTER DEFAULT
	// PRIVILEGES, REASSIGN/DROP OWNED, ALTER ... OWNER TO, SECURITY LABEL,
	// set_config of role/session_authorization.
	KindPrivilege Kind = "privilege"
	// KindAdmin: ALTER SYSTEM, databases, tablespaces, extensions,
	// languages, LOAD, VACUUM, ANALYZE, CLUSTER, REINDEX, CHECKPOINT,
	// publications, subscriptions, event triggers, server-side COPY to/from a
	// file or program, and file, signal and replication functions.
	KindAdmin Kind = "admin"
)

// Rank orders kinds by privilege: read 0, session and transaction 1,
// utility 2, write 3, ddl 4, privilege 5, admin 6. Unknown kinds rank 6.
func (k Kind) Rank() int {
	switch k {
	case KindRead:
		return 0
	case KindSession, KindTransaction:
		return 1
	case KindUtility:
		return 2
	case KindWrite:
		return 3
	case KindDDL:
		return 4
	case KindPrivilege:
		return 5
	}
	return 6
}

// Flag marks one property of a statement that a policy may care about.
type Flag string

// Flags. See doc.go for the exact rules behind each one.
const (
	FlagUnbounded        Flag = "unbounded"            // UPDATE/DELETE whose WHERE does not bound the target rows; TRUNCATE
	FlagDynamicSQL       Flag = "dynamic_sql"          // DO, CREATE FUNCTION/PROCEDURE, dblink*, query_to_xml & friends
	FlagFileAccess       Flag = "file_access"          // server files: COPY to/from a file, pg_read_file, lo_import, ...
	FlagProgramExec      Flag = "program_exec"         // COPY ... PROGRAM
	FlagBackendSignal    Flag = "backend_signal"       // pg_terminate_backend, pg_cancel_backend, pg_reload_conf, ...
	FlagConfigChange     Flag = "config_change"        // ALTER SYSTEM, set_config, ALTER DATABASE/ROLE/FUNCTION ... SET
	FlagRoleChange       Flag = "role_change"          // SET ROLE, SET SESSION AUTHORIZATION, RESET ROLE, RESET ALL, ...
	FlagRoleManagement   Flag = "role_management"      // roles, GRANT/REVOKE, default privileges, owners
	FlagLexerSetting     Flag = "lexer_setting"        // standard_conforming_strings, client_encoding, backslash_quote
	FlagCTEWrite         Flag = "cte_write"            // a data-modifying statement inside WITH
	FlagSelectInto       Flag = "select_into"          // SELECT INTO, CREATE TABLE AS, CREATE MATERIALIZED VIEW
	FlagExplainAnalyze   Flag = "explain_analyze"      // EXPLAIN ANALYZE: the inner statement runs
	FlagExtension        Flag = "extension"            // extensions, languages, LOAD, C and untrusted-language functions
	FlagDropDatabase     Flag = "drop_database"        // DROP DATABASE
	FlagReplication      Flag = "replication"          // publications, subscriptions, slot and origin functions
	FlagListenNotify     Flag = "listen_notify"        // LISTEN, UNLISTEN, NOTIFY, pg_notify
	FlagCall             Flag = "call"                 // CALL
	FlagReadWriteTx      Flag = "read_write_tx"        // a transaction or session switched (or possibly switched) to read-write
	FlagPrepare          Flag = "prepare"              // PREPARE name AS stmt
	FlagExecute          Flag = "execute"              // EXECUTE name
	FlagDeallocate       Flag = "deallocate"           // DEALLOCATE, DISCARD ALL
	FlagCursor           Flag = "cursor"               // DECLARE, FETCH, MOVE, CLOSE
	FlagTwoPhase         Flag = "two_phase"            // PREPARE TRANSACTION, COMMIT/ROLLBACK PREPARED
	FlagLiteralSensitive Flag = "literal_sensitive"    // QueryFingerprint does not determine the classification
	FlagSideEffectFunc   Flag = "side_effect_function" // a function with a known side effect is called
	FlagSearchPath       Flag = "search_path"          // search_path changes (or may change)
	FlagLock             Flag = "lock"                 // LOCK, SELECT ... FOR UPDATE/SHARE, advisory locks
	FlagOpaqueFunction   Flag = "opaque_function"      // a function whose effects are unknown (user-defined, extension, volatile built-in not known read-only): it may write
	FlagTemporary        Flag = "temporary"            // creates or drops only temporary objects (CREATE TEMP TABLE/VIEW/SEQUENCE, SELECT INTO TEMP, objects in pg_temp)
)

// Statement is the classification of one statement of a SQL string.
type Statement struct {
	Kind    Kind
	Command string // upper-case command name: "SELECT", "DROP TABLE", "SET", ...
	// Reads lists the tables and views read, Writes those written or whose
	// definition changes. Names are as PostgreSQL folds them ("schema.table"
	// when qualified, database qualifier dropped), sorted and unique.
	Reads  []string
	Writes []string
	// Functions lists every function called, "schema.func" when qualified,
	// sorted and unique.
	Functions []string
	Flags     []Flag // sorted and unique
	// Setting is the parameter of SET/RESET/SHOW/ALTER SYSTEM/set_config,
	// lower-cased ("role", "search_path", "all"); empty if unknown.
	Setting string
	// PreparedName is the name given to PREPARE, EXECUTE or DEALLOCATE;
	// empty for DEALLOCATE ALL and DISCARD ALL.
	PreparedName string
	// Cursor is the cursor named by DECLARE, FETCH, MOVE or CLOSE; empty
	// for CLOSE ALL.
	Cursor string
	// Columns lists every column reference, dot-joined and folded as
	// PostgreSQL folds them ("email", "c.email", "c.*", "c" for a whole-row
	// reference by alias), sorted and unique. Masking uses it for lineage:
	// a computed result column may derive from any of them.
	Columns []string
	// Targets gives, for a statement that returns rows (SELECT, VALUES, a
	// set operation, RETURNING, the query of DECLARE, PREPARE or COPY), the
	// sources of each output column in order (see lineage.go: "rel.col",
	// "rel.*" or Unknown, sorted and unique; empty for a value that derives
	// from no column, such as count(*)). It is nil for other statements,
	// and when the columns cannot be lined up (a star over a base table).
	Targets [][]string
	// Sources are every source of every output value (the fallback when
	// Targets is nil).
	Sources []string
	// Copies are the sources of values the statement writes into tables
	// or views, sends as notifications, or passes to functions of unknown
	// effect: under masking, a copy of a masked value is refused.
	Copies []string
	// Inputs are every source any expression reads, WHERE clauses
	// included: an error or notice can echo a value computed anywhere.
	Inputs []string
	// Text is this statement's own text, cut from the input by the
	// parser's statement boundaries and trimmed of surrounding blanks.
	Text string
}

// Has reports whether s carries flag f.
func (s Statement) Has(f Flag) bool {
	_, ok := slices.BinarySearch(s.Flags, f)
	return ok
}

// Result is the classification of a whole SQL string.
type Result struct {
	Statements []Statement
	// Fingerprint is a cache key: a digest of QueryFingerprint and of the
	// classification of every statement (all fields but Text). Strings that
	// differ only in literals share it unless a literal changes the
	// classification, and two strings with equal Fingerprints have equal
	// classifications. 32 hex digits.
	Fingerprint string
	// QueryFingerprint is pg_query's own fingerprint of the whole string
	// (16 hex digits). It ignores literals and more (see doc.go): never cache
	// a decision by it alone.
	QueryFingerprint string
}

// Kinds returns the distinct kinds of r's statements, in statement order.
func (r *Result) Kinds() []Kind {
	var out []Kind
	for _, s := range r.Statements {
		if !slices.Contains(out, s.Kind) {
			out = append(out, s.Kind)
		}
	}
	return out
}

// HasFlag reports whether any statement of r carries flag f.
func (r *Result) HasFlag(f Flag) bool {
	for _, s := range r.Statements {
		if s.Has(f) {
			return true
		}
	}
	return false
}

// Errors returned by Classify.
var (
	// ErrParse: the input is not valid SQL for the PostgreSQL 17 grammar,
	// contains a NUL byte, or is not valid UTF-8.
	ErrParse = errors.New("sqlclass: cannot parse")
	// ErrEmpty: the input holds only comments, blanks and semicolons.
	ErrEmpty = errors.New("sqlclass: empty statement")
)
