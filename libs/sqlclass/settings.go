package sqlclass

import (
	"strconv"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// unknownSettingFlags are assumed when the setting being changed is not
// known (set_config with a computed name, UPDATE pg_settings, RESET ALL).
var unknownSettingFlags = []Flag{
	FlagRoleChange, FlagLexerSetting, FlagSearchPath, FlagReadWriteTx,
	FlagConfigChange, FlagLiteralSensitive,
}

// lexerSettings change how the server scans later input.
var lexerSettings = map[string]bool{
	"standard_conforming_strings": true,
	"client_encoding":             true,
	"backslash_quote":             true,
}

// settingEffect classifies setting a parameter in the current session
// (SET, RESET, set_config). value is the new value, nil for RESET and SET
// ... TO DEFAULT.
func (w *walker) settingEffect(name string, value *pg_query.Node) {
	switch {
	case name == "role" || name == "session_authorization":
		w.a.add(FlagRoleChange)
		w.a.escalate(KindPrivilege)
	case lexerSettings[name]:
		// The value is a literal: cache nothing by fingerprint. Setting
		// the value every session starts with (the PostgreSQL worker's)
		// changes nothing and is not a lexer change.
		switch {
		case value == nil: // RESET, FROM CURRENT
			w.a.add(FlagLexerSetting)
		case sameLexing(name, value):
			w.a.add(FlagLiteralSensitive)
		default:
			w.a.add(FlagLexerSetting, FlagLiteralSensitive)
		}
		w.a.escalate(KindSession)
	case name == "search_path":
		w.a.add(FlagSearchPath)
		w.a.escalate(KindSession)
	case name == "default_transaction_read_only" || name == "transaction_read_only":
		// The value is a literal: cache nothing by fingerprint.
		w.a.add(FlagLiteralSensitive)
		if value == nil || !definitelyTrue(value) {
			w.a.add(FlagReadWriteTx)
		}
		w.a.escalate(KindSession)
	default:
		w.a.escalate(KindSession)
	}
}

// definitelyTrue reports whether a SET value or set_config argument is a
// constant that PostgreSQL's parse_bool reads as true. Anything else,
// including what PostgreSQL would reject, counts as possibly false.
func definitelyTrue(n *pg_query.Node) bool {
	if tc := n.GetTypeCast(); tc != nil && tc.Arg != nil {
		n = tc.Arg
	}
	c := n.GetAConst()
	if c == nil || c.Isnull {
		return false
	}
	switch v := c.Val.(type) {
	case *pg_query.A_Const_Ival:
		return v.Ival.Ival == 1
	case *pg_query.A_Const_Boolval:
		return v.Boolval.Boolval
	case *pg_query.A_Const_Sval:
		s := strings.ToLower(strings.TrimSpace(v.Sval.Sval))
		switch s {
		case "on", "1":
			return true
		}
		return s != "" && (strings.HasPrefix("true", s) || strings.HasPrefix("yes", s))
	}
	return false
}

// sameLexing reports whether setting a lexer setting to value keeps how
// statements are read: standard_conforming_strings on, client_encoding
// UTF8 (as PostgreSQL spells encoding names: any case, punctuation
// ignored). backslash_quote is never taken as unchanged.
func sameLexing(name string, value *pg_query.Node) bool {
	switch name {
	case "standard_conforming_strings":
		return definitelyTrue(value)
	case "client_encoding":
		v, ok := constString(value)
		if !ok {
			return false
		}
		var b strings.Builder
		for _, r := range strings.ToLower(v) {
			if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
				b.WriteRune(r)
			}
		}
		return b.String() == "utf8" || b.String() == "unicode"
	}
	return false
}

// constString returns the value of a string constant, possibly cast.
func constString(n *pg_query.Node) (string, bool) {
	if tc := n.GetTypeCast(); tc != nil && tc.Arg != nil {
		n = tc.Arg
	}
	c := n.GetAConst()
	if c == nil {
		return "", false
	}
	if s, ok := c.Val.(*pg_query.A_Const_Sval); ok {
		return s.Sval.Sval, true
	}
	return "", false
}

