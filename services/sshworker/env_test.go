package sshworker

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"golang.org/x/crypto/ssh"

	"sluice.dev/sluice/libs/shellclass"
)

// The environment a channel set is part of what an exec runs: the
// variables that change what runs are ruled on with the command.
func TestExecIsRuledOnWithItsEnvironment(t *testing.T) {
	env := func(pairs ...string) [][]byte {
		var out [][]byte
		for i := 0; i < len(pairs); i += 2 {
			out = append(out, ssh.Marshal(struct{ Name, Value string }{pairs[i], pairs[i+1]}))
		}
		return out
	}
	assert.Equal(t, "ls", withEnv(env("LANG", "C.UTF-8", "TERM", "xterm"), "ls"), "the locale leaves the command as sent")
	ruled := withEnv(env("LANG", "C", "PATH", "/tmp/evil", "LD_PRELOAD", "/tmp/x.so'; rm -rf /"), "ls")
	assert.Equal(t, `PATH='/tmp/evil' LD_PRELOAD='/tmp/x.so'\''; rm -rf /' ls`, ruled)
	res, err := shellclass.Classify(ruled)
	assert.NoError(t, err)
	assert.Contains(t, res.Flags, shellclass.FlagDynamic)
	assert.Equal(t, []string{"ls"}, res.Programs, "the quoted value runs nothing")

	for name, ok := range map[string]bool{"PATH": true, "LC_ALL": true, "_x1": true, "BASH_FUNC_ls%%": false, "1X": false, "": false, "A-B": false} {
		assert.Equal(t, ok, envName(name), name)
	}
}
