package shellclass

import (
	"errors"
	"strings"

	"mvdan.cc/sh/v3/expand"
	"mvdan.cc/sh/v3/syntax"
)

// arg is one word of a simple command after expansion.
type arg struct {
	// text is the word after quote removal and escapes, or as written in
	// the source when it needs runtime expansion.
	text    string
	dynamic bool
	// vanish: the word may expand to no word at all ($X unquoted, "$@"),
	// so the next word may be the program.
	vanish bool
	// proc: the word is a process substitution, the name of a pipe that a
	// command feeds (<(curl ...)).
	proc bool
	// subst: the word holds a command or process substitution, so its
	// text is what a command writes ("$(curl ...)").
	subst bool
}

// maxBraceFields bounds what one word may turn into by brace expansion; a
// word that would give more is kept as written and counts as dynamic.
const maxBraceFields = 64

// fields evaluates a word without running anything. glob says whether an
// unquoted *, ? or [...] would be expanded as a pathname pattern there (not
// in an assignment's value or a case word).
func (w *walker) fields(word *syntax.Word, glob bool) []arg {
	if word == nil {
		return nil
	}
	if needsExpansion(word, glob) {
		w.flag(FlagExpansion)
		return []arg{{text: w.source(word), dynamic: true, vanish: mayVanish(word), proc: isProc(word), subst: hasSubst(word)}}
	}
	// A word the expander cannot reduce to one field is kept as written,
	// as if it needed runtime expansion.
	asWritten := func() []arg {
		w.flag(FlagExpansion)
		return []arg{{text: w.source(word), dynamic: true}}
	}
	if !glob {
		s, err := literal(word)
		if err != nil {
			return asWritten()
		}
		return []arg{{text: s}}
	}
	// Bash expands {a,b} and {1..3} before anything else: {rm,-rf,/} is
	// rm -rf /. Split a copy: the parse tree stays as the parser made it.
	split := *word
	if !syntax.SplitBraces(&split) {
		s, err := literal(word)
		if err != nil {
			return asWritten()
		}
		return []arg{{text: s}}
	}
	var out []arg
	for bw, err := range expand.BracesSeq(nil, &split) {
		if err != nil || len(out) == maxBraceFields {
			return asWritten()
		}
		s, err := literal(bw)
		if err != nil {
			return asWritten()
		}
		out = append(out, arg{text: s})
	}
	return out
}

// target evaluates the word of a redirection: a file name, or the word as
// written when it needs runtime expansion.
func (w *walker) target(word *syntax.Word) (string, bool) {
	if needsExpansion(word, true) {
		w.flag(FlagExpansion)
		return w.source(word), true
	}
	s, err := literal(word)
	if err != nil {
		return w.source(word), true
	}
	return s, false
}

var errFields = errors.New("word does not give one field")

// literal removes quotes and escapes from a word that needs no runtime
// expansion ($'\x72\x6d' is rm). Callers check needsExpansion first: the
// expander is never given a variable, a substitution, a glob or a tilde.
func literal(word *syntax.Word) (string, error) {
	fs, err := expand.Fields(&expand.Config{NoUnset: true}, word)
	if err != nil {
		return "", err
	}
	if len(fs) != 1 {
		return "", errFields
	}
	return fs[0], nil
}

// document is the text of an unquoted here-document body with no
// expansion in it (backslash escapes removed).
func document(word *syntax.Word) (string, error) {
	return expand.Document(&expand.Config{NoUnset: true}, word)
}

// needsExpansion reports whether the shell must look at its runtime state
// to know what word gives: parameters, substitutions, arithmetic, globs,
// tildes.
func needsExpansion(word *syntax.Word, glob bool) bool {
	for i, part := range word.Parts {
		switch p := part.(type) {
		case *syntax.Lit:
			if glob && hasGlob(p.Value) {
				return true
			}
			if i == 0 && strings.HasPrefix(p.Value, "~") {
				return true
			}
			// Bash also expands a tilde after = and : (PATH=~/bin:~/x,
			// and --dir=~ in arguments that look like assignments).
			if strings.Contains(p.Value, "=~") || strings.Contains(p.Value, ":~") {
				return true
			}
		case *syntax.SglQuoted:
		case *syntax.DblQuoted:
			for _, inner := range p.Parts {
				if _, ok := inner.(*syntax.Lit); !ok {
					return true
				}
			}
		default: // ParamExp, CmdSubst, ArithmExp, ProcSubst, ExtGlob, BraceExp
			return true
		}
	}
	return false
}

