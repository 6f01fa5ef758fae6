package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"sluice.dev/sluice/libs/freeport"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/devissuer"
)

var sluiceBin string

func TestMain(m *testing.M) {
	sluiceBin = os.Getenv("SLUICE_BIN")
	if sluiceBin == "" {
		dir, err := os.MkdirTemp("", "sluice-e2e-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		sluiceBin = filepath.Join(dir, "sluice")
		cmd := exec.Command("go", "build", "-o", sluiceBin, "sluice.dev/sluice/services/sluice/cmd/sluice")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build sluice:", err)
			os.Exit(1)
		}
		code := m.Run()
		os.RemoveAll(dir)
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// require skips, or fails under SLUICE_E2E_REQUIRED=1, when a tool is missing.
func requireTool(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			if os.Getenv("SLUICE_E2E_REQUIRED") == "1" {
				t.Fatalf("%s is required for the end-to-end tests (run scripts/install-deps.sh)", n)
			}
			t.Skipf("%s not installed", n)
		}
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	p, err := freeport.Get()
	require.NoError(t, err)
	return p
}

// devEnv is a running `sluice dev`.
type devEnv struct {
	t      *testing.T
	Dir    string
	API    string
	PGAddr string
	PGHost string
	PGPort int
	// SSHPort is the SSH worker's.
	SSHPort int
	cmd     *exec.Cmd
	out     *syncBuffer
	logs    *syncBuffer
	done    chan error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type devOptions struct {
	dir    string
	noDemo bool
	extra  []string
	// noWait returns as soon as the process starts, before its banner.
	noWait bool
}

// startDev runs `sluice dev` on free ports in a fresh (or given) directory
// and waits for its banner.
func startDev(t *testing.T, opts devOptions) *devEnv {
	t.Helper()
	dir := opts.dir
	if dir == "" {
		var err error
		dir, err = os.MkdirTemp("", "sluice-e2e-")
		require.NoError(t, err)
		t.Cleanup(func() { os.RemoveAll(dir) })
	}
	apiPort, pgPort, natsPort, demoPort := freePort(t), freePort(t), freePort(t), freePort(t)
	sshPort, demoSSHPort := freePort(t), freePort(t)
	e := &devEnv{t: t, Dir: filepath.Join(dir, ".sluice"), API: fmt.Sprintf("http://127.0.0.1:%d", apiPort), SSHPort: sshPort,
		PGAddr: fmt.Sprintf("127.0.0.1:%d", pgPort), PGHost: "127.0.0.1", PGPort: pgPort,
		out: &syncBuffer{}, done: make(chan error, 1)}
	k8sAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	for _, a := range opts.extra {
		if a == "--k8s-addr" {
			k8sAddr = "" // the test names it
		}
	}
	args := []string{"dev", "--dir", e.Dir, "--api-addr", fmt.Sprintf("127.0.0.1:%d", apiPort), "--pg-addr", e.PGAddr,
		"--nats-port", fmt.Sprint(natsPort), "--demo-pg-port", fmt.Sprint(demoPort), "--log-format", "json",
		"--ssh-addr", fmt.Sprintf("127.0.0.1:%d", sshPort), "--demo-ssh-port", fmt.Sprint(demoSSHPort)}
	if k8sAddr != "" {
		args = append(args, "--k8s-addr", k8sAddr)
	}
	if opts.noDemo {
		args = append(args, "--no-demo")
	}
	args = append(args, opts.extra...)
	e.cmd = exec.Command(sluiceBin, args...)
	e.cmd.Dir = dir
	e.cmd.Stdout = e.out
	logs := &syncBuffer{}
	e.logs = logs
	e.cmd.Stderr = logs
	require.NoError(t, e.cmd.Start())
	go func() { e.done <- e.cmd.Wait() }()
	t.Cleanup(func() {
		e.Stop()
		if t.Failed() {
			t.Logf("sluice dev output:\n%s\nlogs:\n%s", e.out.String(), tail(logs.String(), 80))
		}
	})
	if opts.noWait {
		return e
	}
	deadline := time.Now().Add(90 * time.Second)
	for !strings.Contains(e.out.String(), "Press Ctrl-C to stop") {
		select {
		case err := <-e.done:
			e.done <- err
			t.Fatalf("sluice dev exited: %v\n%s\n%s", err, e.out.String(), logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("sluice dev not ready:\n%s\n%s", e.out.String(), logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return e
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Stop sends Ctrl-C and waits for a clean exit.
func (e *devEnv) Stop() {
	if e.cmd.ProcessState != nil {
		return
	}
	_ = e.cmd.Process.Signal(syscall.SIGINT)
	select {
	case err := <-e.done:
		e.done <- err
		if err != nil {
			e.t.Errorf("sluice dev did not stop cleanly: %v", err)
		}
	case <-time.After(30 * time.Second):
		_ = e.cmd.Process.Kill()
		e.t.Errorf("sluice dev did not stop within 30s of Ctrl-C")
	}
}

// Output is what sluice dev printed.
func (e *devEnv) Output() string { return e.out.String() }

// Logs is what sluice dev has logged so far (JSON lines on stderr).
func (e *devEnv) Logs() string { return e.logs.String() }

// Token mints a token with `sluice dev token`.
func (e *devEnv) Token(args ...string) string {
	e.t.Helper()
	out, err := e.CLI(nil, append([]string{"dev", "token", "--dir", e.Dir}, args...)...)
	require.NoError(e.t, err, out)
	return strings.TrimSpace(out)
}

// Issuer returns the dev issuer, for crafting unusual tokens.
func (e *devEnv) Issuer() *devissuer.Issuer {
	e.t.Helper()
	var st struct{ Issuer, Audience string }
	b, err := os.ReadFile(filepath.Join(e.Dir, "dev.json"))
	require.NoError(e.t, err)
	require.NoError(e.t, json.Unmarshal(b, &st))
	key, err := devissuer.LoadOrCreateKey(filepath.Join(e.Dir, "issuer.key"))
	require.NoError(e.t, err)
	return &devissuer.Issuer{URL: st.Issuer, Audience: st.Audience, Key: key}
}

// CLI runs the sluice binary against this environment and returns its
// combined output.
func (e *devEnv) CLI(env []string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, sluiceBin, args...)
	cmd.Env = append(os.Environ(), "SLUICE_API="+e.API, "XDG_CONFIG_HOME="+filepath.Join(e.Dir, "cfg"))
	cmd.Env = append(cmd.Env, env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// HTTP calls the API with a bearer token.
func (e *devEnv) HTTP(method, path, token string, body io.Reader) (int, map[string]any) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.API+path, body)
	require.NoError(e.t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(e.t, err)
	defer resp.Body.Close()
	var out map[string]any
	data, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(data, &out)
	if out == nil {
		out = map[string]any{"_raw": string(data)}
	}
	return resp.StatusCode, out
}

// lines splits output into non-empty lines.
func lines(s string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// NATS connects to the environment's embedded NATS as a component's
// identity (see bus.Components), with the nkey sluice dev generated.
func (e *devEnv) NATS(component string) *nats.Conn {
	e.t.Helper()
	key, err := nats.NkeyOptionFromSeed(bus.KeyFile(filepath.Join(e.Dir, "nats-keys"), component))
	require.NoError(e.t, err)
	nc, err := nats.Connect(e.natsURL(), key, nats.CustomInboxPrefix(bus.InboxPrefix(component)),
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	require.NoError(e.t, err)
	e.t.Cleanup(nc.Close)
	return nc
}

// natsURL is the embedded NATS server's URL, from the banner.
func (e *devEnv) natsURL() string {
	e.t.Helper()
	var url string
	for _, l := range lines(e.Output()) {
		if strings.HasPrefix(l, "NATS ") && strings.Contains(l, "nats://") {
			url = strings.TrimSpace(strings.TrimPrefix(l, "NATS"))
		}
	}
	require.NotEmpty(e.t, url, "no NATS URL in the banner")
	return url
}

// natsKey is the nkey seed file of a component.
func (e *devEnv) natsKey(component string) string {
	return bus.KeyFile(filepath.Join(e.Dir, "nats-keys"), component)
}

func devissuerClaims(sub string, ttl time.Duration) devissuer.Claims {
	return devissuer.Claims{Subject: sub, Groups: []string{"engineers"}, TTL: ttl}
}

// timedCommand runs a client tool with a deadline, so that a hang fails the
// test instead of stalling the suite.
func timedCommand(t *testing.T, name string, args ...string) *exec.Cmd {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return exec.CommandContext(ctx, name, args...)
}

// answers is what a raw protocol exchange got back.
type answers struct {
	rows      [][]string
	errs      []pgproto3.ErrorResponse
	described bool // a RowDescription came
}

func (a answers) codes() []string {
	var out []string
	for _, e := range a.errs {
		out = append(out, e.Code)
	}
	return out
}

// exchange sends msgs on a raw protocol connection and reads the answers
// up to ReadyForQuery.
func exchange(t *testing.T, fe *pgproto3.Frontend, msgs ...pgproto3.FrontendMessage) answers {
	t.Helper()
	for _, m := range msgs {
		fe.Send(m)
	}
	require.NoError(t, fe.Flush())
	var a answers
	for {
		msg, err := fe.Receive()
		require.NoError(t, err)
		switch m := msg.(type) {
		case *pgproto3.DataRow:
			row := make([]string, len(m.Values))
			for i, v := range m.Values {
				row[i] = string(v)
			}
			a.rows = append(a.rows, row)
		case *pgproto3.RowDescription:
			a.described = true
		case *pgproto3.ErrorResponse:
			a.errs = append(a.errs, *m) // the frontend reuses m
		case *pgproto3.ReadyForQuery:
			return a
		}
	}
}
