package shellclass

import (
	"strings"

	"mvdan.cc/sh/v3/syntax"
)

// This file finds the places where bash takes code or the choice of a
// program from a variable's value at run time, which the text of the line
// does not show: the variables that decide what runs, and the arithmetic
// that bash evaluates from a variable (x='a[$(rm -rf /)]'; echo $((x))
// runs rm).

// runtimeVar reports whether assigning the variable name changes what a
// later command runs: the command search path, the files and options a
// shell or an interpreter loads at start, the prompts bash expands
// (command substitutions included), the libraries the dynamic loader
// injects, and functions imported from the environment.
func runtimeVar(name string) bool { return RuntimeVar(name) }

// RuntimeVar reports whether a variable in a command's environment changes
// what the command runs (runtimeVar): a worker that sets environment
// variables of a session (SSH env requests) rules on the command with them.
func RuntimeVar(name string) bool {
	if strings.HasPrefix(name, "LD_") || strings.HasPrefix(name, "BASH_FUNC_") {
		return true
	}
	return runtimeVars[name]
}

var runtimeVars = setOf(
	"PATH", "EXECIGNORE", "BASH_ENV", "ENV", "SHELLOPTS", "BASHOPTS", "BASH_LOADABLES_PATH",
	"PS0", "PS1", "PS2", "PS4", "PROMPT_COMMAND",
	"PERL5OPT", "PERL5LIB", "PERLLIB", "RUBYOPT", "RUBYLIB", "NODE_OPTIONS", "NODE_PATH",
	"PYTHONPATH", "PYTHONSTARTUP", "PYTHONHOME",
	// Programs and modules other programs run or load from the environment.
	"GCONV_PATH", "LESSOPEN", "LESSCLOSE", "PAGER", "GIT_PAGER", "MANPAGER", "EDITOR", "VISUAL",
	"GIT_EDITOR", "GIT_SSH", "GIT_SSH_COMMAND", "GIT_EXEC_PATH", "GIT_CONFIG_GLOBAL", "GIT_CONFIG_SYSTEM",
	"JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS",
)

// assign records variables the line assigns; one that decides what runs
// makes the line dynamic.
func (w *walker) assign(names ...string) {
	w.env.add(names...)
	for _, n := range names {
		if runtimeVar(n) {
			w.flag(FlagDynamic)
		}
	}
}

// nameArg checks a word that a builtin takes as a variable name (read x,
// printf -v x, unset x, test -v x): a subscript that is not a plain number
// is evaluated as arithmetic, so a[$(cmd)] runs cmd, and assigning a
// runtime variable decides what later commands run. A name that needs
// runtime expansion could be either.
func (w *walker) nameArg(a arg) {
	if a.dynamic {
		w.flag(FlagDynamic)
		return
	}
	name, sub, hasSub := strings.Cut(a.text, "[")
	if hasSub && evaluatesSubscript(sub) || runtimeVar(name) {
		w.flag(FlagDynamic)
	}
}

// evaluatesSubscript reports whether the text after a name's [ is a
// subscript bash evaluates: anything but digits (with a sign), @ or *.
func evaluatesSubscript(sub string) bool {
	end := strings.LastIndexByte(sub, ']')
	if end < 0 {
		return false // no subscript: not a valid name, the builtin refuses it
	}
	inner := strings.TrimSpace(sub[:end])
	if inner == "@" || inner == "*" {
		return false
	}
	inner = strings.TrimLeft(inner, "+-")
	for i := 0; i < len(inner); i++ {
		if inner[i] < '0' || inner[i] > '9' {
			return true
		}
	}
	return false
}

// arithReads reports whether a word of an arithmetic expression reads a
// variable or an expansion. Bash evaluates a variable's value as an
// expression in its turn, and a[$(cmd)] in that value runs cmd, so such
// arithmetic runs what the line does not show. Numbers start with a digit
// (0x1f, 16#ff); a name starts with a letter or an underscore.
func arithReads(word *syntax.Word) bool {
	for _, part := range word.Parts {
		lit, ok := part.(*syntax.Lit)
		if !ok {
			return true
		}
		if hasName(lit.Value) {
			return true
		}
	}
	return false
}

// hasName reports whether arithmetic text holds a name: a word that starts
// with a letter or an underscore. A word that starts with a digit is a
// number, whose digits may be letters (0x1f, 16#ff, 64#@_).
func hasName(s string) bool {
	for i := 0; i < len(s); {
		ch := s[i]
		switch {
		case ch >= '0' && ch <= '9':
			for i < len(s) && (isNameByte(s[i]) || s[i] == '#' || s[i] == '@') {
				i++
			}
		case isNameByte(ch):
			return true
		default:
			i++
		}
	}
	return false
}

func isNameByte(ch byte) bool {
	return ch == '_' || ch >= '0' && ch <= '9' || ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z'
}

// arithTest reports whether an operator of [[ ]] evaluates its operands as
// arithmetic.
func arithTest(op syntax.BinTestOperator) bool {
	switch op {
	case syntax.TsEql, syntax.TsNeq, syntax.TsLeq, syntax.TsGeq, syntax.TsLss, syntax.TsGtr:
		return true
	}
	return false
}

// declOptions reports whether the options of declare, typeset or local make
// later values arithmetic or names: -i evaluates every value assigned to the
// variable, -n makes it a reference to the variable its value names,
// subscript included.
func declOptions(variant, text string) bool {
	switch variant {
	case "declare", "typeset", "local":
	default:
		return false
	}
	if len(text) < 2 || text[0] != '-' && text[0] != '+' {
		return false
	}
	return strings.ContainsAny(text[1:], "in")
}
