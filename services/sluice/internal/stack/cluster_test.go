package stack_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/devissuer"
	"sluice.dev/sluice/libs/secrets"
	"sluice.dev/sluice/libs/testkit"
	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
	"sluice.dev/sluice/services/identity"
	"sluice.dev/sluice/services/sluice/internal/stack"
)

// TestThreeNodeCluster runs the services against a three-node JetStream
// cluster with R3 streams and keeps using them after one node is stopped.
func TestThreeNodeCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test: skipped with -short")
	}
	cluster := testkit.NATSCluster(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	iss := &devissuer.Issuer{Audience: "sluice", Key: key}
	idp := httptest.NewServer(http.StripPrefix("/oidc", iss.Handler()))
	defer idp.Close()
	iss.URL = idp.URL + "/oidc"

	urls := []string{cluster.Servers[0].ClientURL(), cluster.Servers[1].ClientURL(), cluster.Servers[2].ClientURL()}
	conn, err := bus.Connect(ctx, bus.Config{URL: strings.Join(urls, ","), Name: "cluster-test"})
	require.NoError(t, err)
	defer conn.NC.Close()
	// The node the services are connected to is the one that will stop,
	// forcing a reconnect to the others.
	victim := slices.Index(urls, conn.NC.ConnectedUrl())
	require.GreaterOrEqual(t, victim, 0)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	_, recKey, _ := ed25519.GenerateKey(rand.Reader)
	master, err := secrets.LoadOrCreateKeyFile(filepath.Join(t.TempDir(), "master.key"))
	require.NoError(t, err)
	o := &stack.Options{
		// This cluster has no users: every service shares the one
		// connection (the identities are tested in libs/bus and e2e).
		Dial: func(context.Context, string) (*bus.Conn, error) { return conn, nil },
		// Warnings and errors are shown when the test fails.
		Log:         zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel),
		Topology:    bus.Topology{Replicas: 3},
		Provider:    identity.Provider{Issuer: iss.URL, Audience: "sluice"},
		APIListener: ln, RecorderKey: recKey, PGAddr: "127.0.0.1:0", K8sAddr: "127.0.0.1:0", TLSDir: t.TempDir(), MasterKey: master,
	}

	done := make(chan error, 1)
	go func() { done <- stack.RunAll(ctx, o) }()
	testkit.Eventually(t, 30*time.Second, func() error {
		_, err := conn.JS.Stream(ctx, bus.StreamControl)
		return err
	})
	info, err := conn.JS.Stream(ctx, bus.StreamControl)
	require.NoError(t, err)
	assert.Equal(t, 3, info.CachedInfo().Config.Replicas)
	// The first admin group comes through the break-glass path.
	testkit.Eventually(t, 30*time.Second, func() error {
		select {
		case err := <-done:
			t.Fatalf("the services stopped: %v", err)
		default:
		}
		var resp controlv1.ApplyResponse
		err := bus.Request(ctx, conn.NC, bus.APIControlBreakGlass, &controlv1.ApplyRequest{Config: []byte("access:\n  admins: [sluice-admins]\n")}, &resp)
		if err == nil && resp.GetError() != nil {
			err = fmt.Errorf("%s", resp.GetError().GetMessage())
		}
		return err
	})
	api := "http://" + ln.Addr().String()
	admin, err := iss.Mint(devissuer.Claims{Subject: "root", Groups: []string{"sluice-admins"}})
	require.NoError(t, err)

	applyTarget := func(name string) error {
		body := fmt.Sprintf("targets:\n  - name: %s\n    kind: postgres\n    postgres: {host: db.internal, database: app, user: gw, password: {env: PGPW}}\n", name)
		req, _ := http.NewRequest(http.MethodPost, api+"/api/v1/apply", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+admin)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(resp.Body)
			return fmt.Errorf("apply: HTTP %d: %s", resp.StatusCode, b)
		}
		return nil
	}
	whoami := func() (string, error) {
		req, _ := http.NewRequest(http.MethodGet, api+"/api/v1/whoami", nil)
		req.Header.Set("Authorization", "Bearer "+admin)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		var p struct{ Subject string }
		_ = json.NewDecoder(resp.Body).Decode(&p)
		if resp.StatusCode != http.StatusOK {
			return "", fmt.Errorf("whoami: HTTP %d", resp.StatusCode)
		}
		return p.Subject, nil
	}
	targets := func() ([]string, error) {
		req, _ := http.NewRequest(http.MethodGet, api+"/api/v1/targets", nil)
		req.Header.Set("Authorization", "Bearer "+admin)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		var out struct{ Targets []struct{ Name string } }
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			return nil, err
		}
		var names []string
		for _, t := range out.Targets {
			names = append(names, t.Name)
		}
		return names, nil
	}

	testkit.Eventually(t, 20*time.Second, func() error { return applyTarget("before") })
	sub, err := whoami()
	require.NoError(t, err)
	assert.Equal(t, "root", sub)

	cluster.Stop(victim)

	// The connection moves to a surviving node; JetStream elects new leaders.
	testkit.Eventually(t, 30*time.Second, func() error {
		select {
		case err := <-done:
			t.Fatalf("the services stopped: %v", err)
		default:
		}
		if _, err := whoami(); err != nil {
			return err
		}
		return applyTarget("after")
	})
	testkit.Eventually(t, 45*time.Second, func() error {
		select {
		case err := <-done:
			t.Fatalf("the services stopped: %v", err)
		default:
		}
		names, err := targets()
		if err != nil {
			return err
		}
		if len(names) != 2 {
			return fmt.Errorf("targets %v", names)
		}
		return nil
	})
	assert.NotEqual(t, urls[victim], conn.NC.ConnectedUrl())
	s, err := conn.JS.Stream(ctx, bus.StreamControl)
	require.NoError(t, err)
	si, err := s.Info(ctx)
	require.NoError(t, err)
	assert.Equal(t, uint64(3), si.State.Msgs, "the access section and two targets")
	cancel()
	require.NoError(t, <-done)
}