// hasGlob reports whether an unquoted literal holds a pathname pattern: an
// unescaped * or ?, or [ with a later ].
func hasGlob(s string) bool {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '*', '?':
			return true
		case '[':
			for j := i + 1; j < len(s); j++ {
				if s[j] == '\\' {
					j++
					continue
				}
				if s[j] == ']' {
					return true
				}
			}
		}
	}
	return false
}

// mayVanish reports whether a word may expand to no word at all: it holds
// nothing but unquoted expansions, or "$@".
func mayVanish(word *syntax.Word) bool {
	for _, part := range word.Parts {
		switch p := part.(type) {
		case *syntax.ParamExp, *syntax.CmdSubst:
		case *syntax.DblQuoted:
			for _, inner := range p.Parts {
				pe, ok := inner.(*syntax.ParamExp)
				if !ok || !allElements(pe) {
					return false
				}
			}
		default:
			return false
		}
	}
	return true
}

// allElements reports whether a parameter expansion is "$@" or
// "${array[@]}", which give no word when empty.
func allElements(pe *syntax.ParamExp) bool {
	if pe.Param != nil && pe.Param.Value == "@" {
		return true
	}
	if idx, ok := pe.Index.(*syntax.Word); ok {
		return idx.Lit() == "@"
	}
	return false
}

// hasSubst reports whether a word holds a command or process substitution
// anywhere (inside quotes, in a ${x:-...} default).
func hasSubst(word *syntax.Word) bool {
	found := false
	syntax.Walk(word, func(n syntax.Node) bool {
		switch n.(type) {
		case *syntax.CmdSubst, *syntax.ProcSubst:
			found = true
		}
		return !found
	})
	return found
}

func isProc(word *syntax.Word) bool {
	if len(word.Parts) != 1 {
		return false
	}
	_, ok := word.Parts[0].(*syntax.ProcSubst)
	return ok
}

// source is a node as written in the text being walked.
func (w *walker) source(n syntax.Node) string {
	start, end := n.Pos(), n.End()
	if start.IsValid() && end.IsValid() {
		s, e := int(start.Offset()), int(end.Offset())
		if 0 <= s && s <= e && e <= len(w.src) {
			return w.src[s:e]
		}
	}
	var b strings.Builder
	if err := syntax.NewPrinter(syntax.SingleLine(true)).Print(&b, n); err != nil {
		return "?"
	}
	return b.String()
}

// word walks the commands a word runs: command and process substitutions,
// at any depth inside quotes and parameter expansions.
func (w *walker) word(word *syntax.Word, c ctx) {
	if word == nil || !w.enter() {
		return
	}
	defer w.leave()
	for _, part := range word.Parts {
		w.wordPart(part, c)
	}
}

func (w *walker) wordPart(part syntax.WordPart, c ctx) {
	switch p := part.(type) {
	case *syntax.DblQuoted:
		for _, inner := range p.Parts {
			w.wordPart(inner, c)
		}
	case *syntax.CmdSubst:
		w.flag(FlagSubstitution)
		w.stmts(p.Stmts, c)
	case *syntax.ProcSubst:
		w.flag(FlagSubstitution)
		if p.Op == syntax.CmdOut {
			// >(cmd): cmd reads what is written to the pipe.
			c.in, c.text, c.known = inPipe, "", false
		}
		w.stmts(p.Stmts, c)
	case *syntax.ParamExp:
		w.paramExp(p, c)
	case *syntax.ArithmExp:
		w.arith(p.X, c)
	case *syntax.BraceExp:
		for _, e := range p.Elems {
			w.word(e, c)
		}
	}
}

