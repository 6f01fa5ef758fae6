// Package kubelocal runs a real Kubernetes API server on this machine: etcd
// and kube-apiserver (built from the Go module proxy by scripts/tools.sh
// into ~/.cache/sluice), on loopback ports, with a self-signed serving
// certificate, RBAC, a static token for the gateway's own credential
// (system:masters) and one for a user without rights. There is no
// controller manager, scheduler or kubelet: enough to serve the API
// (objects, RBAC, discovery, watches, the upgrade handshake of exec), not to
// run pods. Used by `sluice dev --demo-k8s` and the tests.
package kubelocal

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"sluice.dev/sluice/libs/freeport"
)

// Versions scripts/tools.sh builds.
const (
	KubeVersion = "v1.37.2"
	EtcdVersion = "v3.7.3"
)

// ErrNotInstalled means kube-apiserver or etcd was not found.
var ErrNotInstalled = errors.New("kubelocal: kube-apiserver and etcd are not built (scripts/tools.sh kube-apiserver etcd builds them into ~/.cache/sluice, about 5 minutes once)")

// Binaries locates kube-apiserver and etcd: $SLUICE_KUBE_APISERVER and
// $SLUICE_ETCD, else the tools cache ($SLUICE_TOOLS_CACHE or
// ~/.cache/sluice).
func Binaries() (apiserver, etcd string, err error) {
	cache := os.Getenv("SLUICE_TOOLS_CACHE")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache", "sluice")
	}
	apiserver = os.Getenv("SLUICE_KUBE_APISERVER")
	if apiserver == "" {
		apiserver = filepath.Join(cache, "kube-apiserver-"+KubeVersion, "kube-apiserver")
	}
	etcd = os.Getenv("SLUICE_ETCD")
	if etcd == "" {
		etcd = filepath.Join(cache, "etcd-"+EtcdVersion, "etcd")
	}
	for _, p := range []string{apiserver, etcd} {
		if st, err := os.Stat(p); err != nil || st.Mode()&0o111 == 0 {
			return "", "", fmt.Errorf("%w (looked for %s)", ErrNotInstalled, p)
		}
	}
	return apiserver, etcd, nil
}

// Config says where and how to run the API server.
type Config struct {
	// Dir holds etcd's data, certificates and keys; reused when present.
	Dir string
	// Port is the API server's secure port on 127.0.0.1; 0 picks one.
	Port int
	// Log receives both servers' output; nil discards it.
	Log io.Writer
}

// Server is a running API server.
type Server struct {
	// URL is https://127.0.0.1:PORT.
	URL string
	// CAFile verifies the serving certificate.
	CAFile string
	// AdminToken is system:masters (the gateway's credential in tests and
	// the demo); UserToken is a user with no rights ("nobody").
	AdminToken, UserToken string

	etcd, apiserver *exec.Cmd
	done            []chan error
}

