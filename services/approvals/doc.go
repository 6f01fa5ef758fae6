// Package approvals is the approvals service. It owns the APPROVALS event
// stream: approval requests for held commands and just-in-time grants.
//
// An approval request is pending while its requester waits, then approved,
// denied, expired, withdrawn (the requester's client left or cancelled, its
// session ended, or the same statement was sent again) or consumed. It binds to the requester, the session, the target and the
// exact command (a SHA-256 over the command bytes and bound parameters); it
// expires; it is consumed once; it needs a quorum of votes from the approver
// groups its rule names; nobody approves their own request. A grant is a
// time-boxed elevation (a role on a target) that policies see as `grants`
// from approval until it ends or is revoked.
//
// Every transition is an event on sluice.evt.approvals.<request|grant>.<id>.<event>
// (integrations such as the Slack bot subscribe to them), folded into the
// sluice_approvals bucket that workers watch and the policy service reads.
// Decisions are made under optimistic concurrency per request, so replicas
// never double-count a vote or consume an approval twice.
package approvals
