package slackbot

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"google.golang.org/protobuf/proto"

	approvalsv1 "sluice.dev/sluice/proto/sluice/approvals/v1"
	commonv1 "sluice.dev/sluice/proto/sluice/common/v1"
)

// An approval event is reflected once the view counts that approval, not
// only an earlier one (a quorum of two, its card left pending otherwise).
func TestStateAfterCountsThisApproval(t *testing.T) {
	second, _ := proto.Marshal(&approvalsv1.RequestApproved{Id: "a", Approver: &commonv1.Principal{Subject: "bob"}})
	grant, _ := proto.Marshal(&approvalsv1.GrantApproved{Id: "g", Approver: &commonv1.Principal{Subject: "bob"}, Granted: true})
	firstOnly := &approvalsv1.Approval{State: "pending", ApprovedBy: []string{"alice"}}
	both := &approvalsv1.Approval{State: "approved", ApprovedBy: []string{"alice", "bob"}}
	for _, data := range [][]byte{second, grant} {
		assert.False(t, stateAfter(firstOnly, "approved", data), "the view has not counted bob's yet")
		assert.True(t, stateAfter(both, "approved", data))
	}
	assert.True(t, stateAfter(firstOnly, "approved", []byte("not an event")), "an unreadable event: any approval will do")
	assert.False(t, stateAfter(&approvalsv1.Approval{State: "pending"}, "approved", nil))
}
