package k8sworker_test

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"sluice.dev/sluice/libs/testkit"
	"sluice.dev/sluice/services/k8sworker"
)

// Requests the worker turns down itself — a body too large, a path no
// API server would read as it reads it, too many requests at once in a
// session, too many streams of one principal — are refused with a Status
// kubectl prints, and recorded like every other request: a command denied
// by a builtin rule, and its result.
func TestLimitsAndRefusalsAreRecorded(t *testing.T) {
	release := make(chan struct{})
	var releaseOnce sync.Once
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) })
	var slow atomic.Int32
	mux := http.NewServeMux()
	mux.Handle("/api/v1/namespaces/default/pods/web/exec", execEndpoint(t))
	mux.HandleFunc("/api/v1/namespaces/default/configmaps/slow", func(w http.ResponseWriter, r *http.Request) {
		slow.Add(1)
		<-release
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"slow"}}`)
	})
	cl := startCluster(t, mux, func(c *k8sworker.Config) { c.MaxBody, c.MaxInFlight, c.MaxStreams = 64, 1, 1 })
	token := cl.token(t, "alice", "engineers")
	client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{ForceAttemptHTTP2: true,
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // the dev certificate
	base := "https://" + cl.w.Addr() + "/targets/k"
	do := func(method, path, body string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(method, base+path, strings.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	code, msg := do("POST", "/api/v1/namespaces/default/configmaps", `{"kind":"ConfigMap","data":{"k":"`+strings.Repeat("x", 100)+`"}}`)
	assert.Equal(t, http.StatusRequestEntityTooLarge, code, msg)
	assert.Contains(t, msg, "larger than 64 bytes")
	code, msg = do("GET", "/api/v1/namespaces/default/config%6Daps", "")
	assert.Equal(t, http.StatusBadRequest, code, msg)
	assert.Contains(t, msg, "percent-encoded")
	code, msg = do("GET", "/api/v1/namespaces/default/pods/web/exec/extra", "")
	assert.Equal(t, http.StatusBadRequest, code, msg)

	// One request at a time in a session (one client connection, HTTP/2).
	done := make(chan int, 1)
	go func() {
		code, _ := do("GET", "/api/v1/namespaces/default/configmaps/slow", "")
		done <- code
	}()
	testkit.Eventually(t, 10*time.Second, func() error {
		if slow.Load() == 0 {
			return errors.New("the slow request has not reached the cluster")
		}
		return nil
	})
	code, msg = do("GET", "/api/v1/namespaces/default/configmaps", "")
	assert.Equal(t, http.StatusTooManyRequests, code, msg)
	assert.Contains(t, msg, "at most 1 requests at once")
	releaseOnce.Do(func() { close(release) })
	assert.Equal(t, http.StatusOK, <-done)

	// One stream at a time for alice: each is a connection of its own.
	dialer := websocket.Dialer{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, Subprotocols: []string{"v5.channel.k8s.io"}} //nolint:gosec // the dev certificate
	url := "wss://" + cl.w.Addr() + "/targets/k/api/v1/namespaces/default/pods/web/exec?command=cat&stdin=true&stdout=true"
	first, _, err := dialer.Dial(url, http.Header{"Authorization": {"Bearer " + token}})
	require.NoError(t, err)
	_, resp, err := dialer.Dial(url, http.Header{"Authorization": {"Bearer " + token}})
	require.Error(t, err)
	require.NotNil(t, resp)
	assert.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
	// Another principal is not held back by alice's streams.
	other, _, err := dialer.Dial(url, http.Header{"Authorization": {"Bearer " + cl.token(t, "bea", "engineers")}})
	require.NoError(t, err)
	other.Close()
	// Once alice's stream ends, she may open another.
	require.NoError(t, first.WriteMessage(websocket.BinaryMessage, append([]byte{0}, "x"...)))
	for {
		if _, _, err := first.ReadMessage(); err != nil {
			break
		}
	}
	first.Close()
	testkit.Eventually(t, 10*time.Second, func() error {
		c, _, err := dialer.Dial(url, http.Header{"Authorization": {"Bearer " + token}})
		if err == nil {
			c.Close()
		}
		return err
	})

	// Each refusal is in the record: the command, the builtin rule that
	// refused it, and its HTTP status.
	testkit.Eventually(t, 10*time.Second, func() error {
		rules, results := map[string]int{}, map[string]int{}
		for _, ev := range testkit.SessionEvents(t, cl.ctx, cl.conn.JS, "") {
			if c := ev.GetCommand(); c != nil {
				rules[c.GetDecision().GetRule()]++
			}
			if r := ev.GetResult(); r != nil {
				results[r.GetCommandTag()]++
			}
		}
		want := map[string]int{"builtin:request-body": 1, "builtin:unparseable-request": 2, "builtin:too-many-requests": 1}
		for rule, n := range want {
			if rules[rule] != n {
				return fmt.Errorf("rules recorded %v, results %v", rules, results)
			}
		}
		// (429: the request over the limit, the stream over the cap, and
		// any retry above made before alice's first stream was let go)
		if results["HTTP 413"] != 1 || results["HTTP 400"] != 2 || results["HTTP 429"] < 2 {
			return fmt.Errorf("rules recorded %v, results %v", rules, results)
		}
		return nil
	})
}
