package approvals

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	"sluice.dev/sluice/libs/approvalstate"
	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/eventstore"
	approvalsv1 "sluice.dev/sluice/proto/sluice/approvals/v1"
	commonv1 "sluice.dev/sluice/proto/sluice/common/v1"
)

// States.
const (
	Pending   = "pending"
	Approved  = "approved"
	Denied    = "denied"
	Expired   = "expired"
	Withdrawn = "withdrawn"
	Consumed  = "consumed"
	Revoked   = "revoked"
)

// Types.
const (
	TypeCommand = "command"
	TypeGrant   = "grant"
)

// fold computes an approval's state from its events.
func fold(events []eventstore.Event) (*approvalsv1.Approval, error) {
	a := &approvalsv1.Approval{}
	for _, e := range events {
		a.Version = e.Version
		if !e.Time.IsZero() {
			a.UpdatedAt = timestamppb.New(e.Time)
		}
		switch e.Type {
		case "sluice.approvals.v1.RequestOpened":
			var m approvalsv1.RequestOpened
			if err := e.Decode(&m); err != nil {
				return nil, err
			}
			a.Id, a.Type, a.State = m.GetId(), TypeCommand, Pending
			a.Requester, a.SessionId, a.Target = m.GetRequester(), m.GetSessionId(), m.GetTarget()
			// Requests opened before commands were cut to an excerpt are
			// cut when they are folded.
			a.Command, a.CommandHash, a.Rule, a.Reason = approvalstate.Excerpt(m.GetCommand()), m.GetCommandHash(), m.GetRule(), m.GetReason()
			a.CommandSize = max(m.GetCommandSize(), int64(len(m.GetCommand())))
			a.ApproverGroups, a.Quorum = m.GetApproverGroups(), max(m.GetQuorum(), 1)
			a.CreatedAt, a.ExpiresAt = m.GetOpenedAt(), m.GetExpiresAt()
			a.Protocol = m.GetProtocol()
		case "sluice.approvals.v1.GrantRequested":
			var m approvalsv1.GrantRequested
			if err := e.Decode(&m); err != nil {
				return nil, err
			}
			a.Id, a.Type, a.State = m.GetId(), TypeGrant, Pending
			a.Requester, a.Target, a.Role, a.Reason = m.GetRequester(), m.GetTarget(), m.GetRole(), m.GetReason()
			a.ApproverGroups, a.Quorum = m.GetApproverGroups(), max(m.GetQuorum(), 1)
			a.CreatedAt = m.GetRequestedAt()
			a.ExpiresAt = timestamppb.New(m.GetRequestedAt().AsTime().Add(requestTTL))
			a.DurationSeconds = m.GetDurationSeconds()
			a.SessionId, a.RequestId = m.GetSessionId(), m.GetRequestId()
		case "sluice.approvals.v1.RequestApproved":
			var m approvalsv1.RequestApproved
			if err := e.Decode(&m); err != nil {
				return nil, err
			}
			a.ApprovedBy = append(a.ApprovedBy, m.GetApprover().GetSubject())
			if m.GetGranted() {
				a.State, a.DecidedBy, a.DecisionReason = Approved, m.GetApprover().GetSubject(), m.GetReason()
				a.GrantId = m.GetGrantId()
			}
		case "sluice.approvals.v1.GrantApproved":
			var m approvalsv1.GrantApproved
			if err := e.Decode(&m); err != nil {
				return nil, err
			}
			a.ApprovedBy = append(a.ApprovedBy, m.GetApprover().GetSubject())
			if m.GetGranted() {
				a.State, a.DecidedBy, a.DecisionReason = Approved, m.GetApprover().GetSubject(), m.GetReason()
				a.StartsAt, a.EndsAt = m.GetStartsAt(), m.GetEndsAt()
			}
		case "sluice.approvals.v1.RequestDenied":
			var m approvalsv1.RequestDenied
			if err := e.Decode(&m); err != nil {
				return nil, err
			}
			a.State, a.DecidedBy, a.DecisionReason = Denied, m.GetApprover().GetSubject(), m.GetReason()
		case "sluice.approvals.v1.GrantDenied":
			var m approvalsv1.GrantDenied
			if err := e.Decode(&m); err != nil {
				return nil, err
			}
			a.State, a.DecidedBy, a.DecisionReason = Denied, m.GetApprover().GetSubject(), m.GetReason()
		case "sluice.approvals.v1.RequestExpired":
			a.State = Expired
		case "sluice.approvals.v1.RequestWithdrawn":
			var m approvalsv1.RequestWithdrawn
			if err := e.Decode(&m); err != nil {
				return nil, err
			}
			a.State, a.DecisionReason = Withdrawn, m.GetReason()
		case "sluice.approvals.v1.RequestConsumed":
			a.State = Consumed
		case "sluice.approvals.v1.GrantRevoked":
			var m approvalsv1.GrantRevoked
			if err := e.Decode(&m); err != nil {
				return nil, err
			}
			a.State, a.DecidedBy, a.DecisionReason = Revoked, m.GetBy().GetSubject(), m.GetReason()
		case "sluice.approvals.v1.ApprovalRetired":
			a.Retired = true
		default:
			return nil, fmt.Errorf("approval %s: unknown event %s", e.AggregateID, e.Type)
		}
	}
	return a, nil
}

