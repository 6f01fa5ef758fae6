package shellclass

import (
	"path"
	"slices"
	"strings"

	"mvdan.cc/sh/v3/syntax"
)

// call records one simple command and looks through it: wrappers, nested
// shells, interpreters and the builtins that run code.
func (w *walker) call(args []arg, c ctx) {
	if len(args) == 0 || !w.enter() {
		return
	}
	defer w.leave()
	cmd := Command{
		Argv:    make([]string, len(args)),
		Sudo:    c.sudo,
		Env:     sortedUnique(c.env),
		Via:     slices.Clone(c.via),
		Dynamic: false,
	}
	for i, a := range args {
		cmd.Argv[i] = a.text
		cmd.Dynamic = cmd.Dynamic || a.dynamic
	}
	first := args[0]
	if !first.dynamic && first.text == "" {
		// "" names no program (bash: command not found). Reading it as a
		// word that may vanish lists the next word as a program too, which
		// says more, never less.
		first.dynamic, first.vanish = true, true
		cmd.Dynamic = true
	}
	if first.dynamic {
		// Runtime expansion decides the program. An expansion that may
		// give no word leaves the next word in its place: $EMPTY rm -rf /
		// runs rm.
		w.commands = append(w.commands, cmd)
		w.flag(FlagDynamic)
		if first.vanish {
			w.call(args[1:], c)
		}
		return
	}
	cmd.Program, cmd.Name = first.text, baseName(first.text)
	w.commands = append(w.commands, cmd)
	w.programs.add(cmd.Program, cmd.Name)
	name, rest := cmd.Name, args[1:]
	if sudoPrograms[name] {
		w.flag(FlagSudo)
	}
	if networkPrograms[name] {
		w.flag(FlagNetwork)
	}
	if destructive(name, rest) {
		w.flag(FlagDestructive)
	}
	if spec, ok := wrapperSpec(name, rest); ok {
		w.wrap(name, spec, rest, c)
		return
	}
	if name == "sg" {
		w.sg(rest, c)
		return
	}
	if runners[name] || (name == "ip" && netnsExec(rest)) {
		w.runner(name, rest, c)
		return
	}
	if lang, ok := shells[name]; ok {
		w.shell(lang, rest, c)
		return
	}
	if spec, ok := interpreterSpec(name); ok {
		w.interpreter(spec, rest, c)
		return
	}
	switch name {
	case "eval":
		// eval joins its arguments and runs them as shell code.
		w.flag(FlagDynamic)
		if slices.ContainsFunc(rest, func(a arg) bool { return a.subst }) {
			// eval "$(curl ...)" runs what a command writes.
			w.flag(FlagShell, FlagPipeToShell)
		}
		if len(rest) > 0 && !anyDynamic(rest) {
			w.code(strings.Join(texts(rest), " "), c, syntax.LangBash)
		}
	case "source", ".":
		w.flag(FlagDynamic)
		switch {
		case len(rest) == 0:
		case rest[0].proc:
			w.flag(FlagShell, FlagPipeToShell)
		case !rest[0].dynamic && isStdinPath(rest[0].text):
			// source /dev/stdin runs what standard input carries.
			w.flag(FlagShell)
			w.stdinProgram(c, syntax.LangBash, true)
		}
	case "hash":
		// hash -p file name makes name run file.
		if hasOption(rest, 'p') {
			w.flag(FlagDynamic)
		}
	case "fc":
		// fc runs commands from the history list.
		w.flag(FlagDynamic)
	case "compgen":
		// compgen -C cmd and -F function run them.
		if hasOption(rest, 'F') {
			w.flag(FlagDynamic)
		}
		w.callback(rest, c)
	case "let":
		// Arguments are arithmetic (builtin let x, command let x).
		for _, a := range rest {
			if a.dynamic || hasName(a.text) {
				w.flag(FlagDynamic)
			}
		}
	case "read", "unset", "getopts", "declare", "typeset", "local", "export", "readonly":
		for _, a := range rest {
			if !a.dynamic && declOptions(name, a.text) {
				w.flag(FlagDynamic)
			}
			w.nameArg(a)
		}
	case "mapfile", "readarray":
		// -C runs a callback for every few lines read.
		w.callback(rest, c)
		for _, a := range rest {
			w.nameArg(a)
		}
	case "printf":
		if v, ok := optionValue(rest, 'v', ""); ok {
			w.nameArg(v)
		}
	case "wait":
		if v, ok := optionValue(rest, 'p', ""); ok {
			w.nameArg(v)
		}
	case "test", "[":
		for i, a := range rest {
			if (a.text == "-v" || a.text == "-R") && i+1 < len(rest) {
				w.nameArg(rest[i+1])
			}
		}
	case "alias":
		// An alias is shell code run in place of a command name later.
		w.flag(FlagDynamic)
		for _, a := range rest {
			if _, value, ok := strings.Cut(a.text, "="); ok && !a.dynamic {
				w.code(value, c, syntax.LangBash)
			}
		}
	case "trap":
		w.trap(rest, c)
	case "enable":
		// enable -f loads a builtin from a shared object.
		if hasOption(rest, 'f') {
			w.flag(FlagDynamic)
		}
	case "find":
		w.find(rest, c)
		// -fprint, -fprint0, -fprintf and -fls write to a file.
		for i, a := range rest {
			switch a.text {
			case "-fprint", "-fprint0", "-fprintf", "-fls":
				w.optionWrite(rest, i+1)
			}
		}
	case "sort":
		for i, a := range rest {
			switch {
			case a.text == "-o" || a.text == "--output":
				w.optionWrite(rest, i+1)
			case strings.HasPrefix(a.text, "--output="):
				w.optionWriteText(strings.TrimPrefix(a.text, "--output="), a.dynamic)
			case strings.HasPrefix(a.text, "-o") && len(a.text) > 2 && !strings.HasPrefix(a.text, "--"):
				w.optionWriteText(a.text[2:], a.dynamic)
			case strings.HasPrefix(a.text, "--compress-program"):
				// sort runs it to compress its temporary files.
				w.flag(FlagDynamic)
			}
		}
	case "uniq":
		// uniq [OPTION]... [INPUT [OUTPUT]]: a second operand is written.
		var operands []int
		for i, a := range rest {
			if a.dynamic || !strings.HasPrefix(a.text, "-") || a.text == "-" {
				operands = append(operands, i)
			}
		}
		if len(operands) >= 2 {
			w.optionWrite(rest, operands[1])
		}
	case "tee":
		for i, a := range rest {
			if a.dynamic || !strings.HasPrefix(a.text, "-") {
				w.optionWrite(rest, i)
			}
		}
	case "ssh", "slogin", "scp", "sftp":
		for _, a := range rest {
			// These options run a local command.
			l := strings.ToLower(a.text)
			if strings.Contains(l, "proxycommand") || strings.Contains(l, "localcommand") || strings.Contains(l, "knownhostscommand") {
				w.flag(FlagDynamic)
			}
		}
		if name == "scp" || name == "sftp" {
			if v, ok := optionValue(rest, 'S', ""); ok {
				// -S program runs program for the connection.
				w.call([]arg{v}, withVia(c, name))
			}
		}
	case "rsync":
		if v, ok := optionValue(rest, 'e', "rsh"); ok {
			if v.dynamic {
				w.flag(FlagDynamic)
			} else {
				w.code(v.text, withVia(c, name), syntax.LangBash)
			}
		}
	}
}

