package shellclass

import (
	"slices"
	"strings"

	"mvdan.cc/sh/v3/syntax"
)

// wrapper describes a program that runs another program given on its
// command line, by how its options are read.
type wrapper struct {
	args       string   // short options that take a value (sudo -u root)
	long       []string // long options that take a value unless written --opt=value
	stop       string   // short options after which nothing runs (sudo -l)
	stopLong   []string
	shellOpt   string   // short options whose value is shell code (su -c)
	shellLong  []string // long options whose value is shell code
	splitOpt   string   // short options whose value is split into words run as a command (env -S)
	splitLong  []string
	shellMode  string // short options that make it run a shell (sudo -s)
	literalOpt string // short options that turn off joined (watch -x)
	operands   int    // operands before the command (timeout's duration)
	assigns    bool   // NAME=value words before the command
	dash       bool   // a lone - is an option (env -)
	permute    bool   // options may follow operands, and operands are not a command (su user)
	joined     bool   // the command words are joined by spaces and run with sh -c (watch)
	stdinShell bool   // without a command it runs a shell that reads standard input (su)
	sudo       bool   // runs the command as another user
	dynamic    bool   // what runs is decided at run time (xargs, exec)
	noStdin    bool   // the command's standard input is not the wrapper's (xargs)
	fallback   string // the program run when none is given (xargs: echo)
}

