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
	// start runs a process whose command line names name, as the one in
	// the pid file; done is closed when it has exited (err then says how).
	type proc struct {
		done chan struct{}
		err  error
	}
	start := func(name string) *proc {
		cmd := exec.Command("/bin/sh", "-c", "sleep 60", name)
		require.NoError(t, cmd.Start())
		p := &proc{done: make(chan struct{})}
		go func() { p.err = cmd.Wait(); close(p.done) }()
		t.Cleanup(func() { _ = cmd.Process.Kill(); <-p.done })
		require.NoError(t, os.WriteFile(pidFile, []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o600))
		return p
	}

	other := start(filepath.Join(dir, "another_config"))
	require.NoError(t, stopLeftOverSSHD(context.Background(), pidFile, conf))
	select {
	case <-other.done:
		t.Fatal("a process that is not this demo sshd was stopped")
	case <-time.After(200 * time.Millisecond):
	}

	left := start(conf)
	require.NoError(t, stopLeftOverSSHD(context.Background(), pidFile, conf))
	select {
	case <-left.done:
		assert.Error(t, left.err, "ended by a signal")
	case <-time.After(5 * time.Second):
		t.Fatal("the left-over sshd still runs")
	}
}
