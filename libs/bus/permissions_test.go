package bus_test

import (
	"context"
	"path/filepath"
	"runtime"
	"sort"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"sluice.dev/sluice/libs/bus"
)

func connectAs(t *testing.T, url, user string) *bus.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := bus.Connect(ctx, bus.Config{URL: url, User: user, Password: user + "-pw"})
	require.NoError(t, err)
	t.Cleanup(func() { c.NC.Close() })
	return c
}

// withUsers starts a server that requires the deployment's users, each with
// the password "<user>-pw" (see connectAs).
func withUsers(t *testing.T) *bus.Embedded {
	t.Helper()
	srv, err := bus.StartEmbedded(bus.EmbeddedConfig{StoreDir: t.TempDir(), Users: bus.Users("sluice-pw", "worker-pw", "admin-pw")})
	require.NoError(t, err)
	t.Cleanup(srv.Shutdown)
	return srv
}

func short() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), time.Second)
}

func TestPermissionsProtectAudit(t *testing.T) {
	srv := withUsers(t)
	svc := connectAs(t, srv.ClientURL(), "sluice")
	ctx := context.Background()
	require.NoError(t, bus.Provision(ctx, svc.JS, bus.Topology{}))
	_, err := svc.JS.Publish(ctx, "sluice.audit.s.x", []byte("record"))
	require.NoError(t, err)

	// The services' user cannot destroy or weaken the audit stream.
	for name, op := range map[string]func(context.Context) error{
		"delete stream": func(ctx context.Context) error { return svc.JS.DeleteStream(ctx, bus.StreamAudit) },
		"purge": func(ctx context.Context) error {
			s, err := svc.JS.Stream(ctx, bus.StreamAudit)
			if err != nil {
				return err
			}
			return s.Purge(ctx)
		},
		"delete message": func(ctx context.Context) error {
			s, err := svc.JS.Stream(ctx, bus.StreamAudit)
			if err != nil {
				return err
			}
			return s.DeleteMsg(ctx, 1)
		},
		"update": func(ctx context.Context) error {
			cfg := bus.Topology{}.AuditStream()
			cfg.MaxMsgs = 1
			_, err := svc.JS.UpdateStream(ctx, cfg)
			return err
		},
	} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := short()
			defer cancel()
			assert.Error(t, op(ctx))
		})
	}
	s, err := svc.JS.Stream(ctx, bus.StreamAudit)
	require.NoError(t, err)
	info, err := s.Info(ctx)
	require.NoError(t, err)
	assert.Equal(t, uint64(1), info.State.Msgs, "the record survived")

	// Workers cannot write the audit stream, control state or events, nor
	// answer service requests.
	worker := connectAs(t, srv.ClientURL(), "worker")
	publish := func(subject string) error {
		ctx, cancel := short()
		defer cancel()
		_, err := worker.JS.Publish(ctx, subject, []byte("x"))
		return err
	}
	assert.Error(t, publish("sluice.audit.s.x"))
	assert.Error(t, publish("sluice.evt.control.target.x.configured"))
	assert.NoError(t, publish("sluice.rec.s1.command"), "workers publish session events")
	wctx, cancel := short()
	defer cancel()
	kv, err := worker.JS.KeyValue(wctx, bus.BucketControl)
	require.NoError(t, err, "workers read the control state")
	_, err = kv.Put(wctx, "policy.current", []byte("forged"))
	assert.Error(t, err)
	sub, err := worker.NC.SubscribeSync("sluice.api.identity.token.verify")
	require.NoError(t, err)
	require.NoError(t, worker.NC.Flush())
	_, err = sub.NextMsg(200 * time.Millisecond)
	assert.Error(t, err)
	assert.NotNil(t, worker.NC.LastError(), "the server refused the subscription")

	// The break-glass admin can.
	admin := connectAs(t, srv.ClientURL(), "admin")
	actx, cancel2 := short()
	defer cancel2()
	require.NoError(t, admin.JS.DeleteStream(actx, bus.StreamAudit))
	_, err = admin.JS.Stream(actx, bus.StreamAudit)
	assert.ErrorIs(t, err, jetstream.ErrStreamNotFound)
}

// TestDeployConfigMatches checks that deploy/nats/nats.conf grants exactly
// the permissions defined here.
func TestDeployConfigMatches(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	conf := filepath.Join(filepath.Dir(file), "..", "..", "deploy", "nats", "nats.conf")
	for k, v := range map[string]string{"SLUICE_NATS_SERVER_NAME": "n1", "SLUICE_NATS_PASSWORD": "a", "SLUICE_NATS_WORKER_PASSWORD": "b", "SLUICE_NATS_ADMIN_PASSWORD": "c"} {
		t.Setenv(k, v)
	}
	opts, err := server.ProcessConfigFile(conf)
	require.NoError(t, err)
	want := map[string]*server.Permissions{"sluice": bus.ServicePermissions(), "worker": bus.WorkerPermissions(), "admin": nil}
	require.Len(t, opts.Users, 3)
	for _, u := range opts.Users {
		w, ok := want[u.Username]
		require.True(t, ok, u.Username)
		assert.Equal(t, norm(w), norm(u.Permissions), u.Username)
	}
}

func norm(p *server.Permissions) [4][]string {
	var out [4][]string
	if p == nil {
		return out
	}
	get := func(sp *server.SubjectPermission) ([]string, []string) {
		if sp == nil {
			return nil, nil
		}
		a, d := append([]string(nil), sp.Allow...), append([]string(nil), sp.Deny...)
		sort.Strings(a)
		sort.Strings(d)
		return a, d
	}
	out[0], out[1] = get(p.Publish)
	out[2], out[3] = get(p.Subscribe)
	return out
}
