package shellclass

import (
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"mvdan.cc/sh/v3/syntax"
)

// errInternal wraps a panic recovered during classification; it is an
// ErrParse, so the command is refused, and tests look for it.
var errInternal = fmt.Errorf("%w: internal error", ErrParse)

// Classify parses command as bash would and classifies it. It fails closed:
// input the parser rejects, or that exceeds a limit, is ErrParse, and the
// Result is then empty.
func Classify(command string) (res Result, err error) {
	defer func() {
		if r := recover(); r != nil {
			res, err = Result{}, fmt.Errorf("%w: %v", errInternal, r)
		}
	}()
	if len(command) > MaxLen {
		return Result{}, fmt.Errorf("%w: longer than %d bytes", ErrParse, MaxLen)
	}
	f, err := parse(command, syntax.LangBash)
	if err != nil {
		return Result{}, err
	}
	if len(f.Stmts) == 0 {
		return Result{}, ErrEmpty
	}
	w := newWalker(command)
	w.stmts(f.Stmts, ctx{})
	if w.err != nil {
		return Result{}, w.err
	}
	return w.result(command), nil
}

// parse checks what the parser cannot be trusted with and parses src.
func parse(src string, lang syntax.LangVariant) (*syntax.File, error) {
	if strings.IndexByte(src, 0) >= 0 {
		return nil, fmt.Errorf("%w: NUL byte in input", ErrParse)
	}
	if !utf8.ValidString(src) {
		return nil, fmt.Errorf("%w: input is not valid UTF-8", ErrParse)
	}
	// The parser recurses once per level of nesting, at up to a few KiB of
	// stack each: refuse input whose brackets could nest deeper than the
	// walker accepts before it gets there. The count ignores quoting, so
	// it may refuse unbalanced brackets inside quotes, never the reverse
	// by more than what quoting a closing bracket costs.
	if d := bracketDepth(src); d > 4*MaxDepth {
		return nil, fmt.Errorf("%w: brackets nest deeper than %d", ErrParse, 4*MaxDepth)
	}
	p := syntax.NewParser(syntax.Variant(lang))
	f, err := p.Parse(strings.NewReader(src), "")
	if err != nil {
		// Incomplete input (an unterminated quote, a missing fi) is refused
		// like any other syntax error: the rest may never come.
		return nil, fmt.Errorf("%w: %v", ErrParse, err)
	}
	return f, nil
}

// bracketDepth is the deepest running count of opening brackets, each
// closing bracket taking one off (never below zero).
func bracketDepth(s string) int {
	depth, deepest := 0, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '(', '{', '[':
			depth++
			deepest = max(deepest, depth)
		case ')', '}', ']':
			depth = max(depth-1, 0)
		}
	}
	return deepest
}

// input is where a statement's standard input comes from, which decides
// what a shell or interpreter that reads its program from it runs.
type input int

const (
	inSession input = iota // the SSH channel: whatever the client sends
	inPipe                 // a pipe: the previous command of a pipeline, a process substitution
	inText                 // a here-document or here-string whose text is known
	inOther                // a file, a descriptor, or text that needs runtime expansion
	inNone                 // nothing a program could come from (xargs gives /dev/null)
)

// ctx is what a statement inherits from the statements and wrappers around
// it.
type ctx struct {
	in     input
	text   string   // what standard input carries, when known
	known  bool     // text is known: always for inText, for inPipe when the command before is cat <<EOF or echo
	sudo   bool     // a wrapper runs it as another user
	via    []string // wrappers, outermost first
	env    []string // names assigned by wrappers and prefixes
	shells int      // nested shells around it
	// argsFromPipe: xargs appends words read from a pipe to the command,
	// so a shell's -c text or script, or an interpreter's program, may
	// come from that pipe.
	argsFromPipe bool
}

type walker struct {
	src    string // the text being walked, for words shown as written
	depth  int
	budget int // bytes nested shells may still parse
	err    error

	programs, writes, reads, env, functions set
	flags                                   map[Flag]bool
	commands                                []Command
}

type set map[string]bool

func (s set) add(v ...string) {
	for _, x := range v {
		if x != "" {
			s[x] = true
		}
	}
}

func (s set) sorted() []string {
	out := make([]string, 0, len(s))
	for v := range s {
		out = append(out, v)
	}
	slices.Sort(out)
	return out
}