func (w *walker) paramExp(p *syntax.ParamExp, c ctx) {
	if !w.enter() {
		return
	}
	defer w.leave()
	switch {
	case p.Excl && p.Names == 0 && p.Index == nil:
		// ${!x} expands the variable x names, and a subscript in that
		// name is evaluated: x='a[$(cmd)]' runs cmd.
		w.flag(FlagDynamic)
	case p.Exp != nil && p.Exp.Op == syntax.OtherParamOps && p.Exp.Word != nil && strings.Contains(p.Exp.Word.Lit(), "P"):
		// ${x@P} expands x as a prompt, command substitutions included.
		w.flag(FlagDynamic)
	case p.Exp != nil && (p.Exp.Op == syntax.AssignUnset || p.Exp.Op == syntax.AssignUnsetOrNull) && p.Param != nil:
		// ${PATH:=...} assigns.
		if runtimeVar(p.Param.Value) {
			w.flag(FlagDynamic)
		}
	}
	if p.NestedParam != nil {
		w.wordPart(p.NestedParam, c)
	}
	if p.Index != nil {
		w.arith(p.Index, c)
	}
	if p.Slice != nil {
		w.arith(p.Slice.Offset, c)
		w.arith(p.Slice.Length, c)
	}
	if p.Repl != nil {
		w.word(p.Repl.Orig, c)
		w.word(p.Repl.With, c)
	}
	if p.Exp != nil {
		w.word(p.Exp.Word, c)
	}
}

func (w *walker) arith(e syntax.ArithmExpr, c ctx) {
	if e == nil || !w.enter() {
		return
	}
	defer w.leave()
	switch x := e.(type) {
	case *syntax.Word:
		if arithReads(x) {
			w.flag(FlagDynamic, FlagExpansion)
		}
		w.word(x, c)
	case *syntax.BinaryArithm:
		w.arith(x.X, c)
		w.arith(x.Y, c)
	case *syntax.UnaryArithm:
		w.arith(x.X, c)
	case *syntax.ParenArithm:
		w.arith(x.X, c)
	case *syntax.FlagsArithm:
		w.arith(x.X, c)
	}
}

func (w *walker) test(e syntax.TestExpr, c ctx) {
	if e == nil || !w.enter() {
		return
	}
	defer w.leave()
	switch x := e.(type) {
	case *syntax.Word:
		w.word(x, c)
	case *syntax.BinaryTest:
		if arithTest(x.Op) && (testReads(x.X) || testReads(x.Y)) {
			// [[ x -eq 1 ]] evaluates x's value as arithmetic.
			w.flag(FlagDynamic, FlagExpansion)
		}
		w.test(x.X, c)
		w.test(x.Y, c)
	case *syntax.UnaryTest:
		if word, ok := x.X.(*syntax.Word); ok && (x.Op == syntax.TsVarSet || x.Op == syntax.TsRefVar) {
			// [[ -v name ]] evaluates a subscript in name.
			w.nameArg(w.fields(word, false)[0])
		}
		w.test(x.X, c)
	case *syntax.ParenTest:
		w.test(x.X, c)
	}
}

// testReads reports whether an operand of an arithmetic [[ ]] comparison
// reads a variable or an expansion.
func testReads(e syntax.TestExpr) bool {
	word, ok := e.(*syntax.Word)
	return !ok || arithReads(word)
}

// hasExpansion reports whether an arithmetic expression reads anything
// but literals.
func hasExpansion(e syntax.ArithmExpr) bool {
	found := false
	syntax.Walk(e, func(n syntax.Node) bool {
		switch x := n.(type) {
		case *syntax.ParamExp, *syntax.CmdSubst, *syntax.ProcSubst, *syntax.ArithmExp:
			found = true
		case *syntax.Lit:
			// A bare name in arithmetic is a variable.
			for _, r := range x.Value {
				if r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' {
					found = true
				}
			}
		}
		return !found
	})
	return found
}
