package bus_test

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/devcert"
)

var update = flag.Bool("update", false, "rewrite deploy/nats/users.conf from the identity table")

func deployDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "deploy", "nats")
}

// TestUsersConfig checks that deploy/nats/users.conf is what the identity
// table generates, and that nats.conf (which includes it) gives each
// component exactly the table's permissions.
func TestUsersConfig(t *testing.T) {
	path := filepath.Join(deployDir(), "users.conf")
	if *update {
		require.NoError(t, os.WriteFile(path, []byte(bus.UsersConfig()), 0o644))
	}
	have, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, bus.UsersConfig(), string(have), "deploy/nats/users.conf is stale: go test ./libs/bus -run TestUsersConfig -update")

	pubs, err := bus.LoadOrCreateKeys(t.TempDir())
	require.NoError(t, err)
	t.Setenv("SLUICE_NATS_SERVER_NAME", "n1")
	tlsDir := t.TempDir()
	_, err = devcert.LoadOrCreate(tlsDir)
	require.NoError(t, err)
	t.Setenv("SLUICE_NATS_TLS_CERT", filepath.Join(tlsDir, "cert.pem"))
	t.Setenv("SLUICE_NATS_TLS_KEY", filepath.Join(tlsDir, "key.pem"))
	t.Setenv("SLUICE_NATS_TLS_CA", filepath.Join(tlsDir, "cert.pem"))
	for c, k := range pubs {
		t.Setenv(bus.KeyEnv(c), k)
	}
	opts, err := server.ProcessConfigFile(filepath.Join(deployDir(), "nats.conf"))
	require.NoError(t, err)
	assert.NotNil(t, opts.TLSConfig, "clients use TLS")
	require.NotNil(t, opts.Cluster.TLSConfig, "routes use TLS")
	assert.Equal(t, tls.RequireAndVerifyClientCert, opts.Cluster.TLSConfig.ClientAuth, "routes authenticate with certificates")
	want := map[string]*server.Permissions{}
	for _, u := range bus.NkeyUsers(pubs) {
		want[u.Nkey] = u.Permissions
	}
	require.Len(t, opts.Nkeys, len(bus.Components()))
	for _, u := range opts.Nkeys {
		w, ok := want[u.Nkey]
		require.True(t, ok, u.Nkey)
		assert.Equal(t, norm(w), norm(u.Permissions))
		if w != nil && w.Response != nil {
			require.NotNil(t, u.Permissions.Response)
			assert.Equal(t, w.Response.MaxMsgs, u.Permissions.Response.MaxMsgs)
			assert.Equal(t, w.Response.Expires, u.Permissions.Response.Expires)
		}
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

// identities starts a server with every component's nkey identity and
// returns it with the key directory.
func identities(t *testing.T) (*bus.Embedded, string) {
	t.Helper()
	dir := t.TempDir()
	pubs, err := bus.LoadOrCreateKeys(dir)
	require.NoError(t, err)
	srv, err := bus.StartEmbedded(bus.EmbeddedConfig{StoreDir: t.TempDir(), Nkeys: bus.NkeyUsers(pubs)})
	require.NoError(t, err)
	t.Cleanup(srv.Shutdown)
	return srv, dir
}

// probe is a connection that collects the server's refusals.
type probe struct {
	*bus.Conn
	mu         sync.Mutex
	refused    []string
	seq        int
	breakGlass bool
}

func connectProbe(t *testing.T, srv *bus.Embedded, dir, component string) *probe {
	t.Helper()
	p := &probe{breakGlass: component == bus.CompAdmin}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := bus.Connect(ctx, bus.Config{URL: srv.ClientURL(), Component: component, NkeyFile: bus.KeyFile(dir, component),
		OnError: func(err error) {
			p.mu.Lock()
			p.refused = append(p.refused, err.Error())
			p.mu.Unlock()
		}})
	require.NoError(t, err)
	t.Cleanup(func() { c.NC.Close() })
	p.Conn = c
	return p
}

// settle returns every refusal the server sent for what this connection
// did so far, and forgets them. Refusals reach the error handler in order
// through one queue, so once the refusal of a sentinel publish (which no
// identity but break glass may make) has arrived, all earlier ones have.
func (p *probe) settle(t *testing.T) map[string]bool {
	t.Helper()
	p.seq++
	sentinel := fmt.Sprintf("sentinel.%d", p.seq)
	require.NoError(t, p.NC.Publish(sentinel, nil))
	require.NoError(t, p.NC.Flush())
	deadline := time.Now().Add(5 * time.Second)
	for {
		p.mu.Lock()
		done := p.breakGlass
		for _, e := range p.refused {
			if strings.Contains(e, fmt.Sprintf("Publish to %q", sentinel)) {
				done = true
			}
		}
		if done || time.Now().After(deadline) {
			out := map[string]bool{}
			for _, e := range p.refused {
				out[e] = true
			}
			p.refused = nil
			p.mu.Unlock()
			require.True(t, done, "the sentinel's refusal never arrived")
			return out
		}
		p.mu.Unlock()
		time.Sleep(time.Millisecond)
	}
}

func refusal(kind, subject string) string {
	return fmt.Sprintf("nats: permissions violation: Permissions Violation for %s to %q", kind, subject)
}

// wasRefused does one operation's check.
func (p *probe) wasRefused(t *testing.T, kind, subject string) bool {
	return p.settle(t)[refusal(kind, subject)]
}

// matches reports whether a NATS subject pattern matches a literal subject.
func matches(pattern, subject string) bool {
	pt, st := strings.Split(pattern, "."), strings.Split(subject, ".")
	for i, tok := range pt {
		if tok == ">" {
			return len(st) > i
		}
		if i >= len(st) || (tok != "*" && tok != st[i]) {
			return false
		}
	}
	return len(pt) == len(st)
}

func allowed(sp *server.SubjectPermission, subject string) bool {
	if sp == nil {
		return true
	}
	ok := false
	for _, a := range sp.Allow {
		if matches(a, subject) {
			ok = true
		}
	}
	for _, d := range sp.Deny {
		if matches(d, subject) {
			ok = false
		}
	}
	return ok
}

// literal turns a pattern into a subject it matches.
func literal(pattern string) string {
	toks := strings.Split(pattern, ".")
	for i, tok := range toks {
		switch tok {
		case "*":
			toks[i] = "probe"
		case ">":
			toks[i] = "probe.x"
		}
	}
	return strings.Join(toks, ".")
}

// TestEveryIdentityHoldsOnlyItsList connects as each NATS identity and
// tries every subject any identity may use, and more: the server allows
// exactly what the identity's own list allows and refuses the rest.
func TestEveryIdentityHoldsOnlyItsList(t *testing.T) {
	srv, dir := identities(t)
	pubProbes := map[string]bool{"sluice.api.probe": true, "$JS.API.STREAM.DELETE.AUDIT": true, "$JS.API.STREAM.PURGE.AUDIT": true,
		"$JS.API.STREAM.UPDATE.AUDIT": true, "$JS.API.STREAM.MSG.DELETE.AUDIT": true, "$JS.API.STREAM.DELETE.CONTROL": true,
		"$JS.API.STREAM.CREATE.ROGUE": true, "$KV.sluice_approvals.forged": true, "_INBOX.api.probe": true, "_INBOX.pgworker.probe": true}
	subProbes := map[string]bool{">": true, "_INBOX.>": true, "sluice.>": true, "$JS.>": true, "sluice.api.>": true, "sluice.audit.>": true}
	for _, c := range bus.Components() {
		p := c.Permissions()
		if p == nil {
			continue
		}
		for _, s := range append(append([]string(nil), p.Publish.Allow...), p.Publish.Deny...) {
			pubProbes[literal(s)] = true
		}
		for _, s := range p.Subscribe.Allow {
			subProbes[literal(s)] = true
			pubProbes[literal(s)] = true
		}
	}
	for _, c := range bus.Components() {
		t.Run(c.Name, func(t *testing.T) {
			perms := c.Permissions()
			p := connectProbe(t, srv, dir, c.Name)
			for subj := range pubProbes {
				// Publishing into streams would store probes; the
				// permission check happens first either way.
				require.NoError(t, p.NC.Publish(subj, []byte("probe")))
			}
			var subs []*nats.Subscription
			for subj := range subProbes {
				sub, err := p.NC.SubscribeSync(subj)
				require.NoError(t, err)
				subs = append(subs, sub)
			}
			refused := p.settle(t)
			for _, sub := range subs {
				_ = sub.Unsubscribe()
			}
			for subj := range pubProbes {
				want := perms != nil && !allowed(perms.Publish, subj)
				assert.Equal(t, want, refused[refusal("Publish", subj)], "publish %s", subj)
			}
			for subj := range subProbes {
				want := perms != nil && !allowed(perms.Subscribe, subj)
				if strings.ContainsAny(subj, "*>") && perms != nil {
					want = true // no identity but break glass subscribes to a wildcard of others
					for _, a := range perms.Subscribe.Allow {
						if a == subj {
							want = false
						}
					}
				}
				assert.Equal(t, want, refused[refusal("Subscription", subj)], "subscribe %s", subj)
			}
		})
	}
}

// TestWorkerCannotActAsAService spells out what a compromised PostgreSQL
// worker must not be able to do.
func TestWorkerCannotActAsAService(t *testing.T) {
	srv, dir := identities(t)
	admin := connectProbe(t, srv, dir, bus.CompAdmin)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, bus.Provision(ctx, admin.JS, bus.Topology{}))
	w := connectProbe(t, srv, dir, bus.CompPGWorker)
	for _, subj := range []string{bus.APIApprovalsDecide, bus.APIApprovalsSlackDecide, bus.APIControlApply, bus.APIControlBreakGlass,
		bus.APIGrantsRequest, bus.APIGrantsRevoke, bus.APIApprovalsList, bus.APIApprovalsGet, bus.APIPolicyTest, bus.APIControlTargets,
		"sluice.audit.s.forged", "sluice.evt.approvals.request.x.approved", "$KV.sluice_approvals.x", "$KV.sluice_control.policy.current"} {
		require.NoError(t, w.NC.Publish(subj, []byte("x")))
		assert.True(t, w.wasRefused(t, "Publish", subj), "worker published %s", subj)
	}
	for _, subj := range []string{"_INBOX.api.>", "_INBOX.>", bus.APIIdentityVerify, bus.APIApprovalsDecide, "sluice.rec.>"} {
		_, err := w.NC.SubscribeSync(subj)
		require.NoError(t, err)
		assert.True(t, w.wasRefused(t, "Subscription", subj), "worker subscribed to %s", subj)
	}
	// Reads of the audit log and the sessions index are refused.
	short, cancel2 := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel2()
	_, err := w.JS.Stream(short, bus.StreamAudit)
	assert.Error(t, err)
	_, err = w.JS.KeyValue(short, bus.BucketSessions)
	assert.Error(t, err)
	// What a worker does is allowed: read the control state, record.
	kv, err := w.JS.KeyValue(ctx, bus.BucketControl)
	require.NoError(t, err)
	pctx, cancel3 := context.WithTimeout(context.Background(), time.Second)
	defer cancel3()
	_, err = kv.Put(pctx, "policy.current", []byte("forged"))
	assert.Error(t, err, "workers read the control state, never write it")
	_, err = w.JS.Publish(ctx, "sluice.rec.w1.1", []byte("batch"))
	assert.NoError(t, err, "workers record sessions")
}

