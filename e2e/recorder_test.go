package e2e

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"sluice.dev/sluice/libs/auditchain"
	"sluice.dev/sluice/libs/auditlog"
	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/recording"
	"sluice.dev/sluice/libs/testkit"
	auditv1 "sluice.dev/sluice/proto/sluice/audit/v1"
	commonv1 "sluice.dev/sluice/proto/sluice/common/v1"
	policyv1 "sluice.dev/sluice/proto/sluice/policy/v1"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
)

// recorderProc is a `sluice serve recorder` subprocess.
type recorderProc struct {
	cmd  *exec.Cmd
	done chan error
}

func startRecorder(t *testing.T, url, natsKeys, keyFile string) *recorderProc {
	t.Helper()
	cmd := exec.Command(sluiceBin, "serve", "recorder", "--nats", url, "--nats-nkey-file", bus.KeyFile(natsKeys, bus.CompRecorder),
		"--recorder-key-file", keyFile, "--log-level", "warn", "--admin-addr", "127.0.0.1:0")
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Start())
	p := &recorderProc{cmd: cmd, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
		p.done <- nil
	})
	return p
}

func (p *recorderProc) kill9(t *testing.T) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGKILL))
	err := <-p.done
	p.done <- err
}

func countRecords(t *testing.T, js jetstream.JetStream) int {
	n := 0
	require.NoError(t, auditlog.Read(context.Background(), js, auditlog.Options{}, func(auditlog.Entry) error { n++; return nil }))
	return n
}

// TestRecorderKill9UnderLoad kills recorders with SIGKILL while workers
// emit events, restarts them, and checks that nothing was lost, duplicated
// or mis-chained.
func TestRecorderKill9UnderLoad(t *testing.T) {
	// The deployment's identities: the recorders as "recorder", the
	// emitting workers as "pgworker", the checks as "siem".
	natsKeys := t.TempDir()
	pubs, err := bus.LoadOrCreateKeys(natsKeys)
	require.NoError(t, err)
	srv, err := bus.StartEmbedded(bus.EmbeddedConfig{StoreDir: t.TempDir(), Nkeys: bus.NkeyUsers(pubs)})
	require.NoError(t, err)
	t.Cleanup(srv.Shutdown)
	ctx := context.Background()
	as := func(component string) *bus.Conn {
		c, err := bus.Connect(ctx, bus.Config{URL: srv.ClientURL(), Component: component, NkeyFile: bus.KeyFile(natsKeys, component)})
		require.NoError(t, err)
		t.Cleanup(func() { c.NC.Close() })
		return c
	}
	conn, reader := as(bus.CompPGWorker), as(bus.CompSIEM)
	require.NoError(t, bus.Provision(ctx, as(bus.CompAdmin).JS, bus.Topology{}))
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	keyFile := filepath.Join(t.TempDir(), "recorder.key")
	require.NoError(t, os.WriteFile(keyFile, []byte(base64.StdEncoding.EncodeToString(priv.Seed())), 0o600))

	r1 := startRecorder(t, srv.ClientURL(), natsKeys, keyFile)
	r2 := startRecorder(t, srv.ClientURL(), natsKeys, keyFile)

	rec := recording.New(conn.JS)
	var emitted atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 10; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				sess := rec.Open(recording.NewSessionID())
				for i := 0; i < 40; i++ {
					if _, err := sess.Emit(&sessionv1.Event{Body: &sessionv1.Event_Command{Command: &sessionv1.Command{CommandId: uint64(i), Text: "UPDATE t SET x = x + 1 WHERE id = 1"}}}); err != nil {
						t.Error(err)
						return
					}
					if i%5 == 4 {
						if err := sess.Durable(ctx); err != nil {
							t.Error(err)
							return
						}
					}
				}
				if err := sess.Durable(ctx); err != nil {
					t.Error(err)
					return
				}
				emitted.Add(40)
				select {
				case <-stop:
					return
				default:
				}
			}
		}()
	}
	testkit.Eventually(t, 30*time.Second, func() error {
		if n := countRecords(t, reader.JS); n < 1000 {
			return fmt.Errorf("%d records so far", n)
		}
		return nil
	})
	r1.kill9(t)
	time.Sleep(300 * time.Millisecond)
	r2.kill9(t)
	time.Sleep(300 * time.Millisecond) // events pile up in SESSIONS meanwhile
	startRecorder(t, srv.ClientURL(), natsKeys, keyFile)
	time.Sleep(500 * time.Millisecond)
	startRecorder(t, srv.ClientURL(), natsKeys, keyFile)
	time.Sleep(500 * time.Millisecond)
	close(stop)
	wg.Wait()
	total := int(emitted.Load())
	testkit.Eventually(t, 60*time.Second, func() error {
		if n := countRecords(t, reader.JS); n != total {
			return fmt.Errorf("%d of %d records", n, total)
		}
		return nil
	})
	_, problems, err := auditlog.Verify(ctx, reader.JS, "", map[string]ed25519.PublicKey{auditchain.KeyID(pub): pub})
	require.NoError(t, err)
	assert.Empty(t, problems)
	t.Logf("%d events recorded across two SIGKILLs with no loss", total)
}

