package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/controlstate"
	"sluice.dev/sluice/libs/devissuer"
	"sluice.dev/sluice/libs/testkit"
	approvalsv1 "sluice.dev/sluice/proto/sluice/approvals/v1"
	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
)

// refusals collects the NATS server's permission refusals of a connection.
type refusals struct {
	mu   sync.Mutex
	errs []string
}

func (r *refusals) handler(_ *nats.Conn, _ *nats.Subscription, err error) {
	r.mu.Lock()
	r.errs = append(r.errs, err.Error())
	r.mu.Unlock()
}

func (r *refusals) has(kind, subject string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.errs {
		if strings.Contains(e, fmt.Sprintf("Permissions Violation for %s to %q", kind, subject)) {
			return true
		}
	}
	return false
}

// TestWorkerCredentialsCannotEscalate is the attack of the trust issue,
// replayed against `sluice dev` by a process holding only the PostgreSQL
// worker's NATS credentials (and, as a compromised worker would, a
// session's token): it cannot approve, deny, apply configuration, grant,
// revoke, read sessions or read another component's replies.
func TestWorkerCredentialsCannotEscalate(t *testing.T) {
	requireTool(t, "psql")
	env := startDev(t, devOptions{})
	ref := &refusals{}
	key, err := nats.NkeyOptionFromSeed(env.natsKey(bus.CompPGWorker))
	require.NoError(t, err)
	nc, err := nats.Connect(env.natsURL(), key, nats.CustomInboxPrefix(bus.InboxPrefix(bus.CompPGWorker)), nats.ErrorHandler(ref.handler))
	require.NoError(t, err)
	defer nc.Close()
	ctx := context.Background()
	call := func(tok, subject string, req, resp proto.Message) error {
		c := ctx
		if tok != "" {
			c = bus.WithCallerToken(ctx, tok)
		}
		rctx, cancel := context.WithTimeout(c, 2*time.Second)
		defer cancel()
		return bus.Request(rctx, nc, subject, req, resp)
	}
	alice := env.Token("--sub", "alice", "--groups", "engineers")
	approver := []string{"SLUICE_TOKEN=" + env.Token("--sub", "bob", "--groups", "approvers")}

	// A request opened with no token is refused by the approvals service;
	// with a session's token it is that principal's, never one written in
	// the body (the body has no such field any more).
	var r approvalsv1.ApprovalReply
	testkit.Eventually(t, 20*time.Second, func() error {
		return call("", bus.APIApprovalsOpen, &approvalsv1.OpenRequest{SessionId: "s1", Target: "demo", Command: "DELETE FROM customers",
			CommandHash: "h", ApproverGroups: []string{"approvers"}, TtlSeconds: 60}, &r)
	})
	require.NotNil(t, r.GetError())
	assert.Equal(t, "unauthenticated", r.GetError().GetCode())
	require.NoError(t, call(alice, bus.APIApprovalsOpen, &approvalsv1.OpenRequest{SessionId: "s1", Target: "demo", Command: "DELETE FROM customers",
		CommandHash: "h", ApproverGroups: []string{"approvers"}, TtlSeconds: 60}, &r))
	require.Nil(t, r.GetError())
	id := r.GetApproval().GetId()
	assert.Equal(t, "alice", r.GetApproval().GetRequester().GetSubject())

	// Approving it, from the worker's credentials, is refused by NATS
	// itself (with or without a token: the worker may not publish there).
	for _, tok := range []string{"", alice} {
		err := call(tok, bus.APIApprovalsDecide, &approvalsv1.Decide{Id: id, Verdict: "approve"}, &r)
		assert.Error(t, err)
		err = call(tok, bus.APIApprovalsSlackDecide, &approvalsv1.SlackDecide{Id: id, Verdict: "approve", Email: "bob@example.com"}, &r)
		assert.Error(t, err)
	}
	assert.True(t, ref.has("Publish", bus.APIApprovalsDecide))
	assert.True(t, ref.has("Publish", bus.APIApprovalsSlackDecide))
	out, err := env.CLI(approver, "approvals", "list")
	require.NoError(t, err, out)
	assert.Contains(t, out, id, "still pending")

	// Applying "allow everything" is refused, on both apply subjects.
	allowAll := &controlv1.ApplyRequest{Config: []byte("policies:\n  - name: allow-all\n    action: allow\n    when: 'true'\n")}
	var ar controlv1.ApplyResponse
	assert.Error(t, call(alice, bus.APIControlApply, allowAll, &ar))
	assert.Error(t, call("", bus.APIControlBreakGlass, allowAll, &ar))
	assert.True(t, ref.has("Publish", bus.APIControlApply))
	assert.True(t, ref.has("Publish", bus.APIControlBreakGlass))
	out, err = env.CLI([]string{"SLUICE_TOKEN=" + env.Token("--sub", "audrey", "--groups", "auditors")}, "policy", "test",
		"--sub", "alice", "--groups", "engineers", "--target", "demo", "-o", "json", "DELETE FROM customers")
	require.NoError(t, err, out)
	assert.Contains(t, out, `"action": "review"`, "the policy is unchanged")
	assert.Contains(t, out, `"revision": 1`)

	// Grants, revocations, the policy playground and target listing.
	for _, subj := range []string{bus.APIGrantsRequest, bus.APIGrantsRevoke, bus.APIApprovalsList, bus.APIApprovalsGet, bus.APIPolicyTest, bus.APIControlTargets} {
		assert.Error(t, call(alice, subj, &approvalsv1.Get{Id: id}, &r), subj)
		assert.True(t, ref.has("Publish", subj), subj)
	}

	// Sessions and the audit log cannot be read.
	js, err := nc.JetStream()
	require.NoError(t, err)
	_, err = js.StreamInfo(bus.StreamAudit, nats.MaxWait(time.Second))
	assert.Error(t, err)
	_, err = js.KeyValue(bus.BucketSessions)
	assert.Error(t, err)

	// Another component's replies cannot be read: the API's inbox, or all.
	for _, subj := range []string{"_INBOX.api.>", "_INBOX.>", ">"} {
		sub, err := nc.SubscribeSync(subj)
		require.NoError(t, err)
		require.NoError(t, nc.Flush())
		testkit.Eventually(t, 5*time.Second, func() error {
			if !ref.has("Subscription", subj) {
				return fmt.Errorf("subscription to %s not refused", subj)
			}
			return nil
		})
		// While the API answers a CLI call, nothing reaches the worker.
		out, err := env.CLI(approver, "targets", "list")
		require.NoError(t, err, out)
		_, err = sub.NextMsg(200 * time.Millisecond)
		assert.Error(t, err, "the worker read a message on %s", subj)
	}
}

