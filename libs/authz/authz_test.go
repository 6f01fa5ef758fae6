package authz

import (
	"testing"

	"github.com/stretchr/testify/assert"

	commonv1 "sluice.dev/sluice/proto/sluice/common/v1"
	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
)

func TestIsApprover(t *testing.T) {
	set := &controlv1.ApproverGroupsSet{Groups: []*controlv1.ApproverGroup{
		{Name: "oncall", Groups: []string{"sre"}, Subjects: []string{"oncall@example.com", "svc-release"}},
		{Name: "dba", Groups: []string{"dba"}},
	}}
	for _, c := range []struct {
		p     *commonv1.Principal
		names []string
		want  bool
	}{
		{&commonv1.Principal{Subject: "u1", Groups: []string{"sre"}}, nil, true},
		{&commonv1.Principal{Subject: "u1", Groups: []string{"sre"}}, []string{"dba"}, false},
		{&commonv1.Principal{Subject: "u2", Email: "oncall@example.com"}, []string{"oncall"}, true},
		{&commonv1.Principal{Subject: "svc-release", Machine: true}, []string{"oncall"}, true},
		// A client of an agents provider may carry any email it likes.
		{&commonv1.Principal{Subject: "agent-7", Email: "oncall@example.com", Machine: true}, []string{"oncall"}, false},
		{&commonv1.Principal{Subject: "u3"}, nil, false},
	} {
		assert.Equal(t, c.want, IsApprover(set, c.p, c.names), "%v %v", c.p, c.names)
	}
}

// A subject or an email means someone only within its issuer: a group
// scoped to one provider counts nobody from another, whatever its token
// says; a Slack user still counts by the email Slack vouches for.
func TestIsApproverWithinItsIssuer(t *testing.T) {
	set := &controlv1.ApproverGroupsSet{Groups: []*controlv1.ApproverGroup{
		{Name: "approvers", Groups: []string{"approvers"}, Subjects: []string{"bob@example.com", "u-bob"}, Issuer: "https://idp"},
	}}
	for _, c := range []struct {
		p    *commonv1.Principal
		want bool
	}{
		{&commonv1.Principal{Subject: "u-bob", Issuer: "https://idp"}, true},
		{&commonv1.Principal{Subject: "u-9", Email: "bob@example.com", Issuer: "https://idp"}, true},
		{&commonv1.Principal{Subject: "u-8", Groups: []string{"approvers"}, Issuer: "https://idp"}, true},
		{&commonv1.Principal{Subject: "u-bob", Issuer: "https://self-service"}, false},
		{&commonv1.Principal{Subject: "x", Email: "bob@example.com", Issuer: "https://self-service"}, false},
		{&commonv1.Principal{Subject: "x", Groups: []string{"approvers"}, Issuer: "https://self-service"}, false},
		{&commonv1.Principal{Subject: "bob@example.com", Email: "bob@example.com", ClientId: SlackClient}, true},
		{&commonv1.Principal{Subject: "u-bob", ClientId: SlackClient}, false},
	} {
		assert.Equal(t, c.want, IsApprover(set, c.p, nil), "%v", c.p)
	}
}