// recordSession records a realistic session into a running sluice dev as
// the worker user, and returns its id.
func recordSession(t *testing.T, env *devEnv) string {
	t.Helper()
	nc := env.NATS(bus.CompPGWorker)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	sess := recording.New(js).Open(recording.NewSessionID())
	ctx := context.Background()
	events := []*sessionv1.Event{
		{Body: &sessionv1.Event_Started{Started: &sessionv1.Started{
			Principal: &commonv1.Principal{Subject: "alice", Email: "alice@example.com", Groups: []string{"engineers"}},
			Target:    &commonv1.Target{Name: "demo", Kind: "postgres"}, Protocol: "postgres", ClientAddr: "127.0.0.1:50000",
			ClientApplication: "psql", TlsVersion: "TLS 1.3", Worker: "e2e"}}},
		{Body: &sessionv1.Event_Command{Command: &sessionv1.Command{CommandId: 1, Text: "SELECT name FROM customers WHERE id = 1"}}},
		{Body: &sessionv1.Event_Decided{Decided: &sessionv1.Decided{CommandId: 1, Decision: &policyv1.Decision{Action: "allow", Rule: "allow-engineer-reads", Revision: 1,
			Statements: []*policyv1.Statement{{Kind: "read", Command: "SELECT"}}}}}},
		{Body: &sessionv1.Event_Result{Result: &sessionv1.Result{CommandId: 1, CommandTag: "SELECT 1", Rows: 1, DurationUs: 840}}},
		{Body: &sessionv1.Event_Command{Command: &sessionv1.Command{CommandId: 2, Text: "SET ROLE postgres"}}},
		{Body: &sessionv1.Event_Decided{Decided: &sessionv1.Decided{CommandId: 2, Decision: &policyv1.Decision{Action: "deny", Rule: "deny-role-changes", Revision: 1,
			Reason: "changing roles is not allowed", Statements: []*policyv1.Statement{{Kind: "privilege", Command: "SET"}}}}}},
		{Body: &sessionv1.Event_Ended{Ended: &sessionv1.Ended{Reason: "client closed the connection", Commands: 2, Denied: 1}}},
	}
	// One event at a time, each waited for in AUDIT, so that each is a
	// record of its own and the tampering below can name it. (Events that
	// arrive together share a record; libs/auditchain tests those.)
	reader, err := jetstream.New(env.NATS(bus.CompSIEM))
	require.NoError(t, err)
	for i, ev := range events {
		require.NoError(t, sess.Record(ctx, ev))
		testkit.Eventually(t, 20*time.Second, func() error {
			n := 0
			err := auditlog.Read(ctx, reader, auditlog.Options{Session: sess.ID}, func(auditlog.Entry) error { n++; return nil })
			if err == nil && n != i+1 {
				err = fmt.Errorf("%d of %d events in AUDIT", n, i+1)
			}
			return err
		})
	}
	return sess.ID
}

