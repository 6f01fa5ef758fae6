package shellclass

import (
	"errors"
	"slices"
)

// Flag marks one property of a command line that a policy may care about.
type Flag string

// Flags. doc.go gives the exact rule behind each one.
const (
	FlagPipeline     Flag = "pipeline"       // | or |&
	FlagList         Flag = "list"           // two statements in sequence: ; & newline && ||
	FlagControl      Flag = "control"        // if, while, until, for, select, case
	FlagSubshell     Flag = "subshell"       // ( ... )
	FlagSubstitution Flag = "substitution"   // $(...), `...`, <(...), >(...)
	FlagExpansion    Flag = "expansion"      // a word needs runtime expansion ($VAR, $(...), glob, ~)
	FlagDynamic      Flag = "dynamic"        // the text does not say what runs
	FlagSudo         Flag = "sudo"           // sudo, sudoedit, su, doas, pkexec, runuser, setpriv, setuidgid, chpst
	FlagShell        Flag = "shell"          // a nested shell runs (bash -c, sh script, su)
	FlagInterpreter  Flag = "interpreter"    // python, perl, ruby, node, awk ... run code not analysed here
	FlagPipeToShell  Flag = "pipe_to_shell"  // a shell or interpreter reads its program from a pipe
	FlagWrite        Flag = "redirect_write" // output redirected to a file
	FlagRead         Flag = "redirect_read"  // input redirected from a file
	FlagBackground   Flag = "background"     // & or coproc
	FlagFunctionDef  Flag = "function_def"   // a shell function is defined
	FlagNetwork      Flag = "network"        // curl, wget, nc, ssh ..., /dev/tcp, /dev/udp
	FlagDestructive  Flag = "destructive"    // rm -r, mkfs, dd of=, shred, truncate, find -delete, block devices
)

// Command is one simple command: a program and its arguments. A wrapper
// (sudo, env, timeout, xargs ...) is a Command, and so is the command it
// runs, which names the wrapper in Via.
type Command struct {
	// Program is the first word after quote removal and escapes, as written
	// ("/bin/rm", "rm"); empty when the word needs runtime expansion.
	Program string
	// Name is Program's base name ("rm").
	Name string
	// Argv holds the words, Program first. A word without runtime
	// expansion appears after quote removal and escapes (and brace
	// expansion, which may turn one word into several); a word that needs
	// runtime expansion appears as written in the source.
	Argv []string
	// Dynamic says that some word of Argv needs runtime expansion.
	Dynamic bool
	// Sudo says that the command runs through sudo, su, doas, pkexec or
	// runuser.
	Sudo bool
	// Env lists the names of the variables assigned for this command
	// (FOO=1 cmd, env FOO=1 cmd, sudo FOO=1 cmd, and those of the wrappers
	// that run it), sorted and unique.
	Env []string
	// Via lists the base names of the wrappers that run this command,
	// outermost first: ["sudo", "env"] for sudo env X=1 rm.
	Via []string
}

// Result is the classification of one command line.
type Result struct {
	// Command is the input, unchanged.
	Command string
	// Programs lists every program the line runs anywhere, builtins and
	// shell functions included, by the name as written and by its base
	// name ("/bin/rm" and "rm"), sorted and unique.
	Programs []string
	// Commands lists every simple command in the order the parser meets
	// them, nested shells' commands included (so it is not unique).
	Commands []Command
	// Writes lists the files that output redirections write (as written
	// when the target needs runtime expansion), sorted and unique; Reads
	// the files that input redirections read. See doc.go for the device
	// files left out.
	Writes []string
	Reads  []string
	// Env lists the names of every variable assigned anywhere: before a
	// command, on its own line, by export/declare/local/readonly, as a for
	// or select variable, or through env and sudo. Sorted and unique.
	Env []string
	// Functions lists the names of the shell functions defined, sorted and
	// unique.
	Functions []string
	// Flags are sorted and unique.
	Flags []Flag
}

// Has reports whether r carries flag f.
func (r Result) Has(f Flag) bool {
	_, ok := slices.BinarySearch(r.Flags, f)
	return ok
}

// Limits. Input beyond them is refused with ErrParse: a parser recurses once
// per nesting level, and a nested shell's command is parsed again, so both
// bound the memory and time one command line can cost.
const (
	// MaxLen is the longest command line accepted, in bytes.
	MaxLen = 64 << 10
	// MaxDepth is the deepest nesting of compound commands, substitutions
	// and expansions accepted; nested shells (bash -c 'bash -c ...') may be
	// at most MaxShellDepth deep.
	MaxDepth      = 100
	MaxShellDepth = 8
)

// Errors returned by Classify.
var (
	// ErrParse: the input is not a complete shell command line (an
	// unterminated quote, a missing fi), a nested shell's command is not,
	// the input holds a NUL byte or invalid UTF-8, or it exceeds a limit.
	ErrParse = errors.New("shellclass: cannot parse")
	// ErrEmpty: the input holds only blanks and comments.
	ErrEmpty = errors.New("shellclass: empty command")
)
