package slackbot_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"sluice.dev/sluice/libs/approvalstate"
	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/controlstate"
	"sluice.dev/sluice/libs/devissuer"
	"sluice.dev/sluice/libs/testkit"
	approvalsv1 "sluice.dev/sluice/proto/sluice/approvals/v1"
	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
	"sluice.dev/sluice/services/approvals"
	"sluice.dev/sluice/services/identity/identitytest"
	"sluice.dev/sluice/services/slackbot"
)

const secret = "8f742231b10e8888abcd99yyyzzz85a5"

// fakeSlack is the part of the Slack Web API the bot uses.
type fakeSlack struct {
	mu      sync.Mutex
	posts   []url.Values
	updates []url.Values
}

func (f *fakeSlack) handler(t *testing.T) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/api/chat.postMessage", func(w http.ResponseWriter, r *http.Request) {
		require.NoError(t, r.ParseForm())
		if r.Header.Get("Authorization") != "Bearer xoxb-test" && r.PostForm.Get("token") != "xoxb-test" {
			fmt.Fprint(w, `{"ok":false,"error":"invalid_auth"}`)
			return
		}
		f.mu.Lock()
		f.posts = append(f.posts, r.PostForm)
		n := len(f.posts)
		f.mu.Unlock()
		fmt.Fprintf(w, `{"ok":true,"channel":%q,"ts":"1700000000.%06d"}`, r.PostForm.Get("channel"), n)
	})
	mux.HandleFunc("/api/chat.update", func(w http.ResponseWriter, r *http.Request) {
		require.NoError(t, r.ParseForm())
		f.mu.Lock()
		f.updates = append(f.updates, r.PostForm)
		f.mu.Unlock()
		fmt.Fprintf(w, `{"ok":true,"channel":%q,"ts":%q,"text":"x"}`, r.PostForm.Get("channel"), r.PostForm.Get("ts"))
	})
	mux.HandleFunc("/api/users.info", func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		emails := map[string]string{"U-BOB": "bob@example.com", "U-ALICE": "alice@example.com", "U-EVE": "eve@example.com"}
		email, ok := emails[r.Form.Get("user")]
		if !ok {
			fmt.Fprint(w, `{"ok":false,"error":"user_not_found"}`)
			return
		}
		fmt.Fprintf(w, `{"ok":true,"user":{"id":%q,"profile":{"email":%q}}}`, r.Form.Get("user"), email)
	})
	return mux
}

func (f *fakeSlack) lastUpdate(ts string) url.Values {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := len(f.updates) - 1; i >= 0; i-- {
		if f.updates[i].Get("ts") == ts {
			return f.updates[i]
		}
	}
	return nil
}

func (f *fakeSlack) postFor(id string) url.Values {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, p := range f.posts {
		if strings.Contains(p.Get("blocks"), id) {
			return p
		}
	}
	return nil
}

func sign(body string, ts int64, key string) http.Header {
	mac := hmac.New(sha256.New, []byte(key))
	fmt.Fprintf(mac, "v0:%d:%s", ts, body)
	h := http.Header{}
	h.Set("X-Slack-Request-Timestamp", strconv.FormatInt(ts, 10))
	h.Set("X-Slack-Signature", "v0="+hex.EncodeToString(mac.Sum(nil)))
	h.Set("Content-Type", "application/x-www-form-urlencoded")
	return h
}

func click(t *testing.T, addr, user, action, id string, header func(body string) http.Header) (int, string) {
	payload, _ := json.Marshal(map[string]any{
		"type": "block_actions", "user": map[string]string{"id": user},
		"actions": []map[string]string{{"action_id": action, "value": id, "type": "button", "block_id": "decision"}},
	})
	body := url.Values{"payload": {string(payload)}}.Encode()
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/slack/interactions", strings.NewReader(body))
	req.Header = header(body)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var out struct{ Text string }
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out.Text
}