// TestProtectedStreams: no component, whatever its rights, destroys or
// weakens a protected stream; only break glass can.
func TestProtectedStreams(t *testing.T) {
	srv, dir := identities(t)
	admin := connectProbe(t, srv, dir, bus.CompAdmin)
	ctx := context.Background()
	require.NoError(t, bus.Provision(ctx, admin.JS, bus.Topology{}))
	rec := connectProbe(t, srv, dir, bus.CompRecorder)
	_, err := rec.JS.Publish(ctx, "sluice.audit.s.x", []byte("record"))
	require.NoError(t, err)
	// A refused request goes unanswered until its timeout: try them all
	// at once.
	var wg sync.WaitGroup
	for _, c := range bus.Components() {
		if c.Unrestricted {
			continue
		}
		p := connectProbe(t, srv, dir, c.Name)
		for name, op := range map[string]func(context.Context) error{
			"delete stream": func(ctx context.Context) error { return p.JS.DeleteStream(ctx, bus.StreamAudit) },
			"purge":         func(ctx context.Context) error { return purge(ctx, p.JS) },
			"update": func(ctx context.Context) error {
				cfg := bus.Topology{}.AuditStream()
				cfg.MaxMsgs = 1
				_, err := p.JS.UpdateStream(ctx, cfg)
				return err
			},
		} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sctx, cancel := context.WithTimeout(ctx, time.Second)
				defer cancel()
				assert.Error(t, op(sctx), "%s: %s", c.Name, name)
			}()
		}
	}
	wg.Wait()
	s, err := admin.JS.Stream(ctx, bus.StreamAudit)
	require.NoError(t, err)
	info, err := s.Info(ctx)
	require.NoError(t, err)
	assert.Equal(t, uint64(1), info.State.Msgs, "the record survived")
	require.NoError(t, admin.JS.DeleteStream(ctx, bus.StreamAudit))
	_, err = admin.JS.Stream(ctx, bus.StreamAudit)
	assert.ErrorIs(t, err, jetstream.ErrStreamNotFound)
}

