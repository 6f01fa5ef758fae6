package dev

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"

	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/secrets"
)

// sshDemo is the demo SSH target: OpenSSH's sshd on a loopback port, which
// trusts only the key Sluice holds for it.
type sshDemo struct {
	Port int
	User string
	cmd  *exec.Cmd
}

func (d *sshDemo) Stop() {
	if d == nil || d.cmd == nil || d.cmd.Process == nil {
		return
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = d.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = d.cmd.Process.Kill()
	}
}

// findSSHD finds OpenSSH's server, or "".
func findSSHD() string {
	if p, err := exec.LookPath("sshd"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/sbin/sshd", "/usr/local/sbin/sshd"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

// writeKey writes an ed25519 private key in OpenSSH format (0600) unless
// one is there, and returns its signer.
func writeKey(path, comment string) (ssh.Signer, error) {
	if b, err := os.ReadFile(path); err == nil {
		return ssh.ParsePrivateKey(b)
	}
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	block, err := ssh.MarshalPrivateKey(key, comment)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		return nil, err
	}
	return ssh.NewSignerFromKey(key)
}

// startDemoSSH starts the demo sshd and registers it as target demo-ssh:
// Sluice holds the only key it accepts (sealed with the master key) and
// pins its host key.
func startDemoSSH(ctx context.Context, cfg Config, dir string, conn *bus.Conn, master *secrets.Key) (*sshDemo, error) {
	sshd := findSSHD()
	if sshd == "" {
		cfg.Log.Warn().Msg("OpenSSH's sshd not found; no demo SSH target (apt-get install openssh-server to get one)")
		return nil, nil
	}
	me, err := user.Current()
	if err != nil {
		return nil, err
	}
	sdir := filepath.Join(dir, "sshd")
	if err := os.MkdirAll(sdir, 0o700); err != nil {
		return nil, err
	}
	hostKey, err := writeKey(filepath.Join(sdir, "host_key"), "sluice demo sshd")
	if err != nil {
		return nil, err
	}
	targetKey, err := writeKey(filepath.Join(sdir, "sluice_key"), "sluice gateway")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(sdir, "authorized_keys"), ssh.MarshalAuthorizedKey(targetKey.PublicKey()), 0o600); err != nil {
		return nil, err
	}
	// sshd's privilege separation directory (Debian's default path).
	if os.Geteuid() == 0 {
		_ = os.MkdirAll("/run/sshd", 0o755)
	}
	conf := fmt.Sprintf(`# The demo SSH target of sluice dev. Only the key Sluice holds logs in.
Port %d
ListenAddress 127.0.0.1
HostKey %s
PidFile %s
AuthorizedKeysFile %s
AllowUsers %s
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
AllowTcpForwarding yes
X11Forwarding no
PrintMotd no
Subsystem sftp internal-sftp
LogLevel ERROR
`, cfg.DemoSSHPort, filepath.Join(sdir, "host_key"), filepath.Join(sdir, "sshd.pid"), filepath.Join(sdir, "authorized_keys"), me.Username)
	confPath := filepath.Join(sdir, "sshd_config")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(filepath.Join(sdir, "sshd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	if err := stopLeftOverSSHD(ctx, filepath.Join(sdir, "sshd.pid"), confPath); err != nil {
		return nil, err
	}
	cmd := exec.Command(sshd, "-D", "-e", "-f", confPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("demo sshd: %w", err)
	}
	d := &sshDemo{Port: cfg.DemoSSHPort, User: me.Username, cmd: cmd}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); logf.Close() }()
	addr := net.JoinHostPort("127.0.0.1", fmt.Sprint(cfg.DemoSSHPort))
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		select {
		case err := <-exited:
			d.cmd = nil
			log, _ := os.ReadFile(filepath.Join(sdir, "sshd.log"))
			return nil, fmt.Errorf("demo sshd exited: %v: %s (use --demo-ssh-port to pick another port)", err, strings.TrimSpace(string(log)))
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			d.Stop()
			return nil, ctx.Err()
		}
		if time.Now().After(deadline) {
			d.Stop()
			return nil, errors.New("demo sshd did not start listening within 10s")
		}
	}
	keyPEM, err := os.ReadFile(filepath.Join(sdir, "sluice_key"))
	if err != nil {
		d.Stop()
		return nil, err
	}
	target := fmt.Sprintf(`targets:
  - name: demo-ssh
    kind: ssh
    labels: {env: dev}
    ssh:
      host: 127.0.0.1
      port: %d
      user: %s
      private_key: {sealed: %q}
      host_key: %q
`, cfg.DemoSSHPort, me.Username, base64.StdEncoding.EncodeToString(master.Seal(keyPEM)),
		strings.TrimSpace(string(ssh.MarshalAuthorizedKey(hostKey.PublicKey()))))
	if err := apply(ctx, conn, []byte(target), "demo-ssh-target.yaml"); err != nil {
		d.Stop()
		return nil, fmt.Errorf("register demo SSH target: %w", err)
	}
	return d, nil
}

// stopLeftOverSSHD stops the demo sshd an earlier sluice dev left running
// (killed, it could not stop it: sshd runs in its own process group), so
// that the new one can listen and nothing answers on its behalf. Only a
// process whose command line names this sshd_config is stopped.
func stopLeftOverSSHD(ctx context.Context, pidFile, confPath string) error {
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return nil
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return nil
	}
	ours := func() bool {
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		return err == nil && strings.Contains(string(cmdline), confPath)
	}
	if !ours() || syscall.Kill(pid, syscall.SIGTERM) != nil {
		return nil
	}
	for deadline := time.Now().Add(10 * time.Second); ours(); {
		if time.Now().After(deadline) {
			return fmt.Errorf("demo sshd left running (pid %d) did not stop within 10s", pid)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}
