package auditlog_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"sluice.dev/sluice/libs/auditlog"
	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/testkit"
	auditv1 "sluice.dev/sluice/proto/sluice/audit/v1"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
)

// A read that meets "no responders" (a clustered stream whose consumer was
// just made, or placed on a node that died) starts again after the last
// record it passed on: every entry once, in order, whether it reads what is
// stored or follows the stream.
func TestReadStartsAgainAfterNoResponders(t *testing.T) {
	_, conn := testkit.NATS(t)
	ctx := context.Background()
	require.NoError(t, bus.Provision(ctx, conn.JS, bus.Topology{}))
	const session = "01jgsession"
	var want []string
	for seq := uint64(1); seq <= 5; seq += 2 { // three records of two events
		r := &auditv1.Record{Seq: seq}
		for i := range 2 {
			text := fmt.Sprintf("statement %d", seq+uint64(i))
			want = append(want, text)
			b, err := proto.Marshal(&sessionv1.Event{Body: &sessionv1.Event_Command{Command: &sessionv1.Command{Text: text}}})
			require.NoError(t, err)
			r.Events = append(r.Events, b)
		}
		b, err := proto.Marshal(r)
		require.NoError(t, err)
		_, err = conn.JS.Publish(ctx, auditlog.SessionSubject(session), b)
		require.NoError(t, err)
	}
	for _, o := range []auditlog.Options{{}, {Session: session}, {Follow: true}} {
		t.Run(fmt.Sprintf("%+v", o), func(t *testing.T) {
			flaky := &testkit.NoRespondersOnce{JetStream: conn.JS}
			rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			var got []string
			require.NoError(t, auditlog.Read(rctx, flaky, o, func(e auditlog.Entry) error {
				got = append(got, e.Event.GetCommand().GetText())
				if len(got) == len(want) && o.Follow {
					cancel()
				}
				return nil
			}))
			assert.Equal(t, want, got)
			assert.Equal(t, int32(2), flaky.Consumers.Load(), "read again once")
		})
	}
}
