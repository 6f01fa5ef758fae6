package dev

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The demo sshd a killed sluice dev left running is stopped by the next
// start; a process that does not name this sshd_config is left alone,
// whatever the pid file says.
func TestStopLeftOverSSHD(t *testing.T) {
	dir := t.TempDir()
	conf, pidFile := filepath.Join(dir, "sshd_config"), filepath.Join(dir, "sshd.pid")
	start := func(name string) *exec.Cmd {
		cmd := exec.Command("/bin/sh", "-c", "sleep 60", name)
		require.NoError(t, cmd.Start())
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		require.NoError(t, os.WriteFile(pidFile, []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o600))
		return cmd
	}
	exited := func(cmd *exec.Cmd) chan error {
		ch := make(chan error, 1)
		go func() { ch <- cmd.Wait() }()
		return ch
	}

	other := start(filepath.Join(dir, "another_config"))
	otherDone := exited(other)
	require.NoError(t, stopLeftOverSSHD(context.Background(), pidFile, conf))
	select {
	case <-otherDone:
		t.Fatal("a process that is not this demo sshd was stopped")
	case <-time.After(200 * time.Millisecond):
	}

	left := start(conf)
	leftDone := exited(left)
	require.NoError(t, stopLeftOverSSHD(context.Background(), pidFile, conf))
	select {
	case err := <-leftDone:
		assert.Error(t, err, "ended by a signal")
	case <-time.After(5 * time.Second):
		t.Fatal("the left-over sshd still runs")
	}
}