// callback handles the -C option of compgen and mapfile: shell code run
// with arguments the line does not show, so the line is dynamic, and the
// code is parsed for what it runs.
func (w *walker) callback(args []arg, c ctx) {
	v, ok := optionValue(args, 'C', "")
	if !ok {
		return
	}
	w.flag(FlagDynamic)
	if !v.dynamic {
		w.code(v.text, c, syntax.LangBash)
	}
}

func baseName(p string) string {
	if p == "" {
		return ""
	}
	b := path.Base(p)
	if b == "/" || b == "." && p != "." {
		return p
	}
	return b
}

func texts(args []arg) []string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = a.text
	}
	return out
}

func anyDynamic(args []arg) bool {
	return slices.ContainsFunc(args, func(a arg) bool { return a.dynamic })
}

func withVia(c ctx, name string) ctx {
	c.via = append(slices.Clone(c.via), name)
	return c
}

// hasOption reports whether a short option letter appears in an option
// cluster before the first operand or --.
func hasOption(args []arg, letter byte) bool {
	for _, a := range args {
		t := a.text
		if a.dynamic || t == "--" || len(t) < 2 || t[0] != '-' {
			return false
		}
		if t[1] != '-' && strings.IndexByte(t[1:], letter) >= 0 {
			return true
		}
	}
	return false
}

