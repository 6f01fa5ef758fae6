package recorder

import (
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "sluice.dev/sluice/proto/sluice/common/v1"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
)

func peekSeeds() [][]byte {
	var out [][]byte
	for _, ev := range []*sessionv1.Event{
		{Id: "01J", SessionId: "s1", Seq: 1, Time: timestamppb.Now(), Body: &sessionv1.Event_Started{Started: &sessionv1.Started{Principal: &commonv1.Principal{Subject: "alice"}}}},
		{Id: "01K", SessionId: "s1", Seq: 2, Body: &sessionv1.Event_Command{Command: &sessionv1.Command{CommandId: 1, Text: "SELECT 1"}}},
		{Id: "01L", SessionId: "s1", Seq: 3, Body: &sessionv1.Event_Ended{Ended: &sessionv1.Ended{Reason: "closed"}}},
		{Id: "01M", SessionId: "s2", Seq: 1, Body: &sessionv1.Event_AuthFailed{AuthFailed: &sessionv1.AuthFailed{Code: "expired"}}},
		{SessionId: "s3", Seq: 1},
	} {
		b, _ := proto.Marshal(ev)
		out = append(out, b)
	}
	return append(out, []byte{0x0a, 0xff}, nil)
}

// peekEvent agrees with a full decode on every input the full decode
// accepts, and never accepts what it refuses.
func FuzzPeekEvent(f *testing.F) {
	for _, b := range peekSeeds() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, ok := peekEvent(b)
		var ev sessionv1.Event
		err := proto.Unmarshal(b, &ev)
		full := err == nil && ev.GetId() != "" && ev.GetSessionId() != "" && ev.GetSeq() > 0
		if ok && err == nil && (h.id != ev.GetId() || h.session != ev.GetSessionId() || h.seq != ev.GetSeq()) {
			t.Fatalf("peek %+v, decode %v", h, &ev)
		}
		if full && !ok {
			t.Fatalf("peek refused a well-formed event: %v", &ev)
		}
		if ok && err == nil {
			_, started := ev.GetBody().(*sessionv1.Event_Started)
			_, ended := ev.GetBody().(*sessionv1.Event_Ended)
			_, failed := ev.GetBody().(*sessionv1.Event_AuthFailed)
			_, held := ev.GetBody().(*sessionv1.Event_Approval)
			_, masked := ev.GetBody().(*sessionv1.Event_Masking)
			if (started || ended || failed || held || masked) && !h.indexed {
				t.Fatalf("indexed event not marked: %v", &ev)
			}
		}
	})
}