func TestSlackFlow(t *testing.T) {
	_, conn := testkit.NATS(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	require.NoError(t, bus.Provision(ctx, conn.JS, bus.Topology{}))
	kv, _ := controlstate.Bucket(ctx, conn.JS)
	groups, _ := proto.Marshal(&controlv1.ApproverGroupsSet{Groups: []*controlv1.ApproverGroup{{Name: "approvers", Groups: []string{"approvers"}, Subjects: []string{"bob@example.com"}}}})
	_, err := kv.Put(ctx, controlstate.KeyApprovers, groups)
	require.NoError(t, err)
	idp := identitytest.Start(ctx, t, conn)
	aliceTok := idp.Mint(devissuer.Claims{Subject: "alice@example.com", Email: "alice@example.com", Groups: []string{"engineers"}})
	carolTok := idp.Token("carol", "approvers")
	go func() { _ = approvals.New(approvals.Config{Conn: conn, Log: zerolog.Nop()}).Run(ctx) }()

	fake := &fakeSlack{}
	api := httptest.NewServer(fake.handler(t))
	defer api.Close()
	bot := slackbot.New(slackbot.Config{Conn: conn, Log: zerolog.Nop(), BotToken: "xoxb-test", SigningSecret: secret, Channel: "C-APPROVALS",
		APIURL: api.URL + "/api/", Addr: "127.0.0.1:0"})
	go func() { _ = bot.Run(ctx) }()
	<-bot.Ready()
	view := approvalstate.NewView()
	go func() { _ = view.Follow(ctx, conn.JS) }()

	open := func(cmd string, ttl int64) string {
		var r approvalsv1.ApprovalReply
		testkit.Eventually(t, 10*time.Second, func() error {
			return bus.Request(identitytest.As(ctx, aliceTok), conn.NC, bus.APIApprovalsOpen, &approvalsv1.OpenRequest{
				SessionId: "s1", Target: "demo",
				Command: cmd, CommandHash: "h", Rule: "review-unbounded-writes", Reason: "needs approval", ApproverGroups: []string{"approvers"}, TtlSeconds: ttl}, &r)
		})
		require.Nil(t, r.GetError())
		return r.GetApproval().GetId()
	}
	waitPost := func(id string) url.Values {
		var p url.Values
		testkit.Eventually(t, 10*time.Second, func() error {
			if p = fake.postFor(id); p == nil {
				return fmt.Errorf("no message for %s", id)
			}
			return nil
		})
		return p
	}
	waitUpdate := func(ts, want string) {
		testkit.Eventually(t, 10*time.Second, func() error {
			u := fake.lastUpdate(ts)
			if u == nil || !strings.Contains(u.Get("blocks"), want) {
				return fmt.Errorf("no update containing %q yet: %v", want, u)
			}
			return nil
		})
	}
	state := func(id string) string {
		a, _ := view.Get(id)
		return a.GetState()
	}

	id := open("DELETE FROM customers", 300)
	post := waitPost(id)
	assert.Equal(t, "C-APPROVALS", post.Get("channel"))
	for _, want := range []string{"DELETE FROM customers", "alice@example.com", "review-unbounded-writes", `"action_id":"approve"`, `"action_id":"deny"`} {
		assert.Contains(t, post.Get("blocks"), want)
	}
	now := time.Now().Unix()

	// A forged click (wrong secret), a replayed old one, and an unsigned one
	// are refused; nothing is decided.
	status, _ := click(t, bot.Addr(), "U-BOB", "approve", id, func(b string) http.Header { return sign(b, now, "not-the-secret") })
	assert.Equal(t, http.StatusUnauthorized, status)
	status, _ = click(t, bot.Addr(), "U-BOB", "approve", id, func(b string) http.Header { return sign(b, now-3600, secret) })
	assert.Equal(t, http.StatusUnauthorized, status)
	status, _ = click(t, bot.Addr(), "U-BOB", "approve", id, func(string) http.Header { return http.Header{} })
	assert.Equal(t, http.StatusUnauthorized, status)
	time.Sleep(200 * time.Millisecond)
	assert.Equal(t, "pending", state(id))

	// Eve is no approver; Alice may not approve her own request.
	_, text := click(t, bot.Addr(), "U-EVE", "approve", id, func(b string) http.Header { return sign(b, now, secret) })
	assert.Contains(t, text, "not in an approver group")
	_, text = click(t, bot.Addr(), "U-ALICE", "approve", id, func(b string) http.Header { return sign(b, now, secret) })
	assert.Contains(t, text, "own request")

	// Bob approves from Slack; the message is updated.
	status, text = click(t, bot.Addr(), "U-BOB", "approve", id, func(b string) http.Header { return sign(b, now, secret) })
	assert.Equal(t, http.StatusOK, status)
	assert.Contains(t, text, "Recorded: approve")
	testkit.Eventually(t, 5*time.Second, func() error {
		if s := state(id); s != "approved" {
			return fmt.Errorf("state %s", s)
		}
		return nil
	})
	ts := "1700000000.000001"
	waitUpdate(ts, "APPROVED* by bob@example.com")

	// Decided elsewhere (CLI, API): the Slack message follows.
	id2 := open("TRUNCATE orders", 300)
	waitPost(id2)
	var r approvalsv1.ApprovalReply
	require.NoError(t, bus.Request(identitytest.As(ctx, carolTok), conn.NC, bus.APIApprovalsDecide, &approvalsv1.Decide{Id: id2, Verdict: "deny", Reason: "no"}, &r))
	require.Nil(t, r.GetError())
	waitUpdate("1700000000.000002", "DENIED* by carol: no")

	// Expiry updates the message too.
	id3 := open("DROP TABLE orders", 1)
	waitPost(id3)
	waitUpdate("1700000000.000003", "EXPIRED")

	// What a requester wrote is plain text: it cannot close the code block,
	// link, ping the channel or write the card's rule line, and what would
	// not show is written out.
	forged := "SELECT 1 ```\nRule *allow-reads*: a read <!channel> <https://x.example|docs> \u202e"
	id4 := open(forged, 300)
	blocks := waitPost(id4).Get("blocks")
	var card []struct {
		Type string `json:"type"`
		Text struct {
			Type string `json:"type"`
			Text string `json:"text"`
		} `json:"text"`
	}
	require.NoError(t, json.Unmarshal([]byte(blocks), &card))
	var shown []string
	for _, b := range card {
		if strings.Contains(b.Text.Text, "SELECT 1") {
			assert.Equal(t, "plain_text", b.Text.Type)
			shown = append(shown, b.Text.Text)
		} else {
			assert.NotContains(t, b.Text.Text, "<!channel>")
		}
	}
	assert.Equal(t, []string{"SELECT 1 ```\nRule *allow-reads*: a read <!channel> <https://x.example|docs> ⟨U+202E⟩"}, shown)

	// A command too long for a card has no Approve button, and a click
	// to approve it is refused: it is approved where it is read whole.
	id5 := open("UPDATE orders SET status = 'x' /* "+strings.Repeat("y", 2500)+" */; DROP TABLE orders", 300)
	blocks = waitPost(id5).Get("blocks")
	assert.NotContains(t, blocks, `"action_id":"approve"`)
	assert.Contains(t, blocks, `"action_id":"deny"`)
	assert.Contains(t, blocks, "sluice approvals show "+id5)
	_, text = click(t, bot.Addr(), "U-BOB", "approve", id5, func(b string) http.Header { return sign(b, time.Now().Unix(), secret) })
	assert.Contains(t, text, "too long to approve from Slack")
	assert.Equal(t, "pending", state(id5))
}
