package k8sworker_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/controlstate"
	"sluice.dev/sluice/libs/devissuer"
	"sluice.dev/sluice/libs/recording"
	"sluice.dev/sluice/libs/secrets"
	"sluice.dev/sluice/libs/testkit"
	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
	"sluice.dev/sluice/services/identity"
	"sluice.dev/sluice/services/k8sworker"
	"sluice.dev/sluice/services/policy"
)

// The cluster's side of an exec: no kubelet runs here, so this endpoint
// stands in for one (the real kube-apiserver's handshake is in the
// end-to-end tests). It checks what the gateway sends it, echoes stdin on
// stdout, and ends with a status.
func execEndpoint(t *testing.T) http.HandlerFunc {
	up := websocket.Upgrader{Subprotocols: []string{"v5.channel.k8s.io"}}
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer gw-token" || r.Header.Get("Impersonate-User") != "" {
			http.Error(w, "not the gateway", http.StatusUnauthorized)
			return
		}
		if r.URL.Path != "/api/v1/namespaces/default/pods/web/exec" || r.URL.Query().Get("command") != "cat" {
			http.Error(w, "unexpected "+r.URL.String(), http.StatusBadRequest)
			return
		}
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		_, in, err := c.ReadMessage()
		if err != nil || len(in) == 0 || in[0] != 0 {
			return
		}
		_ = c.WriteMessage(websocket.BinaryMessage, append([]byte{1}, in[1:]...))
		_ = c.WriteMessage(websocket.BinaryMessage, append([]byte{3}, `{"status":"Success"}`...))
	}
}

// cluster is a worker in front of a stand-in cluster (handler), with the
// identity and policy services it asks, on a NATS of its own.
type cluster struct {
	w    *k8sworker.Worker
	iss  *devissuer.Issuer
	conn *bus.Conn
	ctx  context.Context
}

func startCluster(t *testing.T, handler http.Handler, tune func(*k8sworker.Config)) *cluster {
	t.Helper()
	_, conn := testkit.NATS(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	require.NoError(t, bus.Provision(ctx, conn.JS, bus.Topology{}))
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	iss := &devissuer.Issuer{Audience: "sluice", Key: key}
	idp := httptest.NewServer(http.StripPrefix("/oidc", iss.Handler()))
	t.Cleanup(idp.Close)
	iss.URL = idp.URL + "/oidc"
	go func() {
		_ = identity.Run(ctx, identity.Config{Conn: conn, Provider: identity.Provider{Issuer: iss.URL, Audience: "sluice"}})
	}()
	go func() { _ = policy.New(policy.Config{Conn: conn, Log: zerolog.Nop()}).Run(ctx) }()

	upstream := httptest.NewTLSServer(handler)
	t.Cleanup(upstream.Close)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	require.NoError(t, os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: upstream.Certificate().Raw}), 0o600))
	t.Setenv("TEST_K8S_TOKEN", "gw-token")
	kv, err := controlstate.Bucket(ctx, conn.JS)
	require.NoError(t, err)
	target, _ := proto.Marshal(&controlv1.TargetConfigured{Digest: "1", Spec: &controlv1.TargetSpec{Name: "k", Kind: "kubernetes",
		Endpoint: &controlv1.TargetSpec_Kubernetes{Kubernetes: &controlv1.KubernetesTarget{Server: upstream.URL, CaFile: caFile,
			Token: &controlv1.Credential{Source: &controlv1.Credential_Env{Env: "TEST_K8S_TOKEN"}}}}}})
	_, err = kv.Put(ctx, controlstate.TargetKey("k"), target)
	require.NoError(t, err)
	rules, _ := proto.Marshal(&controlv1.PolicySetApplied{Revision: 1, Rules: []*controlv1.Rule{
		{Name: "allow-k8s", Action: "allow", When: `protocol == "kubernetes"`},
		{Name: "mask-emails", Action: "mask", When: `"masked" in principal.groups`, Mask: &controlv1.MaskRule{Detectors: []string{"email"}, Action: "redact"}},
	}})
	_, err = kv.Put(ctx, controlstate.KeyPolicy, rules)
	require.NoError(t, err)
	testkit.IdentityAndPolicyAnswer(t, ctx, conn.NC)

	master, err := secrets.LoadOrCreateKeyFile(filepath.Join(t.TempDir(), "master.key"))
	require.NoError(t, err)
	cfg := k8sworker.Config{Conn: conn, Log: zerolog.Nop(), Addr: "127.0.0.1:0", TLSDir: t.TempDir(), MasterKey: master}
	if tune != nil {
		tune(&cfg)
	}
	w := k8sworker.New(cfg)
	go func() { _ = w.Run(ctx) }()
	select {
	case <-w.Ready():
	case <-time.After(20 * time.Second):
		t.Fatal("worker not ready")
	}
	return &cluster{w: w, iss: iss, conn: conn, ctx: ctx}
}