// voters are the principals whose approvals an aggregate's events record.
func voters(events []eventstore.Event) []*commonv1.Principal {
	var out []*commonv1.Principal
	for _, e := range events {
		switch e.Type {
		case "sluice.approvals.v1.RequestApproved":
			var m approvalsv1.RequestApproved
			if e.Decode(&m) == nil {
				out = append(out, m.GetApprover())
			}
		case "sluice.approvals.v1.GrantApproved":
			var m approvalsv1.GrantApproved
			if e.Decode(&m) == nil {
				out = append(out, m.GetApprover())
			}
		}
	}
	return out
}

// samePerson reports whether two principals may be one person: the same
// subject from the same issuer, or the same email (a Slack decision names
// its approver by email; a subject that is an email counts as one). A
// quorum counts people, and nobody approves their own request under
// another name.
func samePerson(a, b *commonv1.Principal) bool {
	if a.GetSubject() != "" && a.GetSubject() == b.GetSubject() && a.GetIssuer() == b.GetIssuer() {
		return true
	}
	for _, x := range emails(a) {
		if slices.Contains(emails(b), x) {
			return true
		}
	}
	return false
}

// comparable reports whether samePerson can tell a and b apart: both are
// principals of an identity provider (compared by issuer and subject, and
// by email), or both carry an email. A Slack decision names its approver
// by email only: against a requester or a voter without one, it could be
// the same person under another name, and counts as nobody's.
func comparable(a, b *commonv1.Principal) bool {
	if a.GetIssuer() != "" && b.GetIssuer() != "" {
		return true
	}
	return len(emails(a)) > 0 && len(emails(b)) > 0
}

func emails(p *commonv1.Principal) []string {
	var out []string
	for _, v := range []string{p.GetEmail(), p.GetSubject()} {
		if strings.Contains(v, "@") {
			out = append(out, strings.ToLower(v))
		}
	}
	return out
}

// requestTTL bounds how long a grant request waits for a decision.
const requestTTL = 24 * time.Hour

// Fold is what the approvals buckets hold once the projection has applied
// every APPROVALS event: each request's and grant's folded state by id,
// from the first event, in the hot view (sluice_approvals) or, once
// retired, in the history (sluice_approvals_history). sluice admin
// reproject compares and rebuilds both with it.
func Fold(ctx context.Context, js jetstream.JetStream) (hot, history map[string]*approvalsv1.Approval, err error) {
	all, err := foldAll(ctx, js)
	if err != nil {
		return nil, nil, err
	}
	hot, history = map[string]*approvalsv1.Approval{}, map[string]*approvalsv1.Approval{}
	for id, a := range all {
		if a.GetRetired() {
			history[id] = a
		} else {
			hot[id] = a
		}
	}
	return hot, history, nil
}

func foldAll(ctx context.Context, js jetstream.JetStream) (map[string]*approvalsv1.Approval, error) {
	type aggKey struct{ aggregate, id string }
	var order []aggKey
	events := map[aggKey][]eventstore.Event{}
	store := eventstore.New(js, bus.StreamApprovals, bus.SubjectApprovals)
	if err := store.Read(ctx, bus.SubjectApprovals+".>", func(e eventstore.Event) error {
		k := aggKey{e.Aggregate, e.AggregateID}
		if _, ok := events[k]; !ok {
			order = append(order, k)
		}
		events[k] = append(events[k], e)
		return nil
	}); err != nil {
		return nil, err
	}
	out := make(map[string]*approvalsv1.Approval, len(order))
	for _, k := range order {
		a, err := fold(events[k])
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", k.aggregate, k.id, err)
		}
		out[a.GetId()] = a
	}
	return out, nil
}