func purge(ctx context.Context, js jetstream.JetStream) error {
	s, err := js.Stream(ctx, bus.StreamAudit)
	if err != nil {
		return err
	}
	return s.Purge(ctx)
}

// TestRevokeOneIdentity removes the worker's key and reloads the server:
// the worker is cut off, every other component goes on.
func TestRevokeOneIdentity(t *testing.T) {
	srv, dir := identities(t)
	w := connectProbe(t, srv, dir, bus.CompPGWorker)
	api := connectProbe(t, srv, dir, bus.CompAPI)
	pubs, err := bus.LoadOrCreateKeys(dir)
	require.NoError(t, err)
	delete(pubs, bus.CompPGWorker)
	require.NoError(t, srv.ReloadNkeys(bus.NkeyUsers(pubs)))
	deadline := time.Now().Add(5 * time.Second)
	for w.NC.IsConnected() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	assert.False(t, w.NC.IsConnected(), "the revoked worker is disconnected")
	require.NoError(t, api.NC.Flush(), "the API is untouched")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err = bus.Connect(ctx, bus.Config{URL: srv.ClientURL(), Component: bus.CompPGWorker, NkeyFile: bus.KeyFile(dir, bus.CompPGWorker)})
	assert.Error(t, err, "the revoked key cannot connect again")
}

