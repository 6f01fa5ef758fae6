package bus_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/testkit"
)

// A service answers requests from callers' inboxes only: a message pushed
// onto its subject by a JetStream consumer (reply $JS.ACK..., or none) is
// not a request. The caller's token reaches the handler, never the body.
func TestServeAnswersInboxesOnly(t *testing.T) {
	_, conn := testkit.NATS(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var calls atomic.Int32
	var token atomic.Value
	_, err := bus.Serve(ctx, conn.NC, "sluice.api.test.echo.get", "test", func() *wrapperspb.StringValue { return &wrapperspb.StringValue{} },
		func(ctx context.Context, req *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
			calls.Add(1)
			token.Store(bus.CallerToken(ctx))
			return req, nil
		})
	require.NoError(t, err)
	for _, reply := range []string{"", "$JS.ACK.S.C.1.2.3.4.5", "sluice.api.other"} {
		m := nats.NewMsg("sluice.api.test.echo.get")
		m.Reply = reply
		require.NoError(t, conn.NC.PublishMsg(m))
	}
	require.NoError(t, conn.NC.Flush())
	var resp wrapperspb.StringValue
	rctx, rcancel := context.WithTimeout(bus.WithCallerToken(ctx, "tok-123"), 5*time.Second)
	defer rcancel()
	require.NoError(t, bus.Request(rctx, conn.NC, "sluice.api.test.echo.get", wrapperspb.String("hi"), &resp))
	assert.Equal(t, "hi", resp.GetValue())
	assert.Equal(t, int32(1), calls.Load(), "only the request from an inbox was served")
	assert.Equal(t, "tok-123", token.Load())
}

// Requests are served concurrently, at most 4×GOMAXPROCS at a time, and
// every one is answered once the slow ones end.
func TestServeBoundsConcurrentRequests(t *testing.T) {
	_, conn := testkit.NATS(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	limit := 4 * runtime.GOMAXPROCS(0)
	var inFlight, most atomic.Int32
	release := make(chan struct{})
	_, err := bus.Serve(ctx, conn.NC, "sluice.api.test.slow.get", "test", func() *wrapperspb.StringValue { return &wrapperspb.StringValue{} },
		func(ctx context.Context, req *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
			n := inFlight.Add(1)
			for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
			}
			<-release
			inFlight.Add(-1)
			return req, nil
		})
	require.NoError(t, err)
	var wg sync.WaitGroup
	errs := make(chan error, limit+3)
	for i := range limit + 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var resp wrapperspb.StringValue
			rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
			defer rcancel()
			if err := bus.Request(rctx, conn.NC, "sluice.api.test.slow.get", wrapperspb.String(fmt.Sprint(i)), &resp); err != nil {
				errs <- err
			} else if resp.GetValue() != fmt.Sprint(i) {
				errs <- fmt.Errorf("request %d answered %q", i, resp.GetValue())
			}
		}()
	}
	testkit.Eventually(t, 5*time.Second, func() error {
		if n := inFlight.Load(); n != int32(limit) {
			return fmt.Errorf("%d requests in flight", n)
		}
		return nil
	})
	time.Sleep(100 * time.Millisecond) // room for one too many
	assert.Equal(t, int32(limit), most.Load())
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// A service that stops drains its subscription: requests it had taken,
// more than it serves at once, are all answered.
func TestServeAnswersWhatItTookWhenItStops(t *testing.T) {
	_, conn := testkit.NATS(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	limit := 4 * runtime.GOMAXPROCS(0)
	var inFlight atomic.Int32
	var failed atomic.Pointer[error]
	_, err := bus.Serve(ctx, conn.NC, "sluice.api.test.slow.get", "test", func() *wrapperspb.StringValue { return &wrapperspb.StringValue{} },
		func(ctx context.Context, req *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
			inFlight.Add(1)
			time.Sleep(300 * time.Millisecond)
			return req, nil
		})
	require.NoError(t, err)
	client := testkit.Connect(t, conn.NC.ConnectedUrl())
	var wg sync.WaitGroup
	errs := make(chan error, limit+4)
	for i := range limit + 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var resp wrapperspb.StringValue
			rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer rcancel()
			if err := bus.Request(rctx, client.NC, "sluice.api.test.slow.get", wrapperspb.String(fmt.Sprint(i)), &resp); err != nil {
				err = fmt.Errorf("request %d: %w", i, err)
				failed.CompareAndSwap(nil, &err)
				errs <- err
			}
		}()
	}
	testkit.Eventually(t, 5*time.Second, func() error {
		if n := inFlight.Load(); n < int32(limit) {
			if err := failed.Load(); err != nil {
				return fmt.Errorf("%d requests in flight; one failed: %w", n, *err)
			}
			return fmt.Errorf("%d requests in flight", n)
		}
		return nil
	})
	time.Sleep(50 * time.Millisecond) // the rest wait in the subscription
	cancel()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// BenchmarkRequest is one request and its reply through a NATS server, with
