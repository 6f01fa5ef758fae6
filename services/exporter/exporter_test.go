package exporter_test

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/recording"
	"sluice.dev/sluice/libs/testkit"
	commonv1 "sluice.dev/sluice/proto/sluice/common/v1"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
	"sluice.dev/sluice/services/exporter"
	"sluice.dev/sluice/services/recorder"
)

// receiver collects events from the syslog and HEC test servers: how often
// each id arrived and the last line or body with it.
type receiver struct {
	mu     sync.Mutex
	ids    map[string]int
	bodies map[string]string
	total  int
}

func newReceiver() *receiver { return &receiver{ids: map[string]int{}, bodies: map[string]string{}} }

func (r *receiver) add(id, body string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ids[id]++
	r.bodies[id] = body
	r.total++
}

// find returns the received lines that contain every one of want.
func (r *receiver) find(want ...string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
next:
	for _, b := range r.bodies {
		for _, w := range want {
			if !strings.Contains(b, w) {
				continue next
			}
		}
		out = append(out, b)
	}
	return out
}

// distinct counts the events received, checkpoints the checkpoint
// anchors.
func (r *receiver) distinct() int    { return r.count(false) }
func (r *receiver) checkpoints() int { return r.count(true) }

func (r *receiver) count(checkpoints bool) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for id := range r.ids {
		if strings.HasPrefix(id, "cp-") == checkpoints {
			n++
		}
	}
	return n
}

var sdID = regexp.MustCompile(`event_id="([^"]+)"`)

// syslogServer reads RFC 6587 octet-counted RFC 5424 frames.
func syslogServer(t *testing.T, r *receiver) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					n, err := br.ReadString(' ')
					if err != nil {
						return
					}
					size, err := strconv.Atoi(strings.TrimSpace(n))
					if err != nil {
						t.Errorf("bad frame length %q", n)
						return
					}
					msg := make([]byte, size)
					if _, err := io.ReadFull(br, msg); err != nil {
						return
					}
					if !strings.HasPrefix(string(msg), "<") || !strings.Contains(string(msg), ">1 ") {
						t.Errorf("not RFC 5424: %q", msg)
					}
					m := sdID.FindSubmatch(msg)
					if m == nil {
						t.Errorf("no event id in %q", msg)
						continue
					}
					r.add(string(m[1]), string(msg))
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func hecServer(t *testing.T, r *receiver, failures *atomic.Int32) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Header.Get("Authorization") != "Splunk test-token" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if failures.Add(-1) >= 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		dec := json.NewDecoder(req.Body)
		for {
			var ev struct {
				Event  map[string]any    `json:"event"`
				Fields map[string]string `json:"fields"`
			}
			if err := dec.Decode(&ev); err == io.EOF {
				break
			} else if err != nil {
				w.WriteHeader(http.StatusBadRequest)
				return
			}
			if ev.Fields["kind"] == "checkpoint" {
				// A checkpoint goes out as its anchor, not as OCSF.
				if ev.Event["checkpoint"] == nil || ev.Event["hash"] == nil || "cp-"+ev.Event["checkpoint"].(string) != ev.Fields["event_id"] {
					t.Errorf("not a checkpoint anchor: %v", ev.Event)
				}
				r.add(ev.Fields["event_id"], "")
				continue
			}
			md, _ := ev.Event["metadata"].(map[string]any)
			if md["uid"] != ev.Fields["event_id"] {
				t.Errorf("OCSF metadata.uid %v differs from the event id %s", md["uid"], ev.Fields["event_id"])
			}
			if ev.Event["class_uid"] == nil {
				t.Errorf("not OCSF: %v", ev.Event)
			}
			b, _ := json.Marshal(ev.Event)
			r.add(ev.Fields["event_id"], string(b))
		}
		fmt.Fprint(w, `{"text":"Success","code":0}`)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestExportResumesWithoutLoss(t *testing.T) {
	_, conn := testkit.NATS(t)
	ctx := context.Background()
	require.NoError(t, bus.Provision(ctx, conn.JS, bus.Topology{}))
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	rctx, rcancel := context.WithCancel(ctx)
	defer rcancel()
	go func() {
		_ = recorder.New(recorder.Config{Conn: conn, SigningKey: key, Log: zerolog.Nop(), CheckpointInterval: 100 * time.Millisecond}).Run(rctx)
	}()

	rec := recording.New(conn.JS)
	emit := func(n int) {
		sess := rec.Open(recording.NewSessionID())
		_, err := sess.Emit(&sessionv1.Event{Body: &sessionv1.Event_Started{Started: &sessionv1.Started{
			Principal: &commonv1.Principal{Subject: "alice"}, Target: &commonv1.Target{Name: "demo"}, Protocol: "postgres"}}})
		require.NoError(t, err)
		for i := 1; i < n; i++ {
			_, err := sess.Emit(&sessionv1.Event{Body: &sessionv1.Event_Command{Command: &sessionv1.Command{CommandId: uint64(i), Text: "SELECT 1"}}})
			require.NoError(t, err)
		}
		require.NoError(t, sess.Durable(ctx))
	}
	sys, hec := newReceiver(), newReceiver()
	var hecFailures atomic.Int32
	hecFailures.Store(3) // the collector is down for the first three posts
	sysAddr, hecURL := syslogServer(t, sys), hecServer(t, hec, &hecFailures)
	run := func() (context.CancelFunc, chan error) {
		ectx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			done <- exporter.Run(ectx, exporter.Config{Conn: conn, Log: zerolog.Nop(), Batch: 50, Sinks: []exporter.Sink{
				&exporter.Syslog{Addr: sysAddr}, &exporter.HEC{URL: hecURL, Token: "test-token"},
			}})
		}()
		return cancel, done
	}

	emit(100)
	cancel, done := run()
	testkit.Eventually(t, 30*time.Second, func() error {
		if sys.distinct() < 100 || hec.distinct() < 100 {
			return fmt.Errorf("syslog %d, hec %d of 100", sys.distinct(), hec.distinct())
		}
		return nil
	})
	cancel()
	require.NoError(t, <-done)

	// Recorded while the exporter is down: delivered after it restarts.
	emit(60)
	cancel, done = run()
	defer func() { cancel(); <-done }()
	testkit.Eventually(t, 30*time.Second, func() error {
		if sys.distinct() < 160 || hec.distinct() < 160 {
			return fmt.Errorf("syslog %d, hec %d of 160", sys.distinct(), hec.distinct())
		}
		return nil
	})
	assert.Equal(t, 160, sys.distinct())
	assert.Equal(t, 160, hec.distinct())
	// The signed checkpoints reach the SIEM too, as anchors.
	testkit.Eventually(t, 10*time.Second, func() error {
		if sys.checkpoints() == 0 || hec.checkpoints() == 0 {
			return fmt.Errorf("checkpoint anchors: syslog %d, hec %d", sys.checkpoints(), hec.checkpoints())
		}
		return nil
	})
}

func TestSyslogFormat(t *testing.T) {
	it := exporter.Item{ID: "01abc", Session: "s1", Seq: 3, Kind: "decided", Denied: true, Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Body: []byte(`{"a":1}`)}
	got := exporter.FormatSyslog(it, "gw1")
	assert.Equal(t, `<108>1 2026-01-02T03:04:05Z gw1 sluice - DECIDED [sluice@32473 event_id="01abc" session="s1" seq="3"] {"a":1}`, got)
}
