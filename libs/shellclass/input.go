package shellclass

import (
	"slices"

	policyv1 "sluice.dev/sluice/proto/sluice/policy/v1"
)

// Input is the `ssh` variable a policy rules on for an exec request
// classified as res.
//
// Program and Argv are set only when the line is exactly one simple
// command with no flag and no assignment: a rule written
// `ssh.program == "ls"` must not allow `ls; rm -rf /`, `PATH=/tmp ls` or
// `ls > /etc/passwd`.
func Input(res Result) *policyv1.SSHInput {
	in := &policyv1.SSHInput{
		RequestType: "exec",
		Command:     res.Command,
		Programs:    slices.Clone(res.Programs),
		Writes:      slices.Clone(res.Writes),
		Reads:       slices.Clone(res.Reads),
		Env:         slices.Clone(res.Env),
		Functions:   slices.Clone(res.Functions),
		Flags:       make([]string, len(res.Flags)),
		Commands:    make([]*policyv1.ShellCommand, len(res.Commands)),
	}
	for i, f := range res.Flags {
		in.Flags[i] = string(f)
	}
	for i, c := range res.Commands {
		in.Commands[i] = &policyv1.ShellCommand{
			Program: c.Program,
			Name:    c.Name,
			Argv:    slices.Clone(c.Argv),
			Dynamic: c.Dynamic,
			Sudo:    c.Sudo,
			Env:     slices.Clone(c.Env),
			Via:     slices.Clone(c.Via),
		}
	}
	if len(res.Commands) == 1 && len(res.Flags) == 0 && len(res.Env) == 0 {
		in.Program = res.Commands[0].Name
		in.Argv = slices.Clone(res.Commands[0].Argv)
	}
	return in
}

// ErrorInput is the `ssh` variable for an exec request whose command
// Classify refused: parse_error is set and nothing else is known.
func ErrorInput(command string) *policyv1.SSHInput {
	return &policyv1.SSHInput{RequestType: "exec", Command: command, ParseError: true}
}
