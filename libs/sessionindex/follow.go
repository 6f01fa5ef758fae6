package sessionindex

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"sluice.dev/sluice/libs/bus"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
)

// Follow keeps x equal to the sluice_sessions bucket until ctx is done,
// with one watch; ready is closed once x holds everything the bucket held
// when it started.
func Follow(ctx context.Context, js jetstream.JetStream, x *Index, ready chan struct{}) error {
	return bus.FollowKV(ctx, js, bus.BucketSessions, ready, func(e jetstream.KeyValueEntry) error {
		if e.Operation() != jetstream.KeyValuePut {
			x.Delete(e.Key())
			return nil
		}
		var s sessionv1.Summary
		if proto.Unmarshal(e.Value(), &s) != nil {
			return nil // not a summary: nothing to show
		}
		// The key names the session: a summary naming another is indexed
		// under its key, so that the key's deletion removes it.
		s.SessionId = e.Key()
		x.Put(&s)
		return nil
	})
}