// wrappers are the programs seen through: the program they run is a
// Command of its own, with the wrapper in Via.
var wrappers = map[string]wrapper{
	"sudo": {
		args: "aCcDgpRrTtUu",
		long: []string{"auth-type", "close-from", "chdir", "group", "prompt", "chroot", "role", "type",
			"command-timeout", "other-user", "user", "login-class"},
		stop: "elvKV", stopLong: []string{"edit", "list", "validate", "version", "remove-timestamp", "help"},
		shellMode: "si", assigns: true, sudo: true,
	},
	"doas":   {args: "aCu", shellMode: "s", sudo: true},
	"pkexec": {long: []string{"user"}, stdinShell: true, sudo: true},
	"su":     {args: "gGsw", long: []string{"group", "supp-group", "shell", "whitelist-environment"}, shellOpt: "c", shellLong: []string{"command", "session-command"}, permute: true, stdinShell: true, sudo: true},
	// runuser -u user cmd runs cmd; runuser user [-c cmd] is su.
	"runuser":    {args: "gGsw", long: []string{"group", "supp-group", "shell", "whitelist-environment"}, shellOpt: "c", shellLong: []string{"command", "session-command"}, permute: true, stdinShell: true, sudo: true},
	"runuser -u": {args: "gGsuw", long: []string{"group", "supp-group", "shell", "user", "whitelist-environment"}, shellOpt: "c", shellLong: []string{"command", "session-command"}, sudo: true},
	"env": {
		// -P is BSD env's search path.
		args: "uCaP", long: []string{"unset", "chdir", "argv0"},
		splitOpt: "S", splitLong: []string{"split-string"}, assigns: true, dash: true,
	},
	"timeout": {args: "ks", long: []string{"kill-after", "signal"}, operands: 1},
	"nohup":   {},
	"nice":    {args: "n", long: []string{"adjustment"}},
	"time":    {args: "fo", long: []string{"format", "output"}},
	"command": {},
	"builtin": {},
	"exec":    {args: "a", dynamic: true},
	"xargs": {
		// JRS are BSD xargs' replacement options.
		args:    "adEIJLnPRSs",
		long:    []string{"arg-file", "delimiter", "max-args", "max-procs", "max-chars", "process-slot-var"},
		dynamic: true, noStdin: true, fallback: "echo",
	},
	"watch":   {args: "nq", long: []string{"interval", "equexit"}, literalOpt: "x", joined: true},
	"stdbuf":  {args: "ioe", long: []string{"input", "output", "error"}},
	"ionice":  {args: "cn", long: []string{"class", "classdata"}, stop: "pPu", stopLong: []string{"pid", "pgid", "uid"}},
	"chroot":  {long: []string{"userspec", "groups"}, operands: 1, stdinShell: true},
	"setsid":  {},
	"flock":   {args: "wE", long: []string{"timeout", "conflict-exit-code"}, shellOpt: "c", shellLong: []string{"command"}, operands: 1},
	"taskset": {stop: "p", stopLong: []string{"pid"}, operands: 1},
	"nsenter": {args: "tSG", long: []string{"target", "setuid", "setgid"}, stdinShell: true},
	"unshare": {
		args: "RwSG",
		long: []string{"propagation", "setgroups", "map-user", "map-group", "map-users", "map-groups",
			"root", "wd", "setuid", "setgid", "monotonic", "boottime"},
		stdinShell: true,
	},
	"busybox": {},
	// Programs that set something up and run a command, read option by
	// option. What runs depends on more than the text (a personality, a
	// scheduling class, a tracer), so they count as dynamic too.
	"setarch":          {operands: 1, stopLong: []string{"list"}, dynamic: true},
	"linux32":          {dynamic: true},
	"linux64":          {dynamic: true},
	"i386":             {dynamic: true},
	"x86_64":           {dynamic: true},
	"uname26":          {dynamic: true},
	"chrt":             {args: "TPD", long: []string{"sched-runtime", "sched-period", "sched-deadline"}, stop: "pm", stopLong: []string{"pid", "max"}, operands: 1, dynamic: true},
	"prlimit":          {long: []string{"output"}, stop: "p", stopLong: []string{"pid"}, dynamic: true},
	"setpriv":          {long: []string{"reuid", "regid", "ruid", "euid", "rgid", "egid", "groups", "inh-caps", "ambient-caps", "bounding-set", "securebits", "pdeathsig", "selinux-label", "apparmor-profile", "landlock-access", "landlock-rule", "seccomp-filter"}, stop: "d", stopLong: []string{"dump"}, sudo: true, dynamic: true},
	"choom":            {args: "n", long: []string{"adjust"}, stop: "p", stopLong: []string{"pid"}, dynamic: true},
	"uclampset":        {args: "mM", stop: "p", stopLong: []string{"pid"}, dynamic: true},
	"strace":           {args: "abeIoOpPsSuEX", stop: "p", dynamic: true},
	"ssh-agent":        {args: "aEOPt", stop: "kD", dynamic: true},
	"dbus-run-session": {long: []string{"config-file", "dbus-daemon"}, dynamic: true},
	"cgexec":           {args: "g", dynamic: true},
	"fakeroot":         {args: "lisb", long: []string{"lib", "faked"}, dynamic: true},
	"unbuffer":         {dynamic: true},
	// daemontools and runit: a user, a lock file or limits, then the program.
	"setuidgid": {operands: 1, sudo: true, dynamic: true},
	"envuidgid": {operands: 1, dynamic: true},
	"setlock":   {operands: 1, dynamic: true},
	"softlimit": {args: "mafdsloprtc", dynamic: true},
	"chpst":     {args: "uUe/nlLmdofcprt", sudo: true, dynamic: true},
	"faketime":  {args: "p", operands: 1, dynamic: true},
	"script":    {args: "EIOBTm", long: []string{"echo", "log-in", "log-out", "log-io", "log-timing", "logging-format"}, shellOpt: "c", shellLong: []string{"command"}, permute: true, stdinShell: true},
}

// wrapperSpec returns how to read the options of the wrapper called name.
func wrapperSpec(name string, args []arg) (wrapper, bool) {
	if name == "runuser" && (hasOption(args, 'u') || slices.ContainsFunc(args, func(a arg) bool {
		return a.text == "--user" || strings.HasPrefix(a.text, "--user=")
	})) {
		name = "runuser -u"
	}
	s, ok := wrappers[name]
	return s, ok
}