// a handler that does nothing: the floor of every call between a worker and a
// service. In process is how `sluice dev` connects its parts; loopback is a
// socket on this machine.
func BenchmarkRequest(b *testing.B) {
	srv, _ := testkit.NATS(b)
	for _, mode := range []string{"in-process", "loopback"} {
		b.Run(mode, func(b *testing.B) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			conn := func(name string) *bus.Conn {
				cfg := bus.Config{URL: srv.ClientURL(), Name: name}
				if mode == "in-process" {
					cfg.InProcess = srv.Server
				}
				c, err := bus.Connect(ctx, cfg)
				require.NoError(b, err)
				b.Cleanup(func() { c.NC.Close() })
				return c
			}
			service, client := conn("service"), conn("client")
			_, err := bus.Serve(ctx, service.NC, "sluice.api.test.echo.get", "test", func() *wrapperspb.StringValue { return &wrapperspb.StringValue{} },
				func(ctx context.Context, req *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
					return req, nil
				})
			require.NoError(b, err)
			req := wrapperspb.String("SELECT abalance FROM pgbench_accounts WHERE aid = 1")
			for b.Loop() {
				var resp wrapperspb.StringValue
				if err := bus.Request(ctx, client.NC, "sluice.api.test.echo.get", req, &resp); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// serveEcho serves sluice.api.test.echo.get, answering each request with
// itself after delay; it counts the requests served.
func serveEcho(ctx context.Context, t *testing.T, conn *bus.Conn, delay time.Duration) *atomic.Int32 {
	t.Helper()
	var calls atomic.Int32
	_, err := bus.Serve(ctx, conn.NC, "sluice.api.test.echo.get", "test", func() *wrapperspb.StringValue { return &wrapperspb.StringValue{} },
		func(_ context.Context, req *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
			calls.Add(1)
			time.Sleep(delay)
			return req, nil
		})
	require.NoError(t, err)
	require.NoError(t, conn.NC.Flush())
	return &calls
}

// A request in flight when its NATS node dies is lost without an error
// (the client connects again, to another node). RequestIdempotent sends it
// again and is answered in about ResendAfter; Request waits out its
// deadline.
func TestRequestIdempotentOutlivesALostRequest(t *testing.T) {
	srv, conn := testkit.NATS(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	calls := serveEcho(ctx, t, conn, 0)
	proxy := testkit.NewProxy(t, strings.TrimPrefix(srv.ClientURL(), "nats://"))
	caller := testkit.Connect(t, "nats://"+proxy.Addr())

	for _, c := range []struct {
		name    string
		request func(context.Context, *nats.Conn, string, proto.Message, proto.Message) error
		lost    bool
	}{
		{"RequestIdempotent", bus.RequestIdempotent, false},
		{"Request", bus.Request, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			calls.Store(0)
			proxy.Drop()
			done := make(chan error, 1)
			start := time.Now()
			go func() {
				rctx, rcancel := context.WithTimeout(ctx, 3*time.Second)
				defer rcancel()
				var resp wrapperspb.StringValue
				err := c.request(rctx, caller.NC, "sluice.api.test.echo.get", wrapperspb.String("hi"), &resp)
				if err == nil && resp.GetValue() != "hi" {
					err = fmt.Errorf("answered %q", resp.GetValue())
				}
				done <- err
			}()
			time.Sleep(100 * time.Millisecond) // the request is sent, and lost
			proxy.Cut()
			err := <-done
			if c.lost {
				require.ErrorIs(t, err, context.DeadlineExceeded)
				assert.Zero(t, calls.Load())
				return
			}
			require.NoError(t, err)
			assert.Less(t, time.Since(start), 2*time.Second)
			assert.Equal(t, int32(1), calls.Load(), "served once: the lost request never arrived")
		})
	}
}

// A service slower than the resend waits is answered all the same: the
// first answer to any copy counts, however late, and the copies are sent
// ever less often.
func TestRequestIdempotentTakesALateAnswer(t *testing.T) {
	_, conn := testkit.NATS(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	calls := serveEcho(ctx, t, conn, 1600*time.Millisecond)
	rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
	defer rcancel()
	start := time.Now()
	var resp wrapperspb.StringValue
	require.NoError(t, bus.RequestIdempotent(rctx, conn.NC, "sluice.api.test.echo.get", wrapperspb.String("slow"), &resp))
	assert.Equal(t, "slow", resp.GetValue())
	took := time.Since(start)
	assert.Less(t, took, 2500*time.Millisecond, "the first copy's answer, at 1.6 s")
	assert.LessOrEqual(t, calls.Load(), int32(3), "sent at 0, 0.5 and 1.5 s at most")
}