// optionValue finds the value of -x value, -xvalue, --long value or
// --long=value anywhere in args.
func optionValue(args []arg, short byte, long string) (arg, bool) {
	for i, a := range args {
		t := a.text
		if a.dynamic {
			continue
		}
		if t == "--" {
			break
		}
		if long != "" {
			if v, ok := strings.CutPrefix(t, "--"+long+"="); ok {
				return arg{text: v}, true
			}
			if t == "--"+long && i+1 < len(args) {
				return args[i+1], true
			}
		}
		if len(t) >= 2 && t[0] == '-' && t[1] == short {
			if len(t) > 2 {
				return arg{text: t[2:]}, true
			}
			if i+1 < len(args) {
				return args[i+1], true
			}
		}
	}
	return arg{}, false
}

// Programs by what they are.
var (
	sudoPrograms = setOf("sudo", "sudoedit", "su", "doas", "pkexec", "runuser", "setpriv", "setuidgid", "chpst")

	networkPrograms = setOf(
		"curl", "wget", "nc", "ncat", "netcat", "socat", "ssh", "slogin", "scp", "sftp",
		"rsync", "telnet", "ftp", "tftp", "lftp", "aria2c", "http", "https", "xh",
	)

	// shells are the shells whose -c text is parsed again, with the
	// grammar used for it.
	shells = map[string]syntax.LangVariant{
		"sh": syntax.LangBash, "bash": syntax.LangBash, "rbash": syntax.LangBash,
		"dash": syntax.LangBash, "ash": syntax.LangBash, "ksh": syntax.LangBash,
		"ksh93": syntax.LangBash, "pdksh": syntax.LangBash, "oksh": syntax.LangBash,
		"yash": syntax.LangBash, "posh": syntax.LangBash, "mksh": syntax.LangMirBSDKorn,
		"zsh": syntax.LangZsh,
		// Shells with another language: their text is not parsed, so
		// whatever they run is dynamic.
		"fish": 0, "csh": 0, "tcsh": 0, "nu": 0, "xonsh": 0, "elvish": 0, "rc": 0,
	}
)

func setOf(names ...string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}

// destructive applies the rules of doc.go to one command.
func destructive(name string, args []arg) bool {
	switch name {
	case "rm":
		for _, a := range args {
			t := a.text
			if t == "--" {
				return false
			}
			if t == "--recursive" {
				return true
			}
			if len(t) > 1 && t[0] == '-' && t[1] != '-' && strings.ContainsAny(t, "rR") {
				return true
			}
		}
	case "dd":
		for _, a := range args {
			if strings.HasPrefix(a.text, "of=") {
				return true
			}
		}
	case "find":
		for _, a := range args {
			if a.text == "-delete" {
				return true
			}
		}
	case "shred", "wipefs", "blkdiscard", "mkswap", "mke2fs", "mkdosfs", "mkntfs", "truncate", "mkfs":
		return true
	default:
		return strings.HasPrefix(name, "mkfs.")
	}
	return false
}

// optionWrite records args[i] as a file the command writes (an option's
// or operand's value), as a redirection to it would be.
func (w *walker) optionWrite(args []arg, i int) {
	if i >= len(args) {
		return
	}
	w.optionWriteText(args[i].text, args[i].dynamic)
}

