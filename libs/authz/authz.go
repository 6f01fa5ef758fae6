// Package authz is how a service authorizes the caller of a request it
// serves: it verifies the access token the request carries (bus.HeaderCaller)
// through the identity service, never trusting a principal written in the
// request body, and checks the caller's groups against the roles applied in
// sluice.yaml (the `access:` section and the approver groups), never against
// group names written in code.
//
// Invariants: no role is granted while no access section is applied (only
// the break-glass path administers then); a change of the identity
// configuration forgets every cached verification at once.
package authz

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go"

	"sluice.dev/sluice/libs/authn"
	"sluice.dev/sluice/libs/controlstate"
	commonv1 "sluice.dev/sluice/proto/sluice/common/v1"
	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
)

// Role is what a caller may be allowed to do.
type Role int

// Roles.
const (
	// Admin applies configuration (access.admins).
	Admin Role = iota
	// Auditor reads sessions, the audit log and every approval
	// (access.auditors; admins too).
	Auditor
	// PolicyReader runs `policy test`: admins, auditors and members of any
	// approver group.
	PolicyReader
)

// Guard verifies callers and checks their roles against a followed control
// view. Build it with New before the view starts following.
type Guard struct {
	Authn *authn.Client
	View  *controlstate.View
}

// New returns a guard whose verifications follow the identity
// configuration of view (the initial load included, so call it before the
// view follows).
func New(nc *nats.Conn, view *controlstate.View) *Guard {
	g := &Guard{Authn: authn.New(nc), View: view}
	view.OnChange(func(key string) {
		if key == controlstate.KeyIdentityProvider {
			g.Authn.SetIdentityDigest(view.IdentityDigest())
		}
	})
	return g
}

// Caller verifies the request's caller.
func (g *Guard) Caller(ctx context.Context) (*commonv1.Principal, *commonv1.Error) {
	return g.Authn.Caller(ctx)
}

// Require verifies the caller and checks that it holds role.
func (g *Guard) Require(ctx context.Context, role Role) (*commonv1.Principal, *commonv1.Error) {
	p, e := g.Caller(ctx)
	if e != nil {
		return nil, e
	}
	if e := g.CheckNow(ctx, p, role); e != nil {
		return nil, e
	}
	return p, nil
}

// CheckNow is Check, asked again once the view has caught up with the
// control bucket before it refuses (controlstate.View.Recheck): a role
// applied a moment before is not refused for the view's lag.
func (g *Guard) CheckNow(ctx context.Context, p *commonv1.Principal, role Role) *commonv1.Error {
	if g.View.Recheck(ctx, func() bool { return g.Has(p, role) }) {
		return nil
	}
	return g.Check(p, role)
}

// Check reports whether p holds role; the refusal names the groups that
// would.
func (g *Guard) Check(p *commonv1.Principal, role Role) *commonv1.Error {
	if g.Has(p, role) {
		return nil
	}
	need := g.groups(role)
	if len(need) == 0 {
		return &commonv1.Error{Code: "forbidden", Message: fmt.Sprintf("%s: no group holds this role yet (apply an access section with the break-glass identity: sluice admin apply)", role)}
	}
	return &commonv1.Error{Code: "forbidden", Message: fmt.Sprintf("%s: this needs membership in one of: %s", role, strings.Join(need, ", "))}
}

// Has reports whether p holds role.
func (g *Guard) Has(p *commonv1.Principal, role Role) bool {
	for _, grp := range p.GetGroups() {
		if slices.Contains(g.groups(role), grp) {
			return true
		}
	}
	if role == PolicyReader {
		return IsApprover(g.View.Approvers(), p, nil)
	}
	return false
}

func (g *Guard) groups(role Role) []string {
	a := g.View.Access()
	var out []string
	switch role {
	case Admin:
		out = append(out, a.GetAdmins()...)
	case Auditor, PolicyReader:
		out = append(append(out, a.GetAuditors()...), a.GetAdmins()...)
		if role == PolicyReader {
			for _, ag := range g.View.Approvers().GetGroups() {
				out = append(out, ag.GetGroups()...)
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func (r Role) String() string {
	switch r {
	case Admin:
		return "administering Sluice"
	case Auditor:
		return "reading the audit log"
	case PolicyReader:
		return "testing the policy"
	}
	return "this role"
}

// SlackClient is the client id of a principal the Slack bot vouches for:
// a Slack user, by the email Slack holds for them.
const SlackClient = "slack"

// IsApprover reports whether p belongs to one of the named approver groups
// (all of them when names is nil): by group membership or by being listed
// as a subject (subject or email). A group scoped to an issuer counts only
// its tokens; a Slack decision (no issuer: the email Slack vouches for)
// still matches an email listed there. A machine identity's email claim
// names nobody: whoever registers a client may choose it.
func IsApprover(set *controlv1.ApproverGroupsSet, p *commonv1.Principal, names []string) bool {
	slack := p.GetIssuer() == "" && p.GetClientId() == SlackClient
	for _, g := range set.GetGroups() {
		if names != nil && !slices.Contains(names, g.GetName()) {
			continue
		}
		if g.GetIssuer() != "" && p.GetIssuer() != g.GetIssuer() {
			if slack && p.GetEmail() != "" && slices.Contains(g.GetSubjects(), p.GetEmail()) {
				return true
			}
			continue
		}
		if slices.Contains(g.GetSubjects(), p.GetSubject()) || (p.GetEmail() != "" && !p.GetMachine() && slices.Contains(g.GetSubjects(), p.GetEmail())) {
			return true
		}
		for _, pg := range p.GetGroups() {
			if slices.Contains(g.GetGroups(), pg) {
				return true
			}
		}
	}
	return false
}