func newWalker(src string) *walker {
	return &walker{
		src:      src,
		budget:   4 * MaxLen,
		programs: set{}, writes: set{}, reads: set{}, env: set{}, functions: set{},
		flags: map[Flag]bool{},
	}
}

func (w *walker) result(command string) Result {
	flags := make([]Flag, 0, len(w.flags))
	for f := range w.flags {
		flags = append(flags, f)
	}
	slices.Sort(flags)
	return Result{
		Command:   command,
		Programs:  w.programs.sorted(),
		Commands:  w.commands,
		Writes:    w.writes.sorted(),
		Reads:     w.reads.sorted(),
		Env:       w.env.sorted(),
		Functions: w.functions.sorted(),
		Flags:     flags,
	}
}

func (w *walker) flag(f ...Flag) {
	for _, x := range f {
		w.flags[x] = true
	}
}

func (w *walker) fail(format string, args ...any) {
	if w.err == nil {
		w.err = fmt.Errorf("%w: "+format, append([]any{ErrParse}, args...)...)
	}
}

// enter counts one level of nesting; the caller must call leave when it
// returns true.
func (w *walker) enter() bool {
	if w.err != nil {
		return false
	}
	w.depth++
	if w.depth > MaxDepth {
		w.depth--
		w.fail("nesting deeper than %d", MaxDepth)
		return false
	}
	return true
}

func (w *walker) leave() { w.depth-- }

// code parses text as shell code run with c (bash -c, su -c, eval, a
// here-document fed to sh) and walks it.
func (w *walker) code(text string, c ctx, lang syntax.LangVariant) {
	if w.err != nil {
		return
	}
	if c.shells >= MaxShellDepth {
		w.fail("shells nest deeper than %d", MaxShellDepth)
		return
	}
	if w.budget -= len(text); w.budget < 0 {
		w.fail("nested shell commands longer than %d bytes in all", 4*MaxLen)
		return
	}
	f, err := parse(text, lang)
	if err != nil {
		w.fail("nested shell command: %s", strings.TrimPrefix(err.Error(), ErrParse.Error()+": "))
		return
	}
	if lang == syntax.LangZsh {
		// zsh runs code from places this walk does not look at (glob
		// qualifiers such as *(e:...:), =cmd, ${~x}): its commands are
		// listed, but what it runs is not known.
		w.flag(FlagDynamic)
	}
	saved := w.src
	w.src = text
	c.shells++
	c.argsFromPipe = false
	w.stmts(f.Stmts, c)
	w.src = saved
}

func (w *walker) stmts(list []*syntax.Stmt, c ctx) {
	if len(list) > 1 {
		w.flag(FlagList)
	}
	for _, s := range list {
		w.stmt(s, c)
	}
}

func (w *walker) stmt(s *syntax.Stmt, c ctx) {
	if s == nil || !w.enter() {
		return
	}
	defer w.leave()
	if s.Background || s.Coprocess || s.Disown {
		w.flag(FlagBackground)
	}
	for _, r := range s.Redirs {
		w.redirect(r, &c)
	}
	w.command(s.Cmd, c)
}

