// Package pglocal runs a real PostgreSQL server on this machine: initdb into
// a directory (once), start on a loopback port with its socket in a private
// directory, wait until it accepts connections, stop it cleanly. When the
// process runs as root it runs the server as the "postgres" user, as
// PostgreSQL refuses to run as root. Used by `sluice dev` for the demo
// database and by the test harness.
package pglocal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"sluice.dev/sluice/libs/freeport"

	"github.com/jackc/pgx/v5/pgconn"
)

// ErrNotInstalled means no PostgreSQL server binaries were found.
var ErrNotInstalled = errors.New("pglocal: PostgreSQL server binaries (initdb, postgres) not found")

// Config says where and how to run the server.
type Config struct {
	// Dir is the data directory; it is initialised if empty.
	Dir string
	// Port on 127.0.0.1; 0 picks a free one.
	Port int
	// BinDir holds initdb and postgres; empty searches the usual places.
	BinDir string
	// Log receives the server's output; nil discards it.
	Log io.Writer
	// Settings are extra -c name=value options.
	Settings map[string]string
}

// Server is a running PostgreSQL.
type Server struct {
	Dir       string
	SocketDir string
	Port      int
	cmd       *exec.Cmd
	done      chan error
}

// FindBinDir locates the server binaries.
func FindBinDir() (string, error) {
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		dir := strings.TrimSpace(string(out))
		if exists(filepath.Join(dir, "postgres")) && exists(filepath.Join(dir, "initdb")) {
			return dir, nil
		}
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(matches, func(i, j int) bool { return version(matches[i]) > version(matches[j]) })
	for _, dir := range matches {
		if exists(filepath.Join(dir, "postgres")) && exists(filepath.Join(dir, "initdb")) {
			return dir, nil
		}
	}
	if p, err := exec.LookPath("postgres"); err == nil {
		dir := filepath.Dir(p)
		if exists(filepath.Join(dir, "initdb")) {
			return dir, nil
		}
	}
	return "", ErrNotInstalled
}

func version(dir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
	return n
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// runAs returns the credential to run the server with when we are root.
func runAs() (*syscall.Credential, int, int, error) {
	if os.Geteuid() != 0 {
		return nil, -1, -1, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, 0, 0, fmt.Errorf("pglocal: running as root needs a postgres user: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, uid, gid, nil
}

// Start initialises (if needed) and starts the server.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	bin := cfg.BinDir
	if bin == "" {
		var err error
		if bin, err = FindBinDir(); err != nil {
			return nil, err
		}
	}
	cred, uid, gid, err := runAs()
	if err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	sock, err := os.MkdirTemp("", "sluice-pg-")
	if err != nil {
		return nil, err
	}
	if cred != nil {
		for _, d := range []string{dir, sock} {
			if err := os.Chown(d, uid, gid); err != nil {
				return nil, fmt.Errorf("pglocal: chown %s: %w", d, err)
			}
		}
		if err := allowTraverse(dir); err != nil {
			return nil, err
		}
	}
	logw := cfg.Log
	if logw == nil {
		logw = io.Discard
	}
	if !exists(filepath.Join(dir, "PG_VERSION")) {
		var out bytes.Buffer
		cmd := exec.CommandContext(ctx, filepath.Join(bin, "initdb"), "-D", dir, "-U", "postgres",
			"--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")
		cmd.Stdout, cmd.Stderr = &out, &out
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("pglocal: initdb: %w: %s", err, out.String())
		}
	}
	if err := stopLeftOver(ctx, dir); err != nil {
		return nil, err
	}
	port := cfg.Port
	if port == 0 {
		if port, err = freePort(); err != nil {
			return nil, err
		}
	}
	args := []string{"-D", dir, "-p", strconv.Itoa(port), "-k", sock, "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"}
	for k, v := range cfg.Settings {
		args = append(args, "-c", k+"="+v)
	}
	cmd := exec.Command(filepath.Join(bin, "postgres"), args...)
	cmd.Stdout, cmd.Stderr = logw, logw
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("pglocal: start postgres: %w", err)
	}
	s := &Server{Dir: dir, SocketDir: sock, Port: port, cmd: cmd, done: make(chan error, 1)}
	go func() { s.done <- cmd.Wait() }()
	if err := s.waitReady(ctx); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

// allowTraverse makes every parent of dir searchable by others, so that the
// postgres user can reach a data directory created by root.
func allowTraverse(dir string) error {
	for d := filepath.Dir(dir); d != "/" && d != "."; d = filepath.Dir(d) {
		st, err := os.Stat(d)
		if err != nil {
			return err
		}
		if st.Mode().Perm()&0o001 == 0 {
			if err := os.Chmod(d, st.Mode().Perm()|0o011); err != nil {
				return fmt.Errorf("pglocal: make %s traversable: %w", d, err)
			}
		}
	}
	return nil
}

func (s *Server) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(60 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		select {
		case err := <-s.done:
			s.done <- err
			return fmt.Errorf("pglocal: postgres exited during start: %v", err)
		default:
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		c, err := pgconn.Connect(cctx, s.SuperuserDSN("postgres"))
		cancel()
		if err == nil {
			c.Close(ctx)
			return nil
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("pglocal: postgres not ready: %w", last)
}

// SuperuserDSN connects as the superuser over the private socket.
func (s *Server) SuperuserDSN(db string) string {
	return fmt.Sprintf("host=%s port=%d user=postgres dbname=%s sslmode=disable", s.SocketDir, s.Port, db)
}

// Exec runs SQL as the superuser.
func (s *Server) Exec(ctx context.Context, db, sql string) error {
	c, err := pgconn.Connect(ctx, s.SuperuserDSN(db))
	if err != nil {
		return fmt.Errorf("pglocal: connect %s: %w", db, err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, sql).ReadAll(); err != nil {
		return fmt.Errorf("pglocal: %w", err)
	}
	return nil
}

// Stop shuts the server down (fast shutdown) and waits for it.
func (s *Server) Stop() {
	if s.cmd.Process != nil {
		_ = s.cmd.Process.Signal(syscall.SIGINT)
	}
	select {
	case <-s.done:
	case <-time.After(20 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	_ = os.RemoveAll(s.SocketDir)
}

func freePort() (int, error) { return freeport.Get() }

// stopLeftOver stops a server still running in dir from an earlier process
// that died without stopping it (killed, or its terminal closed): the
// server runs in its own process group and outlives it, and a new server
// cannot start on the same directory while it runs. Only a postgres whose
// command line names dir is stopped; a stale postmaster.pid of a server
// that is gone is left to PostgreSQL, which replaces it.
func stopLeftOver(ctx context.Context, dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, "postmaster.pid"))
	if err != nil {
		return nil
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || pid <= 0 || !runsIn(pid, dir) {
		return nil
	}
	// SIGINT is PostgreSQL's fast shutdown: sessions end, data is kept.
	if err := syscall.Kill(pid, syscall.SIGINT); err != nil {
		return nil
	}
	deadline := time.Now().Add(30 * time.Second)
	for runsIn(pid, dir) {
		if time.Now().After(deadline) {
			return fmt.Errorf("pglocal: a server left running in %s (pid %d) did not stop within 30s", dir, pid)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// runsIn reports whether pid is a postgres server on data directory dir.
func runsIn(pid int, dir string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	if len(args) == 0 || filepath.Base(args[0]) != "postgres" {
		return false
	}
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "-D" && args[i+1] == dir {
			return true
		}
	}
	return false
}
