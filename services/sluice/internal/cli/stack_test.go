package cli

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/controlstate"
	"sluice.dev/sluice/libs/testkit"
	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
	"sluice.dev/sluice/services/api"
	"sluice.dev/sluice/services/control"
	"sluice.dev/sluice/services/identity/identitytest"
	"sluice.dev/sluice/services/policy"
)

// testStack is the part of Sluice the configuration commands talk to, each
// service real: NATS, identity, control, policy and the HTTP API.
type testStack struct {
	t    *testing.T
	ctx  context.Context
	conn *bus.Conn
	idp  *identitytest.IdP
	api  string
	view *controlstate.View
}

// bootstrap are the roles and approver group every test starts with.
const bootstrap = `access:
  admins: [admins]
  auditors: [auditors]
approvers:
  - name: approvers
    groups: [approvers]
`

func startStack(t *testing.T) *testStack {
	t.Helper()
	_, conn := testkit.NATS(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	require.NoError(t, bus.Provision(ctx, conn.JS, bus.Topology{}))
	s := &testStack{t: t, ctx: ctx, conn: conn, idp: identitytest.Start(ctx, t, conn), view: controlstate.NewView()}
	go func() { _ = control.New(control.Config{Conn: conn, Log: zerolog.Nop()}).Run(ctx) }()
	go func() { _ = policy.New(policy.Config{Conn: conn, Log: zerolog.Nop()}).Run(ctx) }()
	go func() { _ = s.view.Follow(ctx, conn.JS) }()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s.api = "http://" + ln.Addr().String()
	go func() { _ = api.New(api.Config{Listener: ln, Conn: conn, Log: zerolog.Nop()}).Run(ctx) }()
	s.breakGlass(bootstrap, "bootstrap.yaml")
	// Wait until an admin's token is accepted end to end.
	admin := s.idp.Token("root", "admins")
	testkit.Eventually(t, 20*time.Second, func() error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.api+"/api/v1/targets", nil)
		req.Header.Set("Authorization", "Bearer "+admin)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(resp.Body)
			return fmt.Errorf("targets: %d %s", resp.StatusCode, b)
		}
		return nil
	})
	return s
}

// breakGlass applies a configuration as the operator does (and as `sluice
// dev` registers its demo target), through the break-glass subject.
func (s *testStack) breakGlass(config, file string) {
	s.t.Helper()
	var resp controlv1.ApplyResponse
	testkit.Eventually(s.t, 20*time.Second, func() error {
		return bus.Request(s.ctx, s.conn.NC, bus.APIControlBreakGlass, &controlv1.ApplyRequest{Config: []byte(config), FileName: file}, &resp)
	})
	require.Nil(s.t, resp.GetError(), "%v", resp.GetErrors())
}

// result is what one run of the CLI gave.
type result struct {
	code           int
	stdout, stderr string
}

// cli runs the CLI against the stack with token as the caller's.
func (s *testStack) cli(token string, args ...string) result {
	s.t.Helper()
	s.t.Setenv("SLUICE_TOKEN", token)
	s.t.Setenv("SLUICE_CLIENT_ID", "")
	s.t.Setenv("XDG_CONFIG_HOME", s.t.TempDir())
	var out, errOut bytes.Buffer
	code := run(s.ctx, append([]string{"--api", s.api}, args...), &out, &errOut)
	return result{code: code, stdout: out.String(), stderr: errOut.String()}
}

// targetNames lists the registered targets, as the control bucket holds them.
func (s *testStack) targetNames() []string {
	var names []string
	for _, t := range s.view.Targets() {
		names = append(names, t.GetSpec().GetName())
	}
	return names
}

func writeFile(t *testing.T, name, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(p, []byte(text), 0o600))
	return p
}

func sealed(b string) string { return base64.StdEncoding.EncodeToString([]byte(b)) }