func (w *walker) command(cmd syntax.Command, c ctx) {
	if cmd == nil || !w.enter() {
		return
	}
	defer w.leave()
	switch x := cmd.(type) {
	case *syntax.CallExpr:
		w.callExpr(x, c)
	case *syntax.BinaryCmd:
		switch x.Op {
		case syntax.Pipe, syntax.PipeAll:
			w.flag(FlagPipeline)
			w.stmt(x.X, c)
			text, known := w.pipeText(x.X, c)
			c.in, c.text, c.known = inPipe, text, known
			w.stmt(x.Y, c)
		default: // && ||
			w.flag(FlagList)
			w.stmt(x.X, c)
			w.stmt(x.Y, c)
		}
	case *syntax.Block:
		w.stmts(x.Stmts, c)
	case *syntax.Subshell:
		w.flag(FlagSubshell)
		w.stmts(x.Stmts, c)
	case *syntax.IfClause:
		w.flag(FlagControl)
		for clause := x; clause != nil; clause = clause.Else {
			w.stmts(clause.Cond, c)
			w.stmts(clause.Then, c)
		}
	case *syntax.WhileClause:
		w.flag(FlagControl)
		w.stmts(x.Cond, c)
		w.stmts(x.Do, c)
	case *syntax.ForClause:
		w.flag(FlagControl)
		switch loop := x.Loop.(type) {
		case *syntax.WordIter:
			if loop.Name != nil {
				w.assign(loop.Name.Value)
			}
			for _, item := range loop.Items {
				w.word(item, c)
				w.fields(item, true)
			}
		case *syntax.CStyleLoop:
			w.arith(loop.Init, c)
			w.arith(loop.Cond, c)
			w.arith(loop.Post, c)
		}
		w.stmts(x.Do, c)
	case *syntax.CaseClause:
		w.flag(FlagControl)
		w.word(x.Word, c)
		w.fields(x.Word, false)
		for _, item := range x.Items {
			for _, p := range item.Patterns {
				w.word(p, c)
			}
			w.stmts(item.Stmts, c)
		}
	case *syntax.FuncDecl:
		w.flag(FlagFunctionDef)
		if x.Name != nil {
			w.functions.add(x.Name.Value)
		}
		for _, n := range x.Names {
			w.functions.add(n.Value)
		}
		w.stmt(x.Body, c)
	case *syntax.ArithmCmd:
		w.arith(x.X, c)
	case *syntax.TestClause:
		w.test(x.X, c)
	case *syntax.DeclClause:
		w.declClause(x, c)
	case *syntax.LetClause:
		argv := []string{"let"}
		dynamic := false
		for _, e := range x.Exprs {
			w.arith(e, c)
			argv = append(argv, w.source(e))
			dynamic = dynamic || hasExpansion(e)
		}
		if dynamic {
			w.flag(FlagExpansion)
		}
		w.builtin("let", argv, dynamic, c)
	case *syntax.TimeClause:
		w.stmt(x.Stmt, c)
	case *syntax.CoprocClause:
		w.flag(FlagBackground)
		if x.Name != nil {
			w.word(x.Name, c)
		}
		w.stmt(x.Stmt, c)
	case *syntax.TestDecl:
		if x.Description != nil {
			w.word(x.Description, c)
		}
		w.stmt(x.Body, c)
	default:
		// A command type this package does not know may run anything.
		w.fail("unknown command type %T", cmd)
	}
}

func (w *walker) callExpr(x *syntax.CallExpr, c ctx) {
	names := w.assigns(x.Assigns, c)
	if len(x.Args) == 0 {
		return
	}
	var args []arg
	for _, word := range x.Args {
		w.word(word, c)
		args = append(args, w.fields(word, true)...)
	}
	c.env = append(slices.Clone(c.env), names...)
	w.call(args, c)
}

// assigns walks NAME=value words and returns the names.
func (w *walker) assigns(list []*syntax.Assign, c ctx) []string {
	var names []string
	for _, a := range list {
		if a.Name != nil {
			names = append(names, a.Name.Value)
		}
		w.assignValue(a, c)
	}
	w.assign(names...)
	return names
}

func (w *walker) assignValue(a *syntax.Assign, c ctx) {
	if a.Index != nil {
		w.arith(a.Index, c)
	}
	if a.Value != nil {
		w.word(a.Value, c)
		w.fields(a.Value, false)
	}
	if a.Array != nil {
		for _, e := range a.Array.Elems {
			if e.Index != nil {
				w.arith(e.Index, c)
			}
			if e.Value != nil {
				w.word(e.Value, c)
				w.fields(e.Value, true)
			}
		}
	}
}

// declClause is export, declare, local, readonly, typeset and nameref: a
// builtin that assigns.
func (w *walker) declClause(x *syntax.DeclClause, c ctx) {
	name := ""
	if x.Variant != nil {
		name = x.Variant.Value
	}
	if name == "nameref" {
		w.flag(FlagDynamic)
	}
	argv := []string{name}
	dynamic := false
	for _, a := range x.Args {
		w.assignValue(a, c)
		switch {
		case a.Name != nil && a.Naked:
			// export PATH assigns nothing.
			w.env.add(a.Name.Value)
		case a.Name != nil:
			w.assign(a.Name.Value)
		case a.Naked && a.Value != nil:
			w.declWord(name, a.Value)
		}
		text, dyn := w.assignText(a)
		argv = append(argv, text)
		dynamic = dynamic || dyn
	}
	w.builtin(name, argv, dynamic, c)
}

