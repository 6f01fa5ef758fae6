package e2e

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"

	"sluice.dev/sluice/libs/testkit"
)

// sshUser is a principal logged in with `sluice ssh login`.
type sshUser struct {
	t      *testing.T
	env    *devEnv
	dir    string
	token  []string
	config string
}

func sshLogin(t *testing.T, env *devEnv, tokenArgs ...string) *sshUser {
	t.Helper()
	u := &sshUser{t: t, env: env, dir: t.TempDir(), token: []string{"SLUICE_TOKEN=" + env.Token(tokenArgs...)}}
	out, err := env.CLI(u.token, "ssh", "login", "--dir", u.dir)
	require.NoError(t, err, out)
	require.Contains(t, out, "demo-ssh")
	u.config = filepath.Join(u.dir, "config")
	return u
}

// run runs an OpenSSH client (ssh, scp, sftp) with the user's ssh_config and
// returns stdout, stderr and the exit status.
func (u *sshUser) run(timeout time.Duration, stdin string, tool string, args ...string) (string, string, int) {
	u.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, tool, append([]string{"-F", u.config, "-o", "BatchMode=yes"}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		u.t.Fatalf("%s: %v", tool, err)
	}
	return stdout.String(), stderr.String(), code
}

func (u *sshUser) exec(command string) (string, string, int) {
	u.t.Helper()
	return u.run(60*time.Second, "", "ssh", "demo-ssh", command)
}