func TestAuditCLI(t *testing.T) {
	env := startDev(t, devOptions{noDemo: true})
	auditor := []string{"SLUICE_TOKEN=" + env.Token("--sub", "audrey", "--groups", "auditors")}
	id := recordSession(t, env)

	// Sessions list, replay, verify, tail.
	testkit.Eventually(t, 20*time.Second, func() error {
		out, err := env.CLI(auditor, "sessions", "list")
		if err != nil || !strings.Contains(out, id) || !strings.Contains(out, "ended") {
			return fmt.Errorf("sessions list: %v\n%s", err, out)
		}
		return nil
	})
	out, err := env.CLI(auditor, "sessions", "list", "--principal", "bob")
	require.NoError(t, err)
	assert.NotContains(t, out, id)

	out, err = env.CLI(auditor, "replay", id)
	require.NoError(t, err, out)
	for _, want := range []string{"alice (human) <alice@example.com>, groups engineers", "psql", "TLS 1.3",
		"#1  SELECT name FROM customers WHERE id = 1", "ALLOW by rule allow-engineer-reads (policy revision 1)",
		"→ SELECT 1, 1 row(s)", "DENY by rule deny-role-changes", "changing roles is not allowed", "2 command(s), 1 denied"} {
		assert.Contains(t, out, want)
	}
	t.Logf("replay:\n%s", out)

	testkit.Eventually(t, 20*time.Second, func() error {
		out, err := env.CLI(auditor, "audit", "verify")
		if err != nil || !strings.Contains(out, "intact") {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})

	out, err = env.CLI(auditor, "audit", "tail", "--format", "ocsf")
	require.NoError(t, err, out)
	assert.Contains(t, out, `"class_uid":3002`)
	assert.Contains(t, out, `"class_uid":6005`)
	assert.Contains(t, out, `"disposition":"Blocked"`)
	assert.Equal(t, 7, len(lines(out)))

	// Engineers may not read the audit log.
	_, err = env.CLI([]string{"SLUICE_TOKEN=" + env.Token("--sub", "alice", "--groups", "engineers")}, "sessions", "list")
	require.Error(t, err)

	// Tamper behind the recorder's back: a break-glass admin deletes the
	// stream and rebuilds it with one record edited and its chain
	// recomputed. The signed checkpoint catches it.
	waitCheckpoint(t, env, id, 7)
	rebuildAudit(t, env, func(recs []*nats.RawStreamMsg) []*nats.RawStreamMsg {
		var out []*nats.RawStreamMsg
		var prev []byte
		for _, m := range recs {
			if m.Subject == auditlog.SubjectCheckpoint {
				out = append(out, m)
				continue
			}
			var r auditv1.Record
			require.NoError(t, proto.Unmarshal(m.Data, &r))
			if r.GetSeq() == 5 {
				require.Len(t, r.GetEvents(), 1)
				var ev sessionv1.Event
				require.NoError(t, proto.Unmarshal(r.GetEvents()[0], &ev))
				ev.GetCommand().Text = "SELECT 'nothing to see'"
				r.Events[0], _ = proto.Marshal(&ev)
			}
			auditchain.Seal(&r, prev)
			prev = r.Hash
			m.Data, _ = proto.Marshal(&r)
			out = append(out, m)
		}
		return out
	})
	out, err = env.CLI(auditor, "audit", "verify")
	require.Error(t, err)
	assert.Contains(t, out, id+" seq 5")
	assert.Contains(t, out, "edited")
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee)
	assert.Equal(t, 2, ee.ExitCode())

	// A removed record is named too.
	rebuildAudit(t, env, func(recs []*nats.RawStreamMsg) []*nats.RawStreamMsg {
		var out []*nats.RawStreamMsg
		for _, m := range recs {
			var r auditv1.Record
			if m.Subject != auditlog.SubjectCheckpoint && proto.Unmarshal(m.Data, &r) == nil && r.GetSeq() == 3 {
				continue
			}
			out = append(out, m)
		}
		return out
	})
	out, err = env.CLI(auditor, "audit", "verify", "--session", id)
	require.Error(t, err)
	assert.Contains(t, out, "record 3 is missing")
}

// rebuildAudit replaces the AUDIT stream's content, as an attacker holding
// the break-glass credentials could.
func rebuildAudit(t *testing.T, env *devEnv, edit func([]*nats.RawStreamMsg) []*nats.RawStreamMsg) {
	t.Helper()
	nc := env.NATS(bus.CompAdmin)
	js, err := nc.JetStream()
	require.NoError(t, err)
	info, err := js.StreamInfo(bus.StreamAudit)
	require.NoError(t, err)
	var msgs []*nats.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := js.GetMsg(bus.StreamAudit, seq)
		if err == nil {
			msgs = append(msgs, m)
		}
	}
	msgs = edit(msgs)
	require.NoError(t, js.DeleteStream(bus.StreamAudit))
	cfg := info.Config
	_, err = js.AddStream(&cfg)
	require.NoError(t, err)
	for _, m := range msgs {
		_, err := js.Publish(m.Subject, m.Data)
		require.NoError(t, err)
	}
}

