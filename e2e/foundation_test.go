package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/devissuer"
	"sluice.dev/sluice/libs/secrets"
)

func b64json(v any) string {
	b, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(b)
}

func TestFoundation(t *testing.T) {
	requireTool(t, "psql")
	env := startDev(t, devOptions{})
	out := env.Output()
	for _, want := range []string{env.API, env.PGAddr, "Demo target   demo", "sluice dev token", "sslmode=require"} {
		assert.Contains(t, out, want, "banner")
	}

	alice := env.Token("--sub", "alice", "--groups", "engineers,dba", "--email", "alice@example.com")

	t.Run("whoami", func(t *testing.T) {
		status, body := env.HTTP(http.MethodGet, "/api/v1/whoami", alice, nil)
		require.Equal(t, http.StatusOK, status, body)
		assert.Equal(t, "alice", body["subject"])
		assert.Equal(t, "alice@example.com", body["email"])
		assert.Equal(t, []any{"engineers", "dba"}, body["groups"])
		assert.Equal(t, false, body["machine"])

		cli, err := env.CLI([]string{"SLUICE_TOKEN=" + alice}, "whoami", "-o", "json")
		require.NoError(t, err, cli)
		assert.Contains(t, cli, `"subject": "alice"`)
	})

	t.Run("refused tokens", func(t *testing.T) {
		iss := env.Issuer()
		now := time.Now()
		claims := map[string]any{"iss": iss.URL, "sub": "mallory", "aud": "sluice", "exp": now.Add(time.Hour).Unix()}
		kid := devissuer.KeyID(iss.Key)
		pub, _ := json.Marshal(jose.JSONWebKey{Key: &iss.Key.PublicKey})
		hsHead := b64json(map[string]string{"alg": "HS256", "typ": "JWT", "kid": kid})
		hsBody := b64json(claims)
		mac := hmac.New(sha256.New, pub)
		mac.Write([]byte(hsHead + "." + hsBody))
		stranger, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		signer, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: stranger}, (&jose.SignerOptions{}).WithType("at+jwt").WithHeader("kid", "unknown-kid"))
		unknown, _ := jwt.Signed(signer).Claims(claims).Serialize()
		wrongIss := &devissuer.Issuer{URL: "https://evil.example/oidc", Audience: "sluice", Key: iss.Key}
		mint := func(i *devissuer.Issuer, c devissuer.Claims) string {
			tok, err := i.Mint(c)
			require.NoError(t, err)
			return tok
		}
		cases := []struct{ name, token, code, reason string }{
			{"expired", mint(iss, devissuer.Claims{Subject: "alice", TTL: -time.Minute}), "token_expired", "expired at"},
			{"wrong audience", mint(iss, devissuer.Claims{Subject: "alice", Audience: "other-app"}), "wrong_audience", `audience does not include "sluice"`},
			{"untrusted issuer", mint(wrongIss, devissuer.Claims{Subject: "alice"}), "untrusted_issuer", `issued by "https://evil.example/oidc" are not trusted`},
			{"alg none", b64json(map[string]string{"alg": "none", "typ": "JWT"}) + "." + b64json(claims) + ".", "algorithm_not_allowed", "alg none"},
			{"HS256", hsHead + "." + hsBody + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil)), "algorithm_not_allowed", "HMAC"},
			{"unknown key", unknown, "unknown_key", "key id"},
			{"garbage", "abc", "token_malformed", "JWT"},
			{"missing", "", "token_missing", "Bearer"},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				status, body := env.HTTP(http.MethodGet, "/api/v1/whoami", tc.token, nil)
				assert.Equal(t, http.StatusUnauthorized, status)
				assert.Equal(t, tc.code, body["error"])
				assert.Contains(t, body["reason"], tc.reason)
			})
		}
	})

	t.Run("health and metrics", func(t *testing.T) {
		for _, p := range []string{"/healthz", "/readyz"} {
			status, body := env.HTTP(http.MethodGet, p, "", nil)
			assert.Equal(t, http.StatusOK, status, p, body)
		}
		resp, err := http.Get(env.API + "/metrics")
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		assert.Contains(t, string(b), "sluice_api_auth_failures_total")
		assert.Contains(t, string(b), `sluice_nats_connected{component="api"} 1`)
		assert.Contains(t, string(b), `sluice_sessions_started_total{protocol="postgres"}`)
	})

	t.Run("client credentials", func(t *testing.T) {
		secret, err := os.ReadFile(filepath.Join(env.Dir, "demo-agent.secret"))
		require.NoError(t, err)
		creds := []string{"SLUICE_CLIENT_ID=demo-agent", "SLUICE_CLIENT_SECRET=" + strings.TrimSpace(string(secret))}
		out, err := env.CLI(creds, "whoami", "-o", "json")
		require.NoError(t, err, out)
		assert.Contains(t, out, `"machine": true`)
		out, err = env.CLI([]string{"SLUICE_CLIENT_ID=demo-agent", "SLUICE_CLIENT_SECRET=nope"}, "token")
		require.Error(t, err)
		assert.Contains(t, out, "invalid_client")
	})

	admin := env.Token("--sub", "root", "--groups", "sluice-admins")
	adminEnv := []string{"SLUICE_TOKEN=" + admin}

	t.Run("targets never show credentials", func(t *testing.T) {
		out, err := env.CLI(adminEnv, "targets", "list", "-o", "json")
		require.NoError(t, err, out)
		assert.Contains(t, out, `"name": "demo"`)
		assert.Contains(t, out, `"credential": "sealed"`)
		assert.Contains(t, out, `"address": "127.0.0.1:`)
		// Anyone else sees what a client connects with: names, kinds and
		// labels, not where a target is or as whom Sluice logs in.
		eng := []string{"SLUICE_TOKEN=" + env.Token("--sub", "alice", "--groups", "engineers")}
		out, err = env.CLI(eng, "targets", "list", "-o", "json")
		require.NoError(t, err, out)
		assert.Contains(t, out, `"name": "demo"`)
		assert.NotContains(t, out, `"address": "127.0.0.1`)
		assert.NotContains(t, out, `"credential": "sealed"`)

		// The demo password exists only sealed; recover it to prove it
		// appears nowhere in clear.
		key, err := secrets.LoadKey(filepath.Join(env.Dir, "master.key"))
		require.NoError(t, err)
		sealed, err := os.ReadFile(filepath.Join(env.Dir, "demo-pg.sealed"))
		require.NoError(t, err)
		raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(sealed)))
		require.NoError(t, err)
		pw, err := key.Open(raw)
		require.NoError(t, err)
		assert.NotContains(t, out, string(pw))
		assert.NotContains(t, env.Output(), string(pw))
		assert.NotContains(t, readControlStream(t, env), string(pw))
	})

	t.Run("apply is idempotent", func(t *testing.T) {
		file := filepath.Join(env.Dir, "sluice.yaml")
		out, err := env.CLI(adminEnv, "apply", "-f", file)
		require.NoError(t, err, out)
		assert.Contains(t, out, "applied 0 change(s)")

		out, err = env.CLI([]string{"SLUICE_TOKEN=" + alice}, "apply", "-f", file)
		require.Error(t, err, "engineers may not apply")
		assert.Contains(t, out, "forbidden")
	})

	t.Run("policy type errors name rule, line and column", func(t *testing.T) {
		bad := filepath.Join(t.TempDir(), "bad.yaml")
		require.NoError(t, os.WriteFile(bad, []byte(`approvers:
  - name: approvers
    groups: [approvers]
policies:
  - name: allow-reads
    action: allow
    when: sql.kind == "read"
  - name: typo
    action: allow
    when: principal.grups.exists(g, g == "engineers")
`), 0o600))
		out, err := env.CLI(adminEnv, "apply", "-f", bad)
		require.Error(t, err)
		assert.Contains(t, out, `bad.yaml:10:20: rule "typo": undefined field 'grups'`)
		assert.Contains(t, out, "was not applied")
		out, err = env.CLI(adminEnv, "policy", "test", "--sub", "alice", "--groups", "engineers", "--target", "demo", "-o", "json", "DELETE FROM customers")
		require.NoError(t, err, out)
		assert.Contains(t, out, `"action": "review"`)
		assert.Contains(t, out, `"rule": "review-unbounded-writes"`)
		assert.Contains(t, out, `"revision": 1`, "the bad file changed nothing")
	})

	t.Run("restart reuses data", func(t *testing.T) {
		env.Stop()
		again := startDev(t, devOptions{dir: filepath.Dir(env.Dir)})
		tok := again.Token("--sub", "root", "--groups", "sluice-admins")
		out, err := again.CLI([]string{"SLUICE_TOKEN=" + tok}, "targets", "list")
		require.NoError(t, err, out)
		assert.Contains(t, out, "demo")
		out, err = again.CLI([]string{"SLUICE_TOKEN=" + tok}, "apply", "-f", filepath.Join(again.Dir, "sluice.yaml"))
		require.NoError(t, err, out)
		assert.Contains(t, out, "applied 0 change(s); policy revision 1")
	})
}

// readControlStream returns every CONTROL event's raw bytes, concatenated.
func readControlStream(t *testing.T, env *devEnv) string {
	t.Helper()
	nc := env.NATS(bus.CompAdmin)
	defer nc.Close()
	js, err := nc.JetStream()
	require.NoError(t, err)
	sub, err := js.SubscribeSync("sluice.evt.control.>", nats.DeliverAll(), nats.OrderedConsumer())
	require.NoError(t, err)
	var all strings.Builder
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			break
		}
		all.Write(m.Data)
		md, _ := m.Metadata()
		if md != nil && md.NumPending == 0 {
			break
		}
	}
	require.NotZero(t, all.Len())
	return all.String()
}