func (c *cluster) token(t *testing.T, sub string, groups ...string) string {
	t.Helper()
	token, err := c.iss.Mint(devissuer.Claims{Subject: sub, Groups: groups, TTL: time.Hour})
	require.NoError(t, err)
	return token
}

func TestExecStreamIsRelayedAndRecorded(t *testing.T) {
	cl := startCluster(t, execEndpoint(t), nil)
	w, ctx, conn := cl.w, cl.ctx, cl.conn
	token := cl.token(t, "alice", "engineers")

	dialer := websocket.Dialer{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, Subprotocols: []string{"v5.channel.k8s.io"}} //nolint:gosec // the dev certificate
	var c *websocket.Conn
	testkit.Eventually(t, 20*time.Second, func() error {
		var err error
		c, _, err = dialer.Dial("wss://"+w.Addr()+"/targets/k/api/v1/namespaces/default/pods/web/exec?command=cat&stdin=true&stdout=true",
			http.Header{"Authorization": {"Bearer " + token}, "Impersonate-User": {"system:admin"}})
		return err
	})
	defer c.Close()
	assert.Equal(t, "v5.channel.k8s.io", c.Subprotocol())
	require.NoError(t, c.WriteMessage(websocket.BinaryMessage, append([]byte{0}, "ping from the client\n"...)))
	_, out, err := c.ReadMessage()
	require.NoError(t, err)
	assert.Equal(t, append([]byte{1}, "ping from the client\n"...), out)
	_, st, err := c.ReadMessage()
	require.NoError(t, err)
	assert.Equal(t, byte(3), st[0])

	// What each side sent is in the session's record, durable before the
	// status reached the client.
	var streams []string
	for _, ev := range testkit.SessionEvents(t, ctx, conn.JS, "") {
		if io := ev.GetIo(); io != nil {
			data, err := recording.IOData(io)
			require.NoError(t, err)
			streams = append(streams, io.GetStream()+":"+strings.TrimSpace(string(data)))
		}
	}
	assert.Contains(t, streams, "i:ping from the client")
	assert.Contains(t, streams, "o:ping from the client")
	assert.Contains(t, streams, `e:{"status":"Success"}`)

	// Where masking applies, what the container prints is masked, in the
	// stream and in the record, and nothing is held back past the status.
	masked := cl.token(t, "mo", "engineers", "masked")
	c2, _, err := dialer.Dial("wss://"+w.Addr()+"/targets/k/api/v1/namespaces/default/pods/web/exec?command=cat&stdin=true&stdout=true",
		http.Header{"Authorization": {"Bearer " + masked}})
	require.NoError(t, err)
	defer c2.Close()
	require.NoError(t, c2.WriteMessage(websocket.BinaryMessage, append([]byte{0}, "owner ada.lovelace@example.com"...)))
	var seen []byte
	for {
		_, msg, err := c2.ReadMessage()
		require.NoError(t, err)
		if msg[0] == 3 {
			break
		}
		seen = append(seen, msg[1:]...)
	}
	assert.Equal(t, "owner [email]", string(seen), "a line without its newline is released at the status")
	for _, ev := range testkit.SessionEvents(t, ctx, conn.JS, "") {
		if io := ev.GetIo(); io != nil && io.GetStream() == "o" {
			data, _ := recording.IOData(io)
			assert.NotContains(t, string(data), "lovelace@example.com")
		}
	}
}