// TestArchitectureShowsTheTable keeps ARCHITECTURE.md's identity table
// equal to the one in code.
func TestArchitectureShowsTheTable(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join(deployDir(), "..", "..", "ARCHITECTURE.md"))
	require.NoError(t, err)
	assert.Contains(t, string(doc), bus.IdentityTable(), "ARCHITECTURE.md's NATS identity table is stale; paste this:\n%s", bus.IdentityTable())
}

// TestSIEMReadsAuditOnly is the consumer example of README.md: the read-only
// SIEM identity runs its durable consumer on AUDIT, and can neither write
// the stream nor take over the exporter's consumer.
func TestSIEMReadsAuditOnly(t *testing.T) {
	srv, dir := identities(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, bus.Provision(ctx, connectProbe(t, srv, dir, bus.CompAdmin).JS, bus.Topology{}))
	rec := connectProbe(t, srv, dir, bus.CompRecorder)
	for i := 0; i < 3; i++ {
		_, err := rec.JS.Publish(ctx, fmt.Sprintf("sluice.audit.s.s%d", i), []byte("record"))
		require.NoError(t, err)
	}
	siem := connectProbe(t, srv, dir, bus.CompSIEM)
	cons, err := siem.JS.CreateOrUpdateConsumer(ctx, bus.StreamAudit, jetstream.ConsumerConfig{
		Durable: bus.DurableSIEM, AckPolicy: jetstream.AckExplicitPolicy, FilterSubject: "sluice.audit.s.>"})
	require.NoError(t, err)
	batch, err := cons.Fetch(10, jetstream.FetchMaxWait(2*time.Second))
	require.NoError(t, err)
	n := 0
	for m := range batch.Messages() {
		require.NoError(t, m.Ack())
		n++
	}
	assert.Equal(t, 3, n)

	short, cancel2 := context.WithTimeout(context.Background(), time.Second)
	defer cancel2()
	_, err = siem.JS.Publish(short, "sluice.audit.s.forged", []byte("x"))
	assert.Error(t, err, "the SIEM identity cannot write the audit log")
	_, err = siem.JS.CreateOrUpdateConsumer(short, bus.StreamAudit, jetstream.ConsumerConfig{Durable: bus.ExportDurable("syslog"), AckPolicy: jetstream.AckExplicitPolicy})
	assert.Error(t, err, "nor touch the exporter's consumer")
}
