package shellclass

import (
	"slices"
	"strings"
)

// interp describes how an interpreter is given its program: as text on
// the command line (python -c), as a file or module (python x.py,
// python -m mod), or on standard input.
type interp struct {
	code       string   // short options whose value is program text
	codeLong   []string // long options whose value is program text
	script     string   // short options whose value names a file or module holding the program
	scriptLong []string
	args       string   // short options that take a value
	long       []string // long options that take a value unless written --opt=value
	rest       string   // short options that take the rest of their cluster as value (perl -i.bak)
	inline     bool     // the first operand is the program text (awk)
	fold       bool     // options are single-dash words, matched case-insensitively (pwsh -Command)
}

// interpreters, by name without a version suffix (python3.12 is python).
var interpreters = map[string]interp{
	"python":     {code: "c", script: "m", args: "WX"},
	"pypy":       {code: "c", script: "m", args: "WX"},
	"perl":       {code: "eE", rest: "ilx0MmIdDCV"},
	"ruby":       {code: "e", args: "ICEr", rest: "Fx0Kl"},
	"irb":        {},
	"node":       {code: "ep", codeLong: []string{"eval", "print"}, args: "r", long: []string{"require", "import", "loader", "experimental-loader", "input-type"}},
	"nodejs":     {code: "ep", codeLong: []string{"eval", "print"}, args: "r", long: []string{"require", "import", "loader", "experimental-loader", "input-type"}},
	"deno":       {code: "e", codeLong: []string{"eval"}},
	"bun":        {code: "e", codeLong: []string{"eval", "print"}},
	"php":        {code: "rBER", script: "fF", args: "cdz"},
	"lua":        {code: "e", args: "l"},
	"luajit":     {code: "e", args: "l"},
	"awk":        {code: "e", codeLong: []string{"source"}, script: "f", scriptLong: []string{"file"}, args: "vF", long: []string{"assign", "field-separator"}, inline: true},
	"gawk":       {code: "e", codeLong: []string{"source"}, script: "f", scriptLong: []string{"file"}, args: "vF", long: []string{"assign", "field-separator"}, inline: true},
	"mawk":       {script: "f", args: "vFW", inline: true},
	"nawk":       {script: "f", args: "vF", inline: true},
	"Rscript":    {code: "e"},
	"R":          {code: "e"},
	"julia":      {code: "eE", codeLong: []string{"eval", "print"}},
	"osascript":  {code: "e"},
	"tclsh":      {},
	"wish":       {},
	"expect":     {code: "c"},
	"groovy":     {code: "e"},
	"jshell":     {},
	"guile":      {code: "c"},
	"pwsh":       {fold: true},
	"powershell": {fold: true},
}

// interpreterSpec finds the interpreter called name, ignoring a version
// suffix: python3, python3.12, perl5.36, lua5.4, php8.2.
func interpreterSpec(name string) (interp, bool) {
	if s, ok := interpreters[name]; ok {
		return s, true
	}
	trimmed := strings.TrimRight(name, "0123456789.")
	if trimmed == name || trimmed == "" {
		return interp{}, false
	}
	s, ok := interpreters[trimmed]
	return s, ok
}

// interpreter flags an interpreter and where its program comes from. Its
// program text is never analysed.
func (w *walker) interpreter(p interp, args []arg, c ctx) {
	w.flag(FlagInterpreter)
	if p.fold {
		w.powershell(args, c)
		return
	}
	code, script := false, false
	dynamicCode, substCode, missingCode := false, false, false
	i := 0
	value := func(rest string) (arg, bool) {
		if rest != "" {
			return arg{text: rest}, true
		}
		if i < len(args) {
			i++
			return args[i-1], true
		}
		return arg{}, false
	}
options:
	for i < len(args) {
		a := args[i]
		t := a.text
		switch {
		case a.dynamic || t == "-":
			break options
		case t == "--":
			i++
			break options
		case strings.HasPrefix(t, "--") && len(t) > 2:
			i++
			opt, _, hasValue := strings.Cut(t[2:], "=")
			switch {
			case slices.Contains(p.codeLong, opt):
				code = true
				if !hasValue {
					v, ok := value("")
					dynamicCode = dynamicCode || v.dynamic
					substCode = substCode || v.subst
					missingCode = missingCode || !ok
				}
			case slices.Contains(p.scriptLong, opt):
				script = true
				if !hasValue {
					value("")
				}
			case slices.Contains(p.long, opt) && !hasValue:
				value("")
			}
		case len(t) > 1 && t[0] == '-':
			i++
		cluster:
			for j := 1; j < len(t); j++ {
				ch := t[j]
				switch {
				case strings.IndexByte(p.code, ch) >= 0:
					code = true
					v, ok := value(t[j+1:])
					dynamicCode = dynamicCode || v.dynamic
					substCode = substCode || v.subst
					missingCode = missingCode || !ok
					break cluster
				case strings.IndexByte(p.script, ch) >= 0:
					script = true
					value(t[j+1:])
					break cluster
				case strings.IndexByte(p.args, ch) >= 0:
					value(t[j+1:])
					break cluster
				case strings.IndexByte(p.rest, ch) >= 0:
					break cluster
				}
			}
		default:
			break options
		}
	}
	operands := args[min(i, len(args)):]
	switch {
	case c.argsFromPipe && (code && missingCode || !code && len(operands) == 0):
		// xargs python3 -c: the program comes from the pipe xargs reads.
		w.flag(FlagDynamic, FlagPipeToShell)
	case code:
		if dynamicCode {
			w.flag(FlagDynamic)
		}
		if substCode {
			// python3 -c "$(curl ...)" runs what a command writes.
			w.flag(FlagPipeToShell)
		}
	case script:
		w.flag(FlagDynamic)
	case len(operands) > 0 && operands[0].proc:
		w.flag(FlagPipeToShell, FlagDynamic)
	case len(operands) > 0 && operands[0].dynamic:
		w.flag(FlagDynamic)
	case len(operands) > 0 && isStdinPath(operands[0].text):
		w.stdinProgram(c, 0, false)
	case len(operands) > 0 && operands[0].text != "-":
		if !p.inline {
			w.flag(FlagDynamic) // a script file
		}
	default:
		w.stdinProgram(c, 0, false)
	}
}

// powershell reads pwsh's single-dash options: -Command/-c gives program
// text, anything else (-File, -EncodedCommand, a script, standard input)
// gives a program this package cannot read.
func (w *walker) powershell(args []arg, c ctx) {
	for i, a := range args {
		switch strings.ToLower(a.text) {
		case "-c", "-command", "-commandwithargs", "-cwa":
			if i+1 < len(args) && !args[i+1].dynamic && args[i+1].text != "-" {
				return
			}
			if i+1 < len(args) && args[i+1].text == "-" {
				w.stdinProgram(c, 0, false)
				return
			}
		}
	}
	w.flag(FlagDynamic)
}