// setConfig handles set_config(name, value, is_local): SET as a function.
func (w *walker) setConfig(args []*pg_query.Node) {
	w.a.add(FlagConfigChange, FlagLiteralSensitive, FlagSideEffectFunc)
	w.a.fnFlags |= flagsOf(FlagConfigChange, FlagLiteralSensitive, FlagSideEffectFunc)
	var name string
	ok := false
	if len(args) > 0 {
		name, ok = constString(args[0])
	}
	if !ok {
		w.a.add(unknownSettingFlags...)
		w.a.fnFlags |= flagsOf(unknownSettingFlags...)
		w.a.escalate(KindPrivilege)
		return
	}
	name = strings.ToLower(strings.TrimSpace(name))
	w.a.setSetting(name)
	var value *pg_query.Node
	if len(args) > 1 {
		value = args[1]
	}
	before := w.a.flags
	w.settingEffect(name, value)
	w.a.fnFlags |= w.a.flags &^ before
}

// variableSet handles SET, RESET and SET TRANSACTION. Nested (ALTER SYSTEM,
// ALTER ROLE/DATABASE/FUNCTION ... SET) it changes configuration stored
// elsewhere, not this session.
func (w *walker) variableSet(s *pg_query.VariableSetStmt, root bool) {
	name := strings.ToLower(s.Name)
	if s.Kind == pg_query.VariableSetKind_VAR_RESET_ALL {
		name = "all"
	}
	w.a.setSetting(name)
	if !root {
		w.a.add(FlagConfigChange)
		return
	}
	switch s.Kind {
	case pg_query.VariableSetKind_VAR_RESET_ALL:
		// RESET ALL resets role (where the server allows), the lexer
		// settings, search_path and default_transaction_read_only.
		w.a.add(FlagRoleChange, FlagLexerSetting, FlagSearchPath, FlagReadWriteTx)
		w.a.escalate(KindPrivilege)
		w.cmd(true, "RESET")
		return
	case pg_query.VariableSetKind_VAR_SET_MULTI:
		// SET TRANSACTION ..., SET SESSION CHARACTERISTICS AS TRANSACTION ...
		w.cmd(true, "SET")
		if name == "transaction" || name == "transaction snapshot" {
			w.a.escalate(KindTransaction)
		} else {
			w.a.escalate(KindSession)
		}
		w.transactionOptions(s.Args)
		return
	case pg_query.VariableSetKind_VAR_RESET:
		w.cmd(true, "RESET")
	default:
		w.cmd(true, "SET")
	}
	var value *pg_query.Node
	if s.Kind == pg_query.VariableSetKind_VAR_SET_VALUE && len(s.Args) > 0 {
		value = s.Args[0]
	}
	if s.Kind == pg_query.VariableSetKind_VAR_SET_CURRENT {
		value = nil // the current value: unknown here
	}
	w.settingEffect(name, value)
}

// transactionOptions inspects BEGIN/START TRANSACTION/SET TRANSACTION
// options for READ WRITE. pg_query's fingerprint ignores these options, so
// the statement is always literal_sensitive.
func (w *walker) transactionOptions(opts []*pg_query.Node) {
	w.a.add(FlagLiteralSensitive)
	for _, o := range opts {
		d := o.GetDefElem()
		if d == nil || d.Defname != "transaction_read_only" {
			continue
		}
		if d.Arg == nil || !definitelyTrue(d.Arg) {
			w.a.add(FlagReadWriteTx)
		}
	}
}

// explainAnalyze reports whether EXPLAIN options ask for ANALYZE.
func explainAnalyze(opts []*pg_query.Node) bool { return optionOn(opts, "analyze") }

// optionOn reports whether a statement's options (EXPLAIN's, VACUUM's) turn
// the boolean option name on. Like PostgreSQL's defGetBoolean, no value, 1,
// true and on mean true; unlike it, any value other than 0, false and off
// counts as true (fail closed), and one true occurrence among several wins.
func optionOn(opts []*pg_query.Node, name string) bool {
	for _, o := range opts {
		d := o.GetDefElem()
		if d == nil || !strings.EqualFold(d.Defname, name) {
			continue
		}
		if d.Arg == nil {
			return true
		}
		switch v := d.Arg.Node.(type) {
		case *pg_query.Node_Integer:
			if v.Integer.Ival != 0 {
				return true
			}
		case *pg_query.Node_String_:
			s := strings.ToLower(v.String_.Sval)
			if s != "false" && s != "off" {
				return true
			}
		case *pg_query.Node_Boolean:
			if v.Boolean.Boolval {
				return true
			}
		case *pg_query.Node_Float:
			if f, err := strconv.ParseFloat(v.Float.Fval, 64); err != nil || f != 0 {
				return true
			}
		default:
			return true
		}
	}
	return false
}
