package cli

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"sluice.dev/sluice/services/approvals"
)

// A read the API answers 503 (here: the approvals service is not running
// yet) is sent again after the answer's Retry-After, saying so on standard
// error, until it is answered; a change is never sent twice.
func TestReadsWaitOutAnUnavailableService(t *testing.T) {
	s := startStack(t)
	admin := s.idp.Token("root", "admins")

	start := time.Now()
	res := s.cli(admin, "approve", "01m8x1rha71jke41zw1m934wkg", "--reason", "ok")
	assert.NotZero(t, res.code)
	assert.Contains(t, res.stderr, "HTTP 503", res.stderr)
	assert.NotContains(t, res.stderr, "trying again", "an approval is a change: it is not sent again")
	assert.Less(t, time.Since(start), 2*time.Second, "answered at once, without waiting for a retry")

	// startLater starts the approvals service in 3s, until the returned
	// stop; started is closed once it serves.
	startLater := func() (started chan struct{}, stop func()) {
		ctx, cancel := context.WithCancel(s.ctx)
		done := make(chan struct{})
		started = make(chan struct{})
		time.AfterFunc(3*time.Second, func() {
			go func() {
				defer close(done)
				_ = approvals.New(approvals.Config{Conn: s.conn, Log: zerolog.Nop(), Ready: func() { close(started) }}).Run(ctx)
			}()
		})
		return started, func() { cancel(); <-done }
	}
	served := func(started chan struct{}) bool {
		select {
		case <-started:
			return true
		default:
			return false
		}
	}

	started, stop := startLater()
	res = s.cli(admin, "approvals", "list", "--state", "all")
	require.Zero(t, res.code, "stdout: %s\nstderr: %s", res.stdout, res.stderr)
	assert.True(t, served(started), "the list was answered before the approvals service ran")
	assert.Contains(t, res.stderr, "the service is not running; trying again in 2s (attempt 2)")
	assert.Contains(t, res.stdout, "ID")
	stop()

	// Under -o json standard error stays one JSON object or nothing.
	started, stop = startLater()
	defer stop()
	res = s.cli(admin, "-o", "json", "approvals", "list", "--state", "all")
	require.Zero(t, res.code, "stdout: %s\nstderr: %s", res.stdout, res.stderr)
	assert.True(t, served(started), "the list was answered before the approvals service ran")
	assert.Empty(t, res.stderr)
	assert.Contains(t, res.stdout, `"approvals"`)
}

func TestParseRetryAfter(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"2": 2 * time.Second, " 5 ": 5 * time.Second, "0": 0, "": 0, "-1": 0, "3600": time.Minute,
		"Wed, 21 Oct 2026 07:28:00 GMT": 0, "1.5": 0,
	} {
		assert.Equal(t, want, parseRetryAfter(in), "%q", in)
	}
}
