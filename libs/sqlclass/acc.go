package sqlclass

import (
	"slices"
	"sort"
	"strings"
)

// allFlags lists every flag in sorted order; a flag's index is its bit in a
// flagSet, so iterating bits yields sorted flags.
var allFlags = func() []Flag {
	fs := []Flag{
		FlagUnbounded, FlagDynamicSQL, FlagFileAccess, FlagProgramExec,
		FlagBackendSignal, FlagConfigChange, FlagRoleChange, FlagRoleManagement,
		FlagLexerSetting, FlagCTEWrite, FlagSelectInto, FlagExplainAnalyze,
		FlagExtension, FlagDropDatabase, FlagReplication, FlagListenNotify,
		FlagCall, FlagReadWriteTx, FlagPrepare, FlagExecute, FlagDeallocate,
		FlagCursor, FlagTwoPhase, FlagLiteralSensitive, FlagSideEffectFunc,
		FlagSearchPath, FlagLock, FlagOpaqueFunction, FlagTemporary,
	}
	slices.Sort(fs)
	return fs
}()

var flagBits = func() map[Flag]flagSet {
	m := make(map[Flag]flagSet, len(allFlags))
	for i, f := range allFlags {
		m[f] = 1 << i
	}
	return m
}()

// flagSet is a set of flags, one bit per entry of allFlags.
type flagSet uint64

func flagsOf(fs ...Flag) flagSet {
	var s flagSet
	for _, f := range fs {
		s |= flagBits[f]
	}
	return s
}

func (s flagSet) list() []Flag {
	if s == 0 {
		return nil
	}
	out := make([]Flag, 0, 4)
	for i, f := range allFlags {
		if s&(1<<i) != 0 {
			out = append(out, f)
		}
	}
	return out
}

// acc accumulates the classification of one top-level statement.
type acc struct {
	kind      Kind
	command   string
	reads     []string
	writes    []string
	functions []string
	flags     flagSet
	// fnFlags are the flags contributed by function calls; EXPLAIN without
	// ANALYZE keeps only these from its inner statement.
	fnFlags  flagSet
	setting  string
	prepared string
	cursor   string
	columns  []string
	// temps are the written relations the statement itself makes
	// temporary (CREATE TEMP ...).
	temps []string
}

// escalate raises the statement's kind to k if k ranks higher.
func (a *acc) escalate(k Kind) {
	if a.kind == "" || k.Rank() > a.kind.Rank() {
		a.kind = k
	}
}

func (a *acc) add(fs ...Flag) { a.flags |= flagsOf(fs...) }

func (a *acc) setSetting(name string) {
	if a.setting == "" {
		a.setting = name
	}
}

// statement finalises the accumulator into a Statement.
func (a *acc) statement(text string) Statement {
	kind := a.kind
	if kind == "" {
		kind = KindAdmin // nothing recognised: fail closed
	}
	writes := sortUnique(a.writes)
	if a.temporary(writes) {
		a.add(FlagTemporary)
	}
	return Statement{
		Kind:         kind,
		Command:      a.command,
		Reads:        sortUnique(a.reads),
		Writes:       writes,
		Functions:    sortUnique(a.functions),
		Flags:        a.flags.list(),
		Setting:      a.setting,
		PreparedName: a.prepared,
		Cursor:       a.cursor,
		Columns:      sortUnique(a.columns),
		Text:         text,
	}
}

// temporaryCommands are the commands that FlagTemporary may mark: they
// create or remove the relation they name and nothing else. (A trigger or
// rule on a temporary table, say, runs code on other objects' behalf: it is
// not marked.)
var temporaryCommands = map[string]bool{
	"CREATE TABLE": true, "CREATE TABLE AS": true, "SELECT INTO": true, "CREATE VIEW": true,
	"CREATE SEQUENCE": true, "DROP TABLE": true, "DROP VIEW": true, "DROP SEQUENCE": true,
}

// temporary reports whether every relation the statement writes is
// temporary: made so by the statement itself, or named in the session's
// temporary schema (pg_temp, pg_temp_N).
func (a *acc) temporary(writes []string) bool {
	if len(writes) == 0 || !temporaryCommands[a.command] {
		return false
	}
	for _, rel := range writes {
		if !slices.Contains(a.temps, rel) && !inTempSchema(rel) {
			return false
		}
	}
	return true
}

func inTempSchema(rel string) bool {
	schema, _, ok := strings.Cut(rel, ".")
	if !ok {
		return false
	}
	if schema == "pg_temp" {
		return true
	}
	n, ok := strings.CutPrefix(schema, "pg_temp_")
	return ok && n != "" && strings.Trim(n, "0123456789") == ""
}

func sortUnique(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	sort.Strings(s)
	return slices.Compact(s)
}