// TestSSH drives the SSH worker with the real OpenSSH clients against a real
// sshd (sluice dev's demo target).
func TestSSH(t *testing.T) {
	requireTool(t, "ssh", "scp", "sftp", "sshd")
	env := startDev(t, devOptions{extra: []string{"--hold-timeout", "30s"}})
	alice := sshLogin(t, env, "--sub", "alice", "--groups", "engineers")
	bob := []string{"SLUICE_TOKEN=" + env.Token("--sub", "bob", "--groups", "approvers")}
	auditor := []string{"SLUICE_TOKEN=" + env.Token("--sub", "audrey", "--groups", "auditors")}
	sentinel := filepath.Join(t.TempDir(), "sentinel")
	require.NoError(t, os.WriteFile(sentinel, []byte("still here\n"), 0o644))
	stillThere := func(t *testing.T) {
		t.Helper()
		b, err := os.ReadFile(sentinel)
		require.NoError(t, err, "the sentinel file was touched")
		require.Equal(t, "still here\n", string(b))
	}

	t.Run("an allowed command runs and its output is masked", func(t *testing.T) {
		out, errOut, code := alice.exec("echo hello from the target; printf 'contact ada.love'; sleep 0.3; printf 'lace@example.com\\n'")
		require.Equal(t, 0, code, errOut)
		assert.Contains(t, out, "hello from the target")
		assert.NotContains(t, out, "ada.lovelace@example.com", "a value split across chunks is still masked")
		assert.Contains(t, out, "contact [email]")
		// The record says what was masked, and where.
		testkit.Eventually(t, 10*time.Second, func() error {
			o, err := env.CLI(auditor, "audit", "tail", "--format", "json")
			if err != nil {
				return fmt.Errorf("%v: %s", err, o)
			}
			if !strings.Contains(o, `"field":"stdout"`) && !strings.Contains(o, `"field": "stdout"`) {
				return fmt.Errorf("no masking count on stdout yet")
			}
			return nil
		})
	})

	t.Run("exit status and stderr come through", func(t *testing.T) {
		_, errOut, code := alice.exec("ls /no/such/dir")
		assert.Equal(t, 2, code)
		assert.Contains(t, errOut, "No such file or directory")
	})

	t.Run("denied: the rule and reason on stderr, exit 77", func(t *testing.T) {
		for _, cmd := range []string{
			"curl -s http://127.0.0.1:1/x | sh",
			"ls; wget -qO- http://127.0.0.1:1/x | bash",
			"echo 'rm -rf " + sentinel + "' | sh",
		} {
			out, errOut, code := alice.exec(cmd)
			assert.Equal(t, 77, code, "%s: %s %s", cmd, out, errOut)
			assert.Contains(t, errOut, `sluice: command denied by rule "deny-ssh-pipe-to-shell"`, cmd)
		}
		stillThere(t)
	})

	agent := sshLogin(t, env, "--sub", "ci-bot", "--groups", "engineers", "--machine")
	t.Run("smuggled commands are seen: none runs without approval", func(t *testing.T) {
		out, errOut, code := agent.exec("cat " + sentinel)
		require.Equal(t, 0, code, "a read-only command runs: %s", errOut)
		assert.Contains(t, out, "still here")
		for _, cmd := range []string{
			"ls; rm -f " + sentinel,
			"ls && rm -f " + sentinel,
			"$(echo rm) -f " + sentinel,
			"`echo rm` -f " + sentinel,
			`r\m -f ` + sentinel,
			`'r'"m" -f ` + sentinel,
			"bash -c 'rm -f " + sentinel + "'",
			"echo " + sentinel + " | xargs rm -f",
			"find " + filepath.Dir(sentinel) + " -name sentinel -delete",
			"find /etc/hostname -fprintf " + sentinel + " x",
			"sort -o " + sentinel + " /etc/hostname",
			"sudo rm -f " + sentinel,
			"env X=1 rm -f " + sentinel,
			"cat /etc/hostname > " + sentinel,
			"python3 -c 'import os; os.remove(\"" + sentinel + "\")'",
		} {
			// The client gives up after a few seconds: its request is
			// withdrawn and never runs.
			_, errOut, _ := agent.run(4*time.Second, "", "ssh", "demo-ssh", cmd)
			assert.Contains(t, errOut, "sluice: command held for approval", cmd)
			stillThere(t)
		}
		_, errOut, code = agent.run(20*time.Second, "", "ssh", "demo-ssh", "echo 'x")
		assert.Equal(t, 77, code, "an unparseable command line")
		assert.Contains(t, errOut, "denied by rule", errOut)
	})

	t.Run("held, approved, runs once", func(t *testing.T) {
		done := make(chan [3]any, 1)
		go func() {
			out, errOut, code := agent.run(60*time.Second, "", "ssh", "demo-ssh", "rm -f "+sentinel+" && echo removed")
			done <- [3]any{out, errOut, code}
		}()
		id := pendingApproval(t, env, bob, "ci-bot")
		list, err := env.CLI(bob, "approvals", "list")
		require.NoError(t, err, list)
		assert.Contains(t, list, "ssh: rm -f "+sentinel, "approvers see the protocol and the exact command")
		o, err := env.CLI(bob, "approve", id, "--reason", "cleanup agreed")
		require.NoError(t, err, o)
		r := <-done
		assert.Equal(t, 0, r[2], r[1])
		assert.Contains(t, r[0], "removed")
		assert.Contains(t, r[1], "sluice: command held for approval "+id)
		_, err = os.Stat(sentinel)
		assert.True(t, os.IsNotExist(err), "the approved command ran")
		require.NoError(t, os.WriteFile(sentinel, []byte("still here\n"), 0o644))
	})

	t.Run("a denied approval: the reason on stderr, exit 77", func(t *testing.T) {
		done := make(chan [3]any, 1)
		go func() {
			// The command reads a variable the client sets (the policy lets
			// locale variables through).
			out, errOut, code := agent.run(60*time.Second, "", "ssh", "-o", "SetEnv=LC_SLUICE_E2E_FILE="+sentinel, "demo-ssh", `rm -f "$LC_SLUICE_E2E_FILE"`)
			done <- [3]any{out, errOut, code}
		}()
		id := pendingApproval(t, env, bob, "ci-bot")
		show, err := env.CLI(bob, "approvals", "show", id)
		require.NoError(t, err, show)
		assert.Contains(t, show, "env LC_SLUICE_E2E_FILE='"+sentinel+`' rm -f "$LC_SLUICE_E2E_FILE"`, "the approver reads the variables it runs with")
		o, err := env.CLI(bob, "deny", id, "--reason", "not on a Friday")
		require.NoError(t, err, o)
		r := <-done
		assert.Equal(t, 77, r[2])
		assert.Contains(t, r[1], "denied by bob: not on a Friday")
		stillThere(t)
	})

	t.Run("an interactive shell under a PTY; refused to machines", func(t *testing.T) {
		out, errOut, code := alice.run(30*time.Second, "echo shell-says-$((40+2))\nexit\n", "ssh", "-tt", "demo-ssh")
		require.Equal(t, 0, code, errOut)
		assert.Contains(t, out, "shell-says-42")
		_, errOut, code = agent.run(30*time.Second, "exit\n", "ssh", "-tt", "demo-ssh")
		assert.Equal(t, 77, code)
		assert.Contains(t, errOut, "denied by rule")
	})

	t.Run("forwarding is refused", func(t *testing.T) {
		_, errOut, code := alice.run(20*time.Second, "", "ssh", "-W", "127.0.0.1:22", "demo-ssh")
		assert.NotEqual(t, 0, code)
		assert.Contains(t, errOut, `denied by rule "deny-ssh-forwarding"`)
		_, errOut, code = alice.run(20*time.Second, "", "ssh", "-o", "ExitOnForwardFailure=yes", "-R", "0:127.0.0.1:22", "demo-ssh", "true")
		assert.NotEqual(t, 0, code, errOut)
	})

	t.Run("scp and sftp: refused where masking applies, working for a dba", func(t *testing.T) {
		local := filepath.Join(t.TempDir(), "upload.txt")
		require.NoError(t, os.WriteFile(local, []byte("payload 1234\n"), 0o644))
		remote := filepath.Join(t.TempDir(), "copied.txt")
		_, errOut, code := alice.run(30*time.Second, "", "scp", local, "demo-ssh:"+remote)
		assert.NotEqual(t, 0, code)
		assert.Contains(t, errOut, "builtin:masked-binary-channel")
		dba := sshLogin(t, env, "--sub", "dora", "--groups", "engineers,dba")
		_, errOut, code = dba.run(30*time.Second, "", "scp", local, "demo-ssh:"+remote)
		require.Equal(t, 0, code, errOut)
		b, err := os.ReadFile(remote)
		require.NoError(t, err)
		assert.Equal(t, "payload 1234\n", string(b))
		out, errOut, code := dba.run(30*time.Second, "ls "+filepath.Dir(remote)+"\n", "sftp", "-b", "-", "demo-ssh")
		require.Equal(t, 0, code, errOut)
		assert.Contains(t, out, "copied.txt")
	})

	t.Run("certificates: a plain key, an expired one and a forged one are refused", func(t *testing.T) {
		// The token a certificate carries is sealed: the file gives it
		// away to nobody.
		b, err := os.ReadFile(filepath.Join(alice.dir, "id_ed25519-cert.pub"))
		require.NoError(t, err)
		pk, _, _, _, err := ssh.ParseAuthorizedKey(b)
		require.NoError(t, err)
		cert, ok := pk.(*ssh.Certificate)
		require.True(t, ok)
		token := strings.TrimPrefix(alice.token[0], "SLUICE_TOKEN=")
		require.NotEmpty(t, cert.Permissions.Extensions["token@sluice.dev"])
		assert.NotContains(t, cert.Permissions.Extensions["token@sluice.dev"], token[len(token)-40:])
		assert.NotContains(t, string(cert.Marshal()), token[len(token)-40:])

		// A plain key, even one the target would accept, is not a login.
		plain := t.TempDir()
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		require.NoError(t, err)
		block, err := ssh.MarshalPrivateKey(priv, "")
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(plain, "key"), pem.EncodeToMemory(block), 0o600))
		cfg, err := os.ReadFile(alice.config)
		require.NoError(t, err)
		noCert := strings.ReplaceAll(string(cfg), "CertificateFile "+filepath.Join(alice.dir, "id_ed25519-cert.pub"), "CertificateFile /dev/null")
		noCert = strings.ReplaceAll(noCert, "IdentityFile "+filepath.Join(alice.dir, "id_ed25519"), "IdentityFile "+filepath.Join(plain, "key"))
		require.NoError(t, os.WriteFile(filepath.Join(plain, "config"), []byte(noCert), 0o600))
		u := &sshUser{t: t, env: env, dir: plain, config: filepath.Join(plain, "config")}
		_, errOut, code := u.exec("true")
		assert.Equal(t, 255, code)
		assert.Contains(t, errOut, "Permission denied")

		short := sshLogin(t, env, "--sub", "eve", "--groups", "engineers", "--ttl", "3s")
		_, _, code = short.exec("true")
		require.Equal(t, 0, code, "valid while its token is")
		time.Sleep(4 * time.Second)
		_, errOut, code = short.exec("true")
		assert.Equal(t, 255, code)
		assert.Contains(t, errOut, "Permission denied", "an expired certificate is refused")
	})

	t.Run("a wrong pinned host key is refused", func(t *testing.T) {
		admin := []string{"SLUICE_TOKEN=" + env.Token("--sub", "root", "--groups", "sluice-admins")}
		key, err := os.ReadFile(filepath.Join(env.Dir, "sshd", "sluice_key"))
		require.NoError(t, err)
		seal := exec.Command(sluiceBin, "secret", "seal", "--key-file", filepath.Join(env.Dir, "master.key"))
		seal.Stdin = bytes.NewReader(key)
		sealed, err := seal.Output()
		require.NoError(t, err)
		other, _, err := ed25519.GenerateKey(rand.Reader)
		require.NoError(t, err)
		otherPub, err := ssh.NewPublicKey(other)
		require.NoError(t, err)
		var port int
		_, err = fmt.Sscanf(strings.TrimSpace(argAfter(env, "--demo-ssh-port")), "%d", &port)
		require.NoError(t, err)
		file := filepath.Join(t.TempDir(), "bad.yaml")
		require.NoError(t, os.WriteFile(file, []byte(fmt.Sprintf(`targets:
  - name: impostor-ssh
    kind: ssh
    ssh:
      host: 127.0.0.1
      port: %d
      user: root
      private_key: {sealed: %q}
      host_key: %q
`, port, strings.TrimSpace(string(sealed)), strings.TrimSpace(string(ssh.MarshalAuthorizedKey(otherPub))))), 0o600))
		o, err := env.CLI(admin, "apply", "-f", file)
		require.NoError(t, err, o)
		u := sshLogin(t, env, "--sub", "alice", "--groups", "engineers")
		_, errOut, code := u.run(20*time.Second, "", "ssh", "-o", "User=impostor-ssh", "demo-ssh", "true")
		assert.Equal(t, 255, code)
		assert.Contains(t, errOut, "does not match the one pinned in configuration")

		// A target that is down is a clear error at once, not a hang.
		dead := filepath.Join(t.TempDir(), "dead.yaml")
		require.NoError(t, os.WriteFile(dead, []byte(fmt.Sprintf(`targets:
  - name: dead-ssh
    kind: ssh
    ssh:
      host: 127.0.0.1
      port: %d
      user: root
      private_key: {sealed: %q}
      host_key: %q
`, freePort(t), strings.TrimSpace(string(sealed)), strings.TrimSpace(string(ssh.MarshalAuthorizedKey(otherPub))))), 0o600))
		o, err = env.CLI(admin, "apply", "-f", dead)
		require.NoError(t, err, o)
		start := time.Now()
		_, errOut, code = u.run(20*time.Second, "", "ssh", "-o", "User=dead-ssh", "demo-ssh", "true")
		assert.Equal(t, 255, code)
		assert.Contains(t, errOut, `cannot reach target "dead-ssh"`)
		assert.Less(t, time.Since(start), 5*time.Second)
	})

	t.Run("replay shows what the client saw; the audit log verifies", func(t *testing.T) {
		out, errOut, code := alice.exec("printf 'line one\\nline two: ünïcode\\n'")
		require.Equal(t, 0, code, errOut)
		var sessions struct {
			Sessions []struct {
				ID, Principal, Protocol string
				Commands                int
			} `json:"sessions"`
		}
		var id string
		testkit.Eventually(t, 10*time.Second, func() error {
			o, err := env.CLI(auditor, "sessions", "list", "-o", "json")
			if err != nil {
				return fmt.Errorf("%v: %s", err, o)
			}
			if err := json.Unmarshal([]byte(o), &sessions); err != nil {
				return err
			}
			for _, s := range sessions.Sessions {
				if s.Protocol == "ssh" && s.Principal == "alice" {
					r, _ := env.CLI(auditor, "replay", s.ID)
					if strings.Contains(r, "ünïcode") {
						id = s.ID
						return nil
					}
				}
			}
			return fmt.Errorf("no ssh session of alice with the output yet")
		})
		transcript, err := env.CLI(auditor, "replay", id)
		require.NoError(t, err)
		// What a command reads from its standard input is in the record
		// too: a program fed its commands that way runs nothing unseen.
		fedOut, fedErr, fedCode := alice.run(60*time.Second, "first fed line\nsecond fed line\n", "ssh", "-T", "demo-ssh", "cat > /dev/null")
		require.Equal(t, 0, fedCode, fedOut+fedErr)
		testkit.Eventually(t, 10*time.Second, func() error {
			o, err := env.CLI(auditor, "sessions", "list", "-o", "json")
			if err != nil {
				return fmt.Errorf("%v: %s", err, o)
			}
			if err := json.Unmarshal([]byte(o), &sessions); err != nil {
				return err
			}
			for _, s := range sessions.Sessions {
				if r, _ := env.CLI(auditor, "replay", s.ID); s.Protocol == "ssh" && strings.Contains(r, "second fed line") {
					return nil
				}
			}
			return fmt.Errorf("no ssh session shows the input it was fed")
		})
		assert.Contains(t, transcript, "ssh on target demo-ssh")
		assert.Contains(t, transcript, "ALLOW by rule allow-engineer-ssh-commands")
		assert.Contains(t, transcript, "│ line one")
		assert.Contains(t, transcript, "runs printf", "the parsed command line is in the record")
		assert.Contains(t, transcript, "→ exit 0")
		cast, err := env.CLI(auditor, "replay", id, "--format", "asciicast")
		require.NoError(t, err)
		castLines := strings.Split(strings.TrimSpace(cast), "\n")
		var header map[string]any
		require.NoError(t, json.Unmarshal([]byte(castLines[0]), &header))
		assert.EqualValues(t, 2, header["version"])
		var seen strings.Builder
		for _, l := range castLines[1:] {
			var ev []any
			require.NoError(t, json.Unmarshal([]byte(l), &ev))
			if ev[1] == "o" {
				seen.WriteString(ev[2].(string))
			}
		}
		assert.Equal(t, out, seen.String(), "the cast replays exactly what the client saw")
		v, err := env.CLI(auditor, "audit", "verify")
		require.NoError(t, err, v)
		assert.Contains(t, v, "intact")
	})
}

// argAfter is the value sluice dev was started with for flag.
func argAfter(env *devEnv, flag string) string {
	for i, a := range env.cmd.Args {
		if a == flag && i+1 < len(env.cmd.Args) {
			return env.cmd.Args[i+1]
		}
	}
	return ""
}
