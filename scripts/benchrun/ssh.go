package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// sshRow is bulk output through exec: OpenSSH straight to the demo sshd,
// and through the SSH worker with recording on (unmasked for a dba, masked
// for an engineer).
type sshRow struct {
	MiB                                int
	DirectMBps, SluiceMBps, MaskedMBps float64
	DirectSec, SluiceSec, MaskedSec    float64
	SkippedReason                      string `json:",omitempty"`
}

// sshBulk measures `yes ... | head -c N` (text lines, as logs are) read to
// the end, median of three runs each, side by side.
func (e *env) sshBulk(res *results, mib int) error {
	step(fmt.Sprintf("SSH bulk output, %d MiB", mib))
	if _, err := os.Stat(filepath.Join(e.dir, "sshd", "sluice_key")); err != nil {
		res.SSH = sshRow{MiB: mib, SkippedReason: "no demo sshd (install openssh-server)"}
		return nil
	}
	base := filepath.Dir(e.dir)
	known := filepath.Join(base, "demo_known_hosts")
	hostKey, err := os.ReadFile(filepath.Join(e.dir, "sshd", "host_key"))
	if err != nil {
		return err
	}
	signer, err := ssh.ParsePrivateKey(hostKey)
	if err != nil {
		return err
	}
	if err := os.WriteFile(known, []byte(fmt.Sprintf("[127.0.0.1]:%d %s", e.demoSSHPort, ssh.MarshalAuthorizedKey(signer.PublicKey()))), 0o600); err != nil {
		return err
	}
	command := fmt.Sprintf("yes 'the quick brown fox jumps over the lazy dog 0123456789' | head -c %d", mib<<20)
	direct := []string{"-i", filepath.Join(e.dir, "sshd", "sluice_key"), "-o", "UserKnownHostsFile=" + known, "-o", "StrictHostKeyChecking=yes",
		"-o", "BatchMode=yes", "-p", fmt.Sprint(e.demoSSHPort), "root@127.0.0.1", command}
	login := func(token, dir string) ([]string, error) {
		cmd := exec.Command(*sluiceBin, "ssh", "login", "--dir", dir)
		cmd.Env = append(os.Environ(), "SLUICE_API="+fmt.Sprintf("http://127.0.0.1:%d", e.apiPort), "SLUICE_TOKEN="+token)
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("sluice ssh login: %v: %s", err, out)
		}
		return []string{"-F", filepath.Join(dir, "config"), "-o", "BatchMode=yes", "demo-ssh", command}, nil
	}
	dba, err := login(e.dba, filepath.Join(base, "ssh-dba"))
	if err != nil {
		return err
	}
	eng, err := login(e.engineer, filepath.Join(base, "ssh-engineer"))
	if err != nil {
		return err
	}
	run := func(args []string) (float64, error) {
		var times []float64
		for i := 0; i < 3; i++ {
			cmd := exec.Command("ssh", args...)
			out, err := cmd.StdoutPipe()
			if err != nil {
				return 0, err
			}
			var stderr strings.Builder
			cmd.Stderr = &stderr
			start := time.Now()
			if err := cmd.Start(); err != nil {
				return 0, err
			}
			n, _ := io.Copy(io.Discard, out)
			if err := cmd.Wait(); err != nil {
				return 0, fmt.Errorf("ssh: %v: %s", err, stderr.String())
			}
			if n != int64(mib)<<20 {
				return 0, fmt.Errorf("ssh: %d bytes, want %d: %s", n, mib<<20, stderr.String())
			}
			times = append(times, time.Since(start).Seconds())
		}
		return median(times), nil
	}
	row := sshRow{MiB: mib}
	if row.DirectSec, err = run(direct); err != nil {
		return err
	}
	if row.SluiceSec, err = run(dba); err != nil {
		return err
	}
	if row.MaskedSec, err = run(eng); err != nil {
		return err
	}
	mb := float64(mib) * 1.048576
	row.DirectMBps, row.SluiceMBps, row.MaskedMBps = mb/row.DirectSec, mb/row.SluiceSec, mb/row.MaskedSec
	res.SSH = row
	return nil
}

func (r sshRow) print(w io.Writer) {
	if r.SkippedReason != "" {
		fmt.Fprintf(w, "\nSSH bulk output: not measured (%s).\n", r.SkippedReason)
		return
	}
	fmt.Fprintf(w, "\nSSH bulk output (exec of `yes ... | head -c %d MiB`, read to the end, median of 3): direct OpenSSH %.0f MB/s; through Sluice with recording, unmasked (dba) %.0f MB/s (%.2fx direct), masked (engineer) %.0f MB/s (%.2fx direct).\n",
		r.MiB, r.DirectMBps, r.SluiceMBps, r.SluiceMBps/r.DirectMBps, r.MaskedMBps, r.MaskedMBps/r.DirectMBps)
}
