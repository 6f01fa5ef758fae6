package pgworker

import (
	"context"

	"google.golang.org/protobuf/proto"

	policyv1 "sluice.dev/sluice/proto/sluice/policy/v1"
)

// hold handles a statement the policy holds for review.
func (s *session) hold(ctx context.Context, d *policyv1.Decision, text, via string, frame []byte, cached bool) error {
	return s.deny(reviewUnavailable(d), text, via, cached)
}

// holdParse handles a Parse whose statement the policy holds for review.
func (s *session) holdParse(ctx context.Context, d *policyv1.Decision, name, text string, frame []byte, cached bool) error {
	return s.denyParse(reviewUnavailable(d), name, text, cached)
}

func reviewUnavailable(d *policyv1.Decision) *policyv1.Decision {
	c := proto.Clone(d).(*policyv1.Decision)
	c.Action = "deny"
	c.Reason = d.GetReason() + " (held for approval, but approvals are not available on this gateway)"
	return c
}