// waitCheckpoint waits until a signed checkpoint covers the session up to seq.
func waitCheckpoint(t *testing.T, env *devEnv, session string, seq uint64) {
	t.Helper()
	js, err := jetstream.New(env.NATS(bus.CompSIEM))
	require.NoError(t, err)
	testkit.Eventually(t, 30*time.Second, func() error {
		found := false
		err := auditlog.Read(context.Background(), js, auditlog.Options{Checkpoints: true}, func(e auditlog.Entry) error {
			for _, h := range e.Checkpoint.GetHeads() {
				if h.GetSessionId() == session && h.GetSeq() >= seq {
					found = true
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		if !found {
			return fmt.Errorf("no checkpoint covers %s up to %d yet", session, seq)
		}
		return nil
	})
}

// replaceStream deletes a stream and creates it again, empty, with the
// same configuration, as the break-glass identity can.
func replaceStream(t *testing.T, env *devEnv, name string) {
	t.Helper()
	js, err := env.NATS(bus.CompAdmin).JetStream()
	require.NoError(t, err)
	info, err := js.StreamInfo(name)
	require.NoError(t, err)
	require.NoError(t, js.DeleteStream(name))
	cfg := info.Config
	_, err = js.AddStream(&cfg)
	require.NoError(t, err)
}

// TestAuditStreamReplacedByBreakGlass: the break-glass identity deletes the
// whole AUDIT stream and creates it again (then the sessions index too).
// The recorder does not start a new chain as if nothing had been: it says,
// in a signed checkpoint, that the anchored history is gone; `audit verify`
// fails against the anchor file (found by default in the dev directory,
// or named with --anchor, or taken from `audit anchor` output), and, while
// the index still lists the lost sessions, without one.
func TestAuditStreamReplacedByBreakGlass(t *testing.T) {
	env := startDev(t, devOptions{noDemo: true})
	auditor := []string{"SLUICE_TOKEN=" + env.Token("--sub", "audrey", "--groups", "auditors")}
	anchorFile := filepath.Join(env.Dir, "audit-anchor.jsonl")
	id := recordSession(t, env)
	waitCheckpoint(t, env, id, 7)
	var anchored *auditchain.Anchor
	testkit.Eventually(t, 20*time.Second, func() error {
		a, err := auditchain.LastAnchor(anchorFile)
		if err != nil || a == nil || a.Sessions == 0 {
			return fmt.Errorf("no anchor with a session yet (%v)", err)
		}
		anchored = a
		return nil
	})
	out, err := env.CLI(auditor, "audit", "verify", "--anchor", anchorFile)
	require.NoError(t, err, out)
	assert.Contains(t, out, "intact")
	assert.Contains(t, out, "checked against 1 recorder key(s) and the anchor of checkpoint")

	// `sluice audit anchor` prints an anchor to keep elsewhere.
	out, err = env.CLI(auditor, "audit", "anchor")
	require.NoError(t, err, out)
	saved := filepath.Join(t.TempDir(), "saved-anchor.jsonl")
	require.NoError(t, os.WriteFile(saved, []byte(out), 0o600))
	savedAnchor, err := auditchain.LastAnchor(saved)
	require.NoError(t, err)

	// verifyFails runs verify in dir (so that a .sluice there is found) and
	// returns its report, which must say the history was lost.
	verifyFails := func(t *testing.T, dir string, args ...string) string {
		t.Helper()
		cmd := exec.Command(sluiceBin, append([]string{"audit", "verify"}, args...)...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "SLUICE_API="+env.API, "XDG_CONFIG_HOME="+filepath.Join(env.Dir, "cfg"), auditor[0])
		b, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		require.ErrorAs(t, err, &ee, string(b))
		assert.Equal(t, 2, ee.ExitCode(), string(b))
		assert.Contains(t, string(b), "history_lost")
		return string(b)
	}

	// The whole stream, deleted and created again; new sessions go on.
	replaceStream(t, env, bus.StreamAudit)
	other := recordSession(t, env)
	testkit.Eventually(t, 20*time.Second, func() error {
		out, _ := env.CLI(auditor, "audit", "verify", "--anchor", anchorFile)
		if !strings.Contains(out, "the recorder found the audit history gone") {
			return fmt.Errorf("no lost-history checkpoint yet:\n%s", out)
		}
		return nil
	})
	report := verifyFails(t, filepath.Dir(env.Dir)) // the dev directory's anchor, by default
	assert.Contains(t, report, "checkpoint "+anchored.Checkpoint)
	assert.Contains(t, report, "the anchor of checkpoint")
	report = verifyFails(t, t.TempDir(), "--anchor", saved)
	assert.Contains(t, report, "checkpoint "+savedAnchor.Checkpoint)
	report = verifyFails(t, t.TempDir()) // no anchor: the index and the recorder's checkpoint
	assert.Contains(t, report, id+": history_lost: the sessions index lists this session")
	assert.NotContains(t, report, other)

	// The index too, and the stream once more: the anchor file still tells.
	replaceStream(t, env, "KV_"+bus.BucketSessions)
	replaceStream(t, env, bus.StreamAudit)
	recordSession(t, env)
	testkit.Eventually(t, 20*time.Second, func() error {
		a, err := auditchain.LastAnchor(anchorFile)
		if err != nil || a == nil {
			return fmt.Errorf("no anchor (%v)", err)
		}
		out, _ := env.CLI(auditor, "audit", "verify", "--anchor", anchorFile)
		if !strings.Contains(out, "the recorder found the audit history gone") {
			return fmt.Errorf("no lost-history checkpoint in the new stream yet:\n%s", out)
		}
		return nil
	})
	verifyFails(t, t.TempDir(), "--anchor", anchorFile)
	verifyFails(t, t.TempDir(), "--anchor", saved)
}
