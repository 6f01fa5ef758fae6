// Package shellclass classifies the command line of an SSH exec request the
// way a shell will run it, so that the gateway can rule on every command an
// agent sends.
//
// It owns the mapping from command text to a [Result]: the programs run
// anywhere in the line, each simple [Command] with its argv, the files that
// redirections read and write, the variables assigned, the functions
// defined, and [Flag]s. It does not decide anything: policies do, from the
// classification ([Input] gives the policy's `ssh` variable).
//
// # Invariants
//
//   - The real shell grammar (mvdan.cc/sh, as bash) parses the input, and
//     classification walks the parse tree: nothing here matches keywords or
//     regular expressions against the text. Quotes and escapes are removed
//     as the shell removes them, so r\m, 'r'"m", $'\x72\x6d' and {rm,-rf,/}
//     all run rm.
//   - Fail closed: input the parser rejects or finds incomplete (an
//     unterminated quote, a missing fi), input with a NUL byte or invalid
//     UTF-8, a nested shell's command that does not parse, and input beyond
//     [MaxLen], [MaxDepth] or [MaxShellDepth] return [ErrParse]; input with
//     only blanks and comments returns [ErrEmpty]. A panic is recovered as
//     ErrParse.
//   - When in doubt the classification says more, never less: a program
//     that might run is listed (command -v rm lists rm), a word that the
//     shell expands at run time is dynamic, and a program word that may
//     expand to nothing makes the next word a program too ($EMPTY rm -rf /
//     lists rm). Where bash takes code or the choice of a program from a
//     variable's value (arithmetic on a variable, PATH=..., ${x@P}), the
//     line is dynamic, because the text does not show what runs.
//   - Programs, Writes, Reads, Env, Functions and Flags are sorted and
//     unique; Commands are in the order the parser meets them. Classify is
//     deterministic, and runs nothing: no variable, command substitution,
//     glob or ~user is ever expanded.
//
// # What runs
//
// Programs and Commands cover every simple command anywhere in the line:
// pipelines, ; & && || lists, ( ) subshells, { } blocks, $( ) and ` `
// substitutions (also inside double quotes, ${x:-...} defaults, arithmetic
// and [[ ]]), <( ) and >( ), if/while/until/for/select/case, function
// bodies (at their definition) and function calls (by the function's
// name), coproc, time and !. Builtins count as programs (cd, echo, eval,
// export, let, :).
//
// A program is listed by its name as written after quote removal
// ("/bin/rm", "./x.sh") and by its base name ("rm", "x.sh"). When the
// first word needs runtime expansion ($CMD, $(echo rm), /bin/r?), the
// Command has an empty Program and Name, its Argv starts with the word as
// written, and the line is [FlagDynamic].
//
// Wrappers are seen through: sudo, doas, pkexec, su, runuser, env,
// timeout, nohup, nice, time, command, builtin, exec, xargs (echo when
// given no command), watch, stdbuf, ionice, chroot, setsid, flock, taskset,
// nsenter, unshare, busybox, script. Their options are read as the
// program reads them (sudo -u root, timeout -s KILL 5, env -i X=1), and the
// program they run is a Command of its own with the wrapper in Via, Sudo
// set under sudo/su/doas/pkexec/runuser, and the names assigned by env or
// sudo NAME=value in Env (as env does, any word with an = is an
// assignment: env 'BASH_FUNC_ls%%=() { ... }' is one). Shell code a wrapper runs is parsed like bash -c: su -c, runuser -c,
// flock -c, script -c, env -S, and watch's joined arguments. An expansion
// where a wrapper expects an option or its command makes the line dynamic.
//
// Nested shells (sh, bash, dash, ash, ksh, mksh, yash, posh, zsh, ...) with
// -c have their command text parsed again, up to [MaxShellDepth] levels, and
// its commands join the result; so do the text of eval, alias values, trap
// actions, rsync -e, and a here-document or here-string a shell reads as its
// program (bash <<'EOF' ... EOF), source /dev/stdin, and the callbacks of
// mapfile -C and compgen -C. What a pipe feeds a shell is parsed too when
// the text shows it: cat of a here-document or here-string, or echo of
// literal words with no option and no backslash (echo 'rm -rf /' | sh lists
// rm; dash's echo would turn r\0155 into rm). zsh's text is parsed for the
// programs it names, and the line is dynamic all the same: zsh runs code
// from glob qualifiers (*(e:...:)) and =cmd words this walk does not read.
// fish, csh, tcsh, nu, xonsh, elvish and rc use another language: their
// text is not parsed and the line is dynamic.
//
// The remote command of ssh is not parsed: it runs on another host, under
// its own gateway policy or none; ssh is [FlagNetwork], and a rule that
// wants to look further must match ssh's argv. Interpreters' program text
// (python -c, perl -e, awk '...') is not analysed either.
//
// # Flags
//
// Each flag is set when anything anywhere in the line, nested shells
// included, matches its rule:
//
//   - pipeline: a | or |&.
//   - list: two or more statements in one statement list (separated by ;,
//     & or a newline), or && / ||.
//   - control: if, while, until, for, select or case.
//   - subshell: ( ... ).
//   - substitution: $( ), ` `, <( ) or >( ).
//   - expansion: a word that is a command argument, a redirection target,
//     an assignment value, a for list item, a case word or a here-document
//     needs runtime expansion: a parameter ($X, ${X:-y}, "$@"), a command
//     or process substitution, arithmetic $(( )), an unquoted glob (*, ?,
//     [...], extglob), or an unquoted ~ at the start of a word or after = or
//     :. Such a word makes its Command Dynamic and appears as written in
//     Argv, Writes or Reads.
//   - dynamic: the text does not say what runs: a program word needs
//     runtime expansion or is empty (""); eval, source or ., alias, exec, xargs, find
//     -exec/-execdir/-ok/-okdir, enable -f, hash -p, fc, compgen -C/-F,
//     mapfile or readarray -C; a shell or an interpreter whose program
//     comes from a script file or module, a process substitution, standard
//     input (the SSH channel, a file, a pipe whose text is not shown) or an
//     expanded -c/-e text; zsh or a non-POSIX shell's text; an expansion
//     where a wrapper expects an option or its command; ssh, scp or sftp
//     options that run a local command (ProxyCommand, LocalCommand,
//     KnownHostsCommand). Also where bash takes code or the program from a
//     variable's value: an assignment (before a command, on its own line,
//     by a declaration, env or sudo, a for or select variable, ${X:=...})
//     to PATH, EXECIGNORE, BASH_ENV, ENV, SHELLOPTS, BASHOPTS,
//     BASH_LOADABLES_PATH, PS0, PS1, PS2, PS4, PROMPT_COMMAND, LD_*,
//     BASH_FUNC_*, PERL5OPT, PERL5LIB, PERLLIB, RUBYOPT, RUBYLIB,
//     NODE_OPTIONS, NODE_PATH, PYTHONPATH, PYTHONSTARTUP, PYTHONHOME,
//     GCONV_PATH, LESSOPEN, LESSCLOSE, PAGER, GIT_PAGER, MANPAGER, EDITOR,
//     VISUAL, GIT_EDITOR, GIT_SSH, GIT_SSH_COMMAND, GIT_EXEC_PATH,
//     GIT_CONFIG_GLOBAL, GIT_CONFIG_SYSTEM, JAVA_TOOL_OPTIONS or
//     _JAVA_OPTIONS;
//     arithmetic that reads a variable or an expansion ($((x)), (( )),
//     let, for ((;;)), a subscript, ${x:off:len}, [[ x -eq y ]]), because
//     bash evaluates the value in its turn and x='a[$(cmd)]' runs cmd; a
//     variable name given to read, printf -v, unset, getopts, mapfile,
//     readarray, wait -p, test -v, [[ -v ]] or a declaration with a
//     subscript other than a number, @ or *, or naming one of the variables
//     above, or needing runtime expansion; declare, typeset or local with
//     -i or -n, and nameref; ${!x} and ${x@P}.
//   - sudo: sudo, sudoedit, su, doas, pkexec or runuser runs.
//   - shell: a shell program runs (one of the shells above, with -c, a
//     script or standard input), or a wrapper runs shell code or a shell:
//     su, runuser and script without a command, sudo -s/-i, doas -s, su -c,
//     flock -c, script -c; or the current shell runs code it reads from
//     standard input or a command: source or . of /dev/stdin or a process
//     substitution, eval of a command substitution.
//   - interpreter: python, pypy, perl, ruby, irb, node, deno, bun, php, lua,
//     luajit, awk, gawk, mawk, nawk, Rscript, R, julia, osascript, tclsh,
//     wish, expect, groovy, jshell, guile, pwsh or powershell runs (a
//     version suffix is ignored: python3.12, perl5.36). Its program text is
//     not analysed.
//   - pipe_to_shell: a shell or an interpreter reads its program from a
//     pipe or a command's output: curl x | sh, | bash -s, | python3 -,
//     | bash /dev/stdin, | . /dev/stdin, sh < <(curl x), bash <(curl x),
//     source <(curl x), tee >(sh), bash -c "$(curl x)", eval "$(curl x)",
//     python3 -c "$(curl x)", and | xargs sh -c (or xargs sh, xargs
//     python3 -c) whose words come from a pipe.
//   - redirect_write: an output redirection (>, >>, >|, &>, &>>, <>, >&file)
//     names a file other than /dev/null, /dev/stdout, /dev/stderr, /dev/tty
//     and /dev/fd/N; the file is in Writes.
//   - redirect_read: an input redirection (<, <>, <&file) names a file other
//     than /dev/null, /dev/stdin, /dev/tty, /dev/zero, /dev/random,
//     /dev/urandom and /dev/fd/N; the file is in Reads. Here-documents and
//     here-strings are not reads.
//   - background: a statement ends with &, or coproc.
//   - function_def: a shell function is defined; its name is in Functions.
//   - network: curl, wget, nc, ncat, netcat, socat, ssh, slogin, scp, sftp,
//     rsync, telnet, ftp, tftp, lftp, aria2c, http, https or xh runs, or a
//     redirection names /dev/tcp/... or /dev/udp/....
//   - destructive: rm with -r, -R or --recursive (before --); dd with an
//     of= operand; find with -delete; shred, wipefs, blkdiscard, mkswap,
//     mke2fs, mkdosfs, mkntfs, truncate, mkfs or mkfs.*; an output
//     redirection to a disk device (/dev/sd*, hd*, vd*, xvd*, nvme*,
//     mmcblk*, dm-*, md*, loop*, /dev/mapper/, /dev/disk/). A plain > file,
//     which truncates file, is redirect_write, not destructive.
//
// # Limits
//
// The line is read as bash reads it (the login shell of the target user
// may be another: dash does no brace expansion, zsh splits differently;
// counting bash's expansions can only list more). Aliases defined in the
// target's startup files, functions and variables already in its
// environment, the contents of scripts, and what an expansion gives at run
// time are unknown by nature: the flags above say where they matter. Many
// programs can run others through options this package does not read (git
// -c core.pager, tar --to-command, vim -c, less !, sed's e command,
// systemd-run, parallel, make): a policy that allows such a program allows
// what it may run.
package shellclass
