package sqlclass

import (
	"slices"
	"sort"
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
		FlagSearchPath, FlagLock, FlagOpaqueFunction,
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
	return Statement{
		Kind:         kind,
		Command:      a.command,
		Reads:        sortUnique(a.reads),
		Writes:       sortUnique(a.writes),
		Functions:    sortUnique(a.functions),
		Flags:        a.flags.list(),
		Setting:      a.setting,
		PreparedName: a.prepared,
		Cursor:       a.cursor,
		Columns:      sortUnique(a.columns),
		Text:         text,
	}
}

func sortUnique(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	sort.Strings(s)
	return slices.Compact(s)
}
