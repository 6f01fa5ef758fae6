package testkit

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"sluice.dev/sluice/libs/bus"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
)

// SessionEvents reads the session events workers have stored in SESSIONS
// (where no recorder runs, they stay), those of session id or, with id
// "", all of them.
func SessionEvents(t testing.TB, ctx context.Context, js jetstream.JetStream, id string) []*sessionv1.Event {
	t.Helper()
	s, err := js.Stream(ctx, bus.StreamSessions)
	require.NoError(t, err)
	info, err := s.Info(ctx)
	require.NoError(t, err)
	var out []*sessionv1.Event
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		require.NoError(t, err)
		var b sessionv1.Batch
		require.NoError(t, proto.Unmarshal(m.Data, &b))
		for _, data := range b.GetEvents() {
			var ev sessionv1.Event
			require.NoError(t, proto.Unmarshal(data, &ev))
			if id == "" || ev.GetSessionId() == id {
				out = append(out, &ev)
			}
		}
	}
	return out
}