// declWord checks a declaration's argument that the parser could not split
// into a name and a value: an option, or a quoted or expanded
// "NAME=value", which bash still assigns.
func (w *walker) declWord(variant string, word *syntax.Word) {
	if needsExpansion(word, false) {
		w.flag(FlagDynamic)
		return
	}
	text, err := literal(word)
	if err != nil {
		w.flag(FlagDynamic)
		return
	}
	if declOptions(variant, text) {
		w.flag(FlagDynamic)
		return
	}
	if strings.HasPrefix(text, "-") || strings.HasPrefix(text, "+") {
		return
	}
	name, _, isAssign := strings.Cut(text, "=")
	if base, _, _ := strings.Cut(name, "["); isAssign && base != "" {
		w.assign(base)
	}
	w.nameArg(arg{text: name})
}

// assignText renders one argument of a declaration as its argv word.
func (w *walker) assignText(a *syntax.Assign) (string, bool) {
	if a.Index != nil || a.Array != nil {
		// x[i]=v and x=(a b): shown as written; the elements were walked.
		dynamic := a.Index != nil
		if a.Array != nil {
			for _, e := range a.Array.Elems {
				dynamic = dynamic || e.Index != nil || e.Value != nil && needsExpansion(e.Value, true)
			}
		}
		if dynamic {
			w.flag(FlagExpansion)
		}
		return w.source(a), dynamic
	}
	var b strings.Builder
	if a.Name != nil {
		b.WriteString(a.Name.Value)
		if a.Naked {
			return b.String(), false
		}
		if a.Append {
			b.WriteString("+=")
		} else {
			b.WriteString("=")
		}
	}
	if a.Value == nil {
		return b.String(), false
	}
	if needsExpansion(a.Value, false) {
		return w.source(a), true
	}
	v, err := literal(a.Value)
	if err != nil {
		return w.source(a), true
	}
	b.WriteString(v)
	return b.String(), false
}

// builtin records a builtin the parser gives its own node (let, export ...).
func (w *walker) builtin(name string, argv []string, dynamic bool, c ctx) {
	w.programs.add(name)
	w.commands = append(w.commands, Command{
		Program: name, Name: name, Argv: argv, Dynamic: dynamic,
		Sudo: c.sudo, Env: sortedUnique(c.env), Via: slices.Clone(c.via),
	})
}

func sortedUnique(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	out := slices.Clone(s)
	slices.Sort(out)
	return slices.Compact(out)
}

// redirect records the files a redirection reads and writes, and updates
// the statement's standard input.
func (w *walker) redirect(r *syntax.Redirect, c *ctx) {
	if r.Word != nil {
		w.word(r.Word, *c)
	}
	if r.Hdoc != nil {
		w.word(r.Hdoc, *c)
	}
	stdin := r.N == nil || r.N.Value == "0"
	switch r.Op {
	case syntax.Hdoc, syntax.DashHdoc:
		if !stdin {
			return
		}
		if text, ok := heredocText(r); ok {
			c.in, c.text, c.known = inText, text, true
		} else {
			w.flag(FlagExpansion)
			c.in, c.text, c.known = inOther, "", false
		}
		return
	case syntax.WordHdoc:
		if !stdin || r.Word == nil {
			return
		}
		if needsExpansion(r.Word, false) {
			w.flag(FlagExpansion)
			c.in, c.text, c.known = inOther, "", false
			return
		}
		text, err := literal(r.Word)
		if err != nil {
			c.in, c.text, c.known = inOther, "", false
			return
		}
		c.in, c.text, c.known = inText, text+"\n", true
		return
	}
	if r.Word == nil {
		return
	}
	if isProc(r.Word) {
		// <(cmd) and >(cmd) name a pipe: the commands are walked, and a
		// shell reading the pipe is fed by a command.
		if stdin && (r.Op == syntax.RdrIn || r.Op == syntax.RdrInOut) {
			c.in, c.text, c.known = inPipe, "", false
		}
		return
	}
	target, dynamic := w.target(r.Word)
	read, write := false, false
	switch r.Op {
	case syntax.RdrIn:
		read = true
	case syntax.RdrInOut:
		read, write = true, true
	case syntax.DplIn, syntax.DplOut:
		// n<&m and n>&m duplicate a descriptor; >&file writes file.
		if !dynamic && isDescriptor(target) {
			return
		}
		if r.Op == syntax.DplIn {
			read = true
		} else {
			write = true
		}
	default: // > >> >| &> &>> and zsh's clobbering variants
		write = true
	}
	if read && stdin {
		c.in, c.text, c.known = inOther, "", false
	}
	if strings.HasPrefix(target, "/dev/tcp/") || strings.HasPrefix(target, "/dev/udp/") {
		w.flag(FlagNetwork)
	}
	if write && !dynamic && isBlockDevice(target) {
		w.flag(FlagDestructive)
	}
	if write && (dynamic || !quietWrite[target] && !strings.HasPrefix(target, "/dev/fd/")) {
		w.writes.add(target)
		w.flag(FlagWrite)
	}
	if read && (dynamic || !quietRead[target] && !strings.HasPrefix(target, "/dev/fd/")) {
		w.reads.add(target)
		w.flag(FlagRead)
	}
}

