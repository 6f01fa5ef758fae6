package bus_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
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