// Start starts etcd and the API server and waits until the API server is
// ready (about 3 s).
func Start(ctx context.Context, cfg Config) (*Server, error) {
	apiserverBin, etcdBin, err := Binaries()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, err
	}
	logw := cfg.Log
	if logw == nil {
		logw = io.Discard
	}
	admin, err := readOrCreate(filepath.Join(cfg.Dir, "admin.token"))
	if err != nil {
		return nil, err
	}
	user, err := readOrCreate(filepath.Join(cfg.Dir, "user.token"))
	if err != nil {
		return nil, err
	}
	tokens := fmt.Sprintf("%s,sluice-gateway,sluice-gateway,\"system:masters\"\n%s,nobody,nobody,\n", admin, user)
	if err := os.WriteFile(filepath.Join(cfg.Dir, "tokens.csv"), []byte(tokens), 0o600); err != nil {
		return nil, err
	}
	if err := serviceAccountKey(cfg.Dir); err != nil {
		return nil, err
	}
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	port := cfg.Port
	if port == 0 {
		port = ports[2]
	}
	s := &Server{URL: fmt.Sprintf("https://127.0.0.1:%d", port), CAFile: filepath.Join(cfg.Dir, "certs", "apiserver.crt"),
		AdminToken: admin, UserToken: user}

	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	s.etcd = exec.CommandContext(ctx, etcdBin, filepath.Join(cfg.Dir, "etcd"), etcdURL, fmt.Sprintf("http://127.0.0.1:%d", ports[1]))
	var etcdOut bytes.Buffer
	ready := &signal{want: "ready", w: io.MultiWriter(logw, &etcdOut), c: make(chan struct{})}
	s.etcd.Stdout, s.etcd.Stderr = ready, logw
	s.etcd.Cancel = func() error { return s.etcd.Process.Signal(syscall.SIGTERM) }
	if err := s.etcd.Start(); err != nil {
		return nil, fmt.Errorf("etcd: %w", err)
	}
	s.done = append(s.done, wait(s.etcd))
	select {
	case <-ready.c:
	case err := <-s.done[0]:
		return nil, fmt.Errorf("etcd exited: %v", err)
	case <-time.After(30 * time.Second):
		s.Stop()
		return nil, errors.New("etcd did not start within 30s")
	}

	s.apiserver = exec.CommandContext(ctx, apiserverBin,
		"--etcd-servers="+etcdURL,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(port),
		"--cert-dir="+filepath.Join(cfg.Dir, "certs"),
		"--endpoint-reconciler-type=none",
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file="+filepath.Join(cfg.Dir, "sa.pub"),
		"--service-account-signing-key-file="+filepath.Join(cfg.Dir, "sa.key"),
		"--token-auth-file="+filepath.Join(cfg.Dir, "tokens.csv"),
		"--authorization-mode=RBAC",
		"--service-cluster-ip-range=10.96.0.0/24",
		// No controller manager creates service accounts.
		"--disable-admission-plugins=ServiceAccount",
	)
	s.apiserver.Stdout, s.apiserver.Stderr = logw, logw
	s.apiserver.Cancel = func() error { return s.apiserver.Process.Signal(syscall.SIGTERM) }
	if err := s.apiserver.Start(); err != nil {
		s.Stop()
		return nil, fmt.Errorf("kube-apiserver: %w", err)
	}
	s.done = append(s.done, wait(s.apiserver))
	if err := s.waitReady(ctx); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

func (s *Server) waitReady(ctx context.Context) error {
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // the certificate is being made
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-s.done[1]:
			s.done[1] <- err
			return fmt.Errorf("kube-apiserver exited: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+s.AdminToken)
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				if _, err := os.Stat(s.CAFile); err == nil {
					return nil
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return errors.New("kube-apiserver not ready within 90s")
}

// Stop stops both servers: the API server first (it keeps nothing of its
// own; a graceful stop would take it most of a minute), then etcd, which
// stops cleanly.
func (s *Server) Stop() {
	stop := func(c *exec.Cmd, done chan error, sig syscall.Signal) {
		if c == nil || c.Process == nil {
			return
		}
		_ = c.Process.Signal(sig)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = c.Process.Kill()
			<-done
		}
	}
	if len(s.done) > 1 {
		stop(s.apiserver, s.done[1], syscall.SIGKILL)
	}
	if len(s.done) > 0 {
		stop(s.etcd, s.done[0], syscall.SIGTERM)
	}
}

func wait(c *exec.Cmd) chan error {
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	return done
}

// signal closes c once what is written contains want.
type signal struct {
	want string
	w    io.Writer
	seen bytes.Buffer
	c    chan struct{}
	done bool
}

func (s *signal) Write(p []byte) (int, error) {
	if !s.done {
		s.seen.Write(p)
		if strings.Contains(s.seen.String(), s.want) {
			s.done = true
			close(s.c)
		}
	}
	return s.w.Write(p)
}

func readOrCreate(path string) (string, error) {
	if b, err := os.ReadFile(path); err == nil {
		return strings.TrimSpace(string(b)), nil
	}
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	v := hex.EncodeToString(b)
	return v, os.WriteFile(path, []byte(v+"\n"), 0o600)
}

// serviceAccountKey makes the key the API server signs service account
// tokens with (it refuses to start without one).
func serviceAccountKey(dir string) error {
	keyPath, pubPath := filepath.Join(dir, "sa.key"), filepath.Join(dir, "sa.pub")
	if _, err := os.Stat(keyPath); err == nil {
		return nil
	}
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		return err
	}
	if err := os.WriteFile(pubPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}), 0o600)
}

func freePorts(n int) ([]int, error) {
	var out []int
	for i := 0; i < n; i++ {
		p, err := freeport.Get()
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}