// heredocText returns the text a here-document feeds; known is false when
// the body needs runtime expansion.
func heredocText(r *syntax.Redirect) (text string, known bool) {
	if r.Hdoc == nil {
		return "", true
	}
	quoted := false
	if r.Word != nil {
		for _, p := range r.Word.Parts {
			switch p := p.(type) {
			case *syntax.SglQuoted, *syntax.DblQuoted:
				quoted = true
			case *syntax.Lit:
				quoted = quoted || strings.Contains(p.Value, `\`)
			}
		}
	}
	if quoted {
		// A quoted delimiter makes the body literal.
		var b strings.Builder
		for _, p := range r.Hdoc.Parts {
			lit, ok := p.(*syntax.Lit)
			if !ok {
				return "", false
			}
			b.WriteString(lit.Value)
		}
		return b.String(), true
	}
	if needsExpansion(r.Hdoc, false) {
		return "", false
	}
	text, err := document(r.Hdoc)
	return text, err == nil
}

// pipeText returns what the left side of a pipe writes, when the text
// shows it: cat (or cat -) of a here-document or here-string, and echo of
// literal words with no option.
func (w *walker) pipeText(s *syntax.Stmt, c ctx) (string, bool) {
	call, ok := s.Cmd.(*syntax.CallExpr)
	if !ok || s.Background || s.Negated || len(call.Assigns) > 0 || len(call.Args) == 0 {
		return "", false
	}
	text, known := c.text, c.known && c.in == inText
	for _, r := range s.Redirs {
		if r.N != nil && r.N.Value != "0" {
			return "", false
		}
		switch r.Op {
		case syntax.Hdoc, syntax.DashHdoc:
			text, known = heredocText(r)
		case syntax.WordHdoc:
			if r.Word == nil || needsExpansion(r.Word, false) {
				return "", false
			}
			v, err := literal(r.Word)
			if err != nil {
				return "", false
			}
			text, known = v+"\n", true
		default:
			return "", false
		}
	}
	words := make([]string, 0, len(call.Args))
	for _, word := range call.Args {
		split := *word
		if needsExpansion(word, true) || syntax.SplitBraces(&split) {
			return "", false
		}
		v, err := literal(word)
		if err != nil {
			return "", false
		}
		words = append(words, v)
	}
	switch words[0] {
	case "cat", "/bin/cat", "/usr/bin/cat":
		if len(words) == 1 || len(words) == 2 && words[1] == "-" {
			return text, known
		}
	case "echo":
		// Some shells' echo turns backslash escapes into other text
		// (dash: \0155 is m), and an option changes what it writes.
		if slices.ContainsFunc(words, func(s string) bool { return strings.Contains(s, `\`) }) {
			return "", false
		}
		if len(words) == 1 || !strings.HasPrefix(words[1], "-") {
			return strings.Join(words[1:], " ") + "\n", true
		}
	}
	return "", false
}

// Device files a redirection may name without reading or writing a file.
var (
	quietWrite = map[string]bool{"/dev/null": true, "/dev/stdout": true, "/dev/stderr": true, "/dev/tty": true}
	quietRead  = map[string]bool{"/dev/null": true, "/dev/stdin": true, "/dev/tty": true, "/dev/zero": true, "/dev/random": true, "/dev/urandom": true}
)

// isDescriptor reports whether the word of n>&word or n<&word names a file
// descriptor (or closes one, with -) rather than a file.
func isDescriptor(s string) bool {
	s = strings.TrimSuffix(s, "-")
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// blockDevices are the prefixes of disk device paths: writing one destroys
// a file system.
var blockDevices = []string{
	"/dev/sd", "/dev/hd", "/dev/vd", "/dev/xvd", "/dev/nvme", "/dev/mmcblk",
	"/dev/dm-", "/dev/md", "/dev/loop", "/dev/mapper/", "/dev/disk/",
}

func isBlockDevice(path string) bool {
	for _, p := range blockDevices {
		if strings.HasPrefix(path, p) {
			return true
		}
	}
	return false
}