// TestIdentityChangeAndBreakGlass changes the identity configuration to
// another issuer: tokens of the old one stop working at once, for the API
// and for the worker, open sessions included. That locks every admin out;
// the documented break-glass path (sluice admin apply, as the NATS admin
// identity) brings the old configuration back.
func TestIdentityChangeAndBreakGlass(t *testing.T) {
	env := startPG(t)
	ctx := context.Background()
	devIssuer := env.Issuer()
	admin := env.Token("--sub", "root", "--groups", "sluice-admins")
	alice := env.Token("--sub", "alice", "--groups", "engineers")

	// Alice's session is open and works.
	conn, err := pgx.Connect(ctx, env.dsn(alice))
	require.NoError(t, err)
	defer conn.Close(ctx)
	var one int
	require.NoError(t, conn.QueryRow(ctx, "SELECT 1").Scan(&one))

	// Another provider, that the organisation moves to.
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	other := &devissuer.Issuer{Audience: "sluice", Key: key}
	srv := httptest.NewServer(http.StripPrefix("/oidc", other.Handler()))
	defer srv.Close()
	other.URL = srv.URL + "/oidc"
	moved := filepath.Join(t.TempDir(), "moved.yaml")
	require.NoError(t, os.WriteFile(moved, []byte(fmt.Sprintf("oidc:\n  issuer: %s\n  audience: sluice\n", other.URL)), 0o600))
	out, err := env.CLI([]string{"SLUICE_TOKEN=" + admin}, "apply", "-f", moved)
	require.NoError(t, err, out)

	// Alice's open session ends, at once.
	testkit.Eventually(t, 15*time.Second, func() error {
		if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err == nil {
			return fmt.Errorf("the session still runs statements")
		}
		return nil
	})
	// New sessions and API calls with old tokens are refused as coming from
	// an untrusted issuer.
	_, err = pgconn.Connect(ctx, env.dsn(alice))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "untrusted_issuer")
	status, body := env.HTTP(http.MethodGet, "/api/v1/whoami", admin, nil)
	assert.Equal(t, http.StatusUnauthorized, status)
	assert.Equal(t, "untrusted_issuer", body["error"])
	// The new issuer's tokens work.
	newAlice, err := other.Mint(devissuer.Claims{Subject: "alice", Groups: []string{"engineers"}})
	require.NoError(t, err)
	c2, err := pgx.Connect(ctx, env.dsn(newAlice))
	require.NoError(t, err)
	require.NoError(t, c2.QueryRow(ctx, "SELECT 1").Scan(&one))
	c2.Close(ctx)

	// Nobody with an admin group has a token the new provider issues (say it
	// is misconfigured): every admin is locked out.
	out, err = env.CLI([]string{"SLUICE_TOKEN=" + admin}, "apply", "-f", moved)
	require.Error(t, err, out)

	// Break glass: the NATS admin identity applies the old provider again.
	restore := filepath.Join(t.TempDir(), "restore.yaml")
	require.NoError(t, os.WriteFile(restore, []byte(fmt.Sprintf("oidc:\n  issuer: %s\n  audience: sluice\n", devIssuer.URL)), 0o600))
	out, err = env.CLI(nil, "admin", "apply", "-f", restore, "--nats", env.natsURL(), "--nats-nkey-file", env.natsKey(bus.CompAdmin))
	require.NoError(t, err, out)
	assert.Contains(t, out, "identity")
	testkit.Eventually(t, 15*time.Second, func() error {
		if status, body := env.HTTP(http.MethodGet, "/api/v1/whoami", admin, nil); status != http.StatusOK {
			return fmt.Errorf("whoami: %d %v", status, body)
		}
		return nil
	})
	c3, err := pgx.Connect(ctx, env.dsn(alice))
	require.NoError(t, err)
	require.NoError(t, c3.QueryRow(ctx, "SELECT 1").Scan(&one))
	c3.Close(ctx)

	// The change is recorded as the break-glass identity's.
	js, err := env.NATS(bus.CompAdmin).JetStream()
	require.NoError(t, err)
	kv, err := js.KeyValue(bus.BucketControl)
	require.NoError(t, err)
	e, err := kv.Get(controlstate.KeyIdentityProvider)
	require.NoError(t, err)
	var ev controlv1.IdentityProviderConfigured
	require.NoError(t, proto.Unmarshal(e.Value(), &ev))
	assert.Equal(t, "break-glass", ev.GetAppliedBy())
}