func (w *walker) optionWriteText(target string, dynamic bool) {
	if !dynamic && (quietWrite[target] || strings.HasPrefix(target, "/dev/fd/")) {
		return
	}
	w.writes.add(target)
	w.flag(FlagWrite)
	if !dynamic && isBlockDevice(target) {
		w.flag(FlagDestructive)
	}
}

// trap's first argument is shell code run on a signal.
func (w *walker) trap(args []arg, c ctx) {
	if len(args) > 0 && args[0].text == "--" {
		args = args[1:]
	}
	if len(args) < 2 {
		return // trap -p, trap -l, trap, trap SIG (reset)
	}
	if args[0].dynamic {
		w.flag(FlagDynamic)
		return
	}
	if strings.HasPrefix(args[0].text, "-") {
		return
	}
	w.code(args[0].text, c, syntax.LangBash)
}

// find runs the command of -exec, -execdir, -ok and -okdir, up to ; or +.
func (w *walker) find(args []arg, c ctx) {
	for i := 0; i < len(args); i++ {
		switch args[i].text {
		case "-exec", "-execdir", "-ok", "-okdir":
		default:
			continue
		}
		w.flag(FlagDynamic)
		j := i + 1
		for j < len(args) && (args[j].dynamic || args[j].text != ";" && args[j].text != "+") {
			j++
		}
		w.call(args[i+1:j], withVia(c, "find"))
		i = j
	}
}

// shell handles a nested shell: bash -c 'text' parses text again; a shell
// reading a script or its standard input runs what the text cannot show.
func (w *walker) shell(lang syntax.LangVariant, args []arg, c ctx) {
	w.flag(FlagShell)
	command, fromStdin := false, false
	i := 0
options:
	for ; i < len(args); i++ {
		a := args[i]
		t := a.text
		switch {
		case a.dynamic:
			break options
		case t == "--" || t == "-":
			i++
			break options
		case strings.HasPrefix(t, "--"):
			if t == "--rcfile" || t == "--init-file" {
				i++
			}
		case len(t) > 1 && (t[0] == '-' || t[0] == '+'):
			for _, ch := range t[1:] {
				switch ch {
				case 'c':
					command = true
				case 's':
					fromStdin = true
				case 'o', 'O':
					i++ // -o pipefail
				}
			}
		default:
			break options
		}
	}
	operands := args[min(i, len(args)):]
	switch {
	case len(operands) == 0 && c.argsFromPipe:
		// xargs sh -c, xargs sh: the text or the script comes from the
		// pipe xargs reads.
		w.flag(FlagDynamic, FlagPipeToShell)
	case command:
		if len(operands) == 0 {
			return // sh -c with no text runs nothing
		}
		if operands[0].subst {
			// sh -c "$(curl ...)" runs what a command writes.
			w.flag(FlagPipeToShell)
		}
		if operands[0].dynamic || lang == 0 {
			w.flag(FlagDynamic)
			return
		}
		w.code(operands[0].text, c, lang)
	case len(operands) > 0 && !fromStdin && !operands[0].dynamic && isStdinPath(operands[0].text):
		// sh /dev/stdin reads its program from standard input.
		w.stdinProgram(c, lang, true)
	case len(operands) > 0 && !fromStdin:
		// A script: its text is in a file (or a pipe, for <(curl ...)).
		w.flag(FlagDynamic)
		if operands[0].proc {
			w.flag(FlagPipeToShell)
		}
	default:
		w.stdinProgram(c, lang, true)
	}
}

// isStdinPath reports whether a file name opens standard input.
func isStdinPath(name string) bool {
	switch name {
	case "/dev/stdin", "/dev/fd/0", "/proc/self/fd/0":
		return true
	}
	return false
}