// wrap reads a wrapper's options and looks at the command it runs.
func (w *walker) wrap(name string, s wrapper, args []arg, c ctx) {
	child := withVia(c, name)
	if s.sudo {
		child.sudo = true
	}
	if s.dynamic {
		w.flag(FlagDynamic)
	}
	if s.noStdin {
		// xargs appends what it reads to the command it runs.
		child.argsFromPipe = c.in == inPipe
		child.in, child.text, child.known = inNone, "", false
	}
	var (
		codes, splits        []arg
		stop, shell, literal bool
		names                []string
		operands             = s.operands
		i                    = 0
	)
	takeValue := func(rest string) (arg, bool) {
		if rest != "" {
			return arg{text: rest}, true
		}
		if i < len(args) {
			i++
			return args[i-1], true
		}
		return arg{}, false
	}
scan:
	for i < len(args) {
		a := args[i]
		t := a.text
		switch {
		case a.dynamic:
			// An expansion where an option, an operand, an assignment or
			// the command may stand: what runs cannot be told. Reading on
			// keeps the next words as candidates.
			w.flag(FlagDynamic)
			if operands > 0 {
				operands--
			}
			i++
		case t == "--":
			i++
			if !s.permute {
				break scan
			}
		case t == "-" && s.dash:
			i++
		case s.assigns && isAssignment(t):
			n, _, _ := strings.Cut(t, "=")
			names = append(names, n)
			i++
		case strings.HasPrefix(t, "--") && len(t) > 2:
			i++
			opt, value, hasValue := strings.Cut(t[2:], "=")
			var v arg
			ok := false
			if hasValue {
				v, ok = arg{text: value}, true
			} else if slices.Contains(s.shellLong, opt) || slices.Contains(s.splitLong, opt) || slices.Contains(s.long, opt) {
				v, ok = takeValue("")
			}
			switch {
			case slices.Contains(s.shellLong, opt) && ok:
				codes = append(codes, v)
			case slices.Contains(s.splitLong, opt) && ok:
				splits = append(splits, v)
			case slices.Contains(s.stopLong, opt):
				stop = true
			}
		case len(t) > 1 && t[0] == '-':
			i++
		cluster:
			for j := 1; j < len(t); j++ {
				ch := t[j]
				switch {
				case strings.IndexByte(s.shellOpt, ch) >= 0:
					if v, ok := takeValue(t[j+1:]); ok {
						codes = append(codes, v)
					}
					break cluster
				case strings.IndexByte(s.splitOpt, ch) >= 0:
					if v, ok := takeValue(t[j+1:]); ok {
						splits = append(splits, v)
					}
					break cluster
				case strings.IndexByte(s.args, ch) >= 0:
					takeValue(t[j+1:])
					break cluster
				case strings.IndexByte(s.stop, ch) >= 0:
					stop = true
				case strings.IndexByte(s.shellMode, ch) >= 0:
					shell = true
				case strings.IndexByte(s.literalOpt, ch) >= 0:
					literal = true
				}
			}
		case operands > 0:
			operands--
			i++
		case s.permute:
			i++
		default:
			break scan
		}
	}
	w.assign(names...)
	child.env = append(child.env, names...)
	for _, code := range codes {
		w.flag(FlagShell)
		if code.dynamic {
			w.flag(FlagDynamic)
			continue
		}
		w.code(code.text, child, syntax.LangBash)
	}
	for _, split := range splits {
		// env -S splits its value into words much as the shell would.
		if split.dynamic {
			w.flag(FlagDynamic)
			continue
		}
		w.code(split.text, child, syntax.LangBash)
	}
	if shell {
		// sudo -s cmd runs cmd through the target user's shell.
		w.flag(FlagShell)
	}
	if stop {
		return
	}
	rest := args[min(i, len(args)):]
	if s.permute {
		rest = nil
	}
	if len(rest) == 0 {
		if s.fallback != "" {
			w.call([]arg{{text: s.fallback}}, child)
		}
		if shell || s.stdinShell && len(codes) == 0 {
			w.flag(FlagShell)
			w.stdinProgram(child, syntax.LangBash, true)
		}
		return
	}
	if s.joined && !literal {
		if !anyDynamic(rest) {
			w.code(strings.Join(texts(rest), " "), child, syntax.LangBash)
			return
		}
		w.flag(FlagDynamic)
	}
	w.call(rest, child)
}

// isAssignment reports whether a wrapper reads a word as NAME=value. env
// takes any word with an =, whether or not the name is one the shell
// accepts: env 'BASH_FUNC_ls%%=() { ...; }' is an assignment, and bash
// imports it as a function. sudo may refuse a word that starts with =; then
// that word is a program that does not exist, and reading it as an
// assignment lists the next word as the program, which says more.
func isAssignment(t string) bool {
	return strings.Contains(t, "=")
}