// stdinProgram handles a shell or an interpreter that reads its program
// from standard input. parse says whether the text is shell code this
// package reads (with lang).
func (w *walker) stdinProgram(c ctx, lang syntax.LangVariant, parse bool) {
	switch c.in {
	case inPipe:
		w.flag(FlagPipeToShell)
		if !c.known {
			w.flag(FlagDynamic)
			return
		}
	case inText:
	case inNone:
		return
	default:
		w.flag(FlagDynamic)
		return
	}
	if !parse {
		return // an interpreter's program text is not analysed
	}
	if lang == 0 {
		w.flag(FlagDynamic)
		return
	}
	text := c.text
	// What the program's own commands read from standard input is the rest
	// of the text, which may be anything.
	c.in, c.text, c.known = inOther, "", false
	w.code(text, c, lang)
}

// runners run a program named in their arguments, behind options this
// package does not read word by word (bwrap --bind src dest, say). What
// they run is not settled by the text: they are flagged dynamic, and the
// command from their first word that is not an option is looked through.
// Those whose options are known are wrappers (wrappers.go).
var runners = map[string]bool{
	"ltrace": true, "valgrind": true, "catchsegv": true, "perf": true, "gdb": true,
	"dbus-launch": true, "firejail": true, "bwrap": true, "proot": true, "systemd-run": true,
	"systemd-nspawn": true, "runcon": true, "numactl": true,
	"eatmydata": true, "nocache": true, "torsocks": true, "proxychains": true, "proxychains4": true,
	"trickle": true, "daemonize": true, "start-stop-daemon": true, "tmux": true, "screen": true,
	"byobu": true, "dtach": true, "abduco": true, "capsh": true,
}

// netnsExec reports whether ip's arguments run a program (ip [options]
// netns exec NAME cmd, ip vrf exec NAME cmd; ip takes any prefix of a
// keyword), or may.
func netnsExec(args []arg) bool {
	for i, a := range args {
		if a.dynamic || isIPExec(args, i) {
			return true
		}
	}
	return false
}

// isIPExec reports whether args[i:] starts with netns exec or vrf exec.
func isIPExec(args []arg, i int) bool {
	a := args[i].text
	if i+1 >= len(args) || args[i+1].text == "" || !strings.HasPrefix("exec", args[i+1].text) {
		return false
	}
	return (len(a) >= 2 && strings.HasPrefix("netns", a)) || (a != "" && strings.HasPrefix("vrf", a))
}

func (w *walker) runner(name string, rest []arg, c ctx) {
	w.flag(FlagDynamic)
	switch name {
	case "ip":
		// ip [-all] netns exec [NAME] cmd, ip vrf exec NAME cmd
		all := slices.ContainsFunc(rest, func(a arg) bool { return a.text == "-all" || a.text == "-a" })
		for i := 0; i+1 < len(rest); i++ {
			if isIPExec(rest, i) {
				skip := i + 3
				if all && strings.HasPrefix("netns", rest[i].text) {
					skip = i + 2 // every namespace: no NAME
				}
				if skip < len(rest) {
					w.call(rest[skip:], c)
				}
				return
			}
		}
		return
	case "capsh":
		// capsh [options] -- ARGS runs bash with ARGS (-c 'cmd').
		w.flag(FlagShell)
		if i := slices.IndexFunc(rest, func(a arg) bool { return a.text == "--" }); i >= 0 {
			w.shell(syntax.LangBash, rest[i+1:], c)
		}
		return
	}
	for i, a := range rest {
		if !a.dynamic && !strings.HasPrefix(a.text, "-") {
			w.call(rest[i:], c)
			return
		}
	}
}

// sg [-] [group [-c] command]: the command runs in a shell (sh -c).
func (w *walker) sg(rest []arg, c ctx) {
	w.flag(FlagShell)
	if len(rest) > 0 && rest[0].text == "-" {
		rest = rest[1:]
	}
	if len(rest) == 0 {
		return // a shell reading standard input
	}
	rest = rest[1:] // the group
	if len(rest) > 0 && rest[0].text == "-c" {
		rest = rest[1:]
	}
	if len(rest) == 0 {
		return
	}
	if anyDynamic(rest) {
		w.flag(FlagDynamic)
		return
	}
	w.code(strings.Join(texts(rest), " "), c, syntax.LangBash)
}
