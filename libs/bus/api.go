package bus

// Request/reply subjects of every service, sluice.api.<service>.<noun>.<verb>,
// in one place: the services serve them, their callers send to them, and the
// identity table (identities.go) grants each component exactly the ones it
// serves or calls. A subject that only one kind of caller may use is its own
// subject, so that NATS permissions, not a field in the request, say who
// called.
const (
	// Identity service.
	APIIdentityVerify = "sluice.api.identity.token.verify"
	// APIIdentitySSHSign exchanges the caller's verified token for a
	// short-lived SSH user certificate (the API, for sluice ssh login).
	APIIdentitySSHSign = "sluice.api.identity.ssh.sign"
	// APIIdentitySSHAuthority gives the public keys of the SSH user
	// authorities (the SSH worker trusts certificates they sign).
	APIIdentitySSHAuthority = "sluice.api.identity.ssh.authority"

	// Control service. Apply carries the caller's access token; BreakGlass
	// carries none and is open only to the break-glass NATS identity.
	APIControlApply      = "sluice.api.control.config.apply"
	APIControlBreakGlass = "sluice.api.control.config.breakglass"
	APIControlTargets    = "sluice.api.control.targets.list"

	// Policy service. Evaluate is the workers' ruling on a command; Test is
	// `sluice policy test` on behalf of a verified caller.
	APIPolicyEvaluate = "sluice.api.policy.decision.evaluate"
	APIPolicyTest     = "sluice.api.policy.decision.test"

	// Approvals service. Open and Consume come from workers on behalf of a
	// session's principal (whose token they forward); SlackDecide comes
	// from the Slack bot on behalf of a Slack user; the rest come from the
	// API on behalf of a verified caller.
	APIApprovalsOpen        = "sluice.api.approvals.request.open"
	APIApprovalsConsume     = "sluice.api.approvals.request.consume"
	APIApprovalsWithdraw    = "sluice.api.approvals.request.withdraw"
	APIApprovalsDecide      = "sluice.api.approvals.request.decide"
	APIApprovalsSlackDecide = "sluice.api.approvals.slack.decide"
	APIApprovalsList        = "sluice.api.approvals.request.list"
	APIApprovalsGet         = "sluice.api.approvals.request.get"
	APIGrantsRequest        = "sluice.api.approvals.grant.request"
	APIGrantsRevoke         = "sluice.api.approvals.grant.revoke"

	// SubjectWorkers is where workers talk among themselves (a
	// CancelRequest that reached another replica than the session's) and
	// where a session is reached on whichever replica holds it.
	SubjectWorkers = "sluice.worker"
	// SubjectPGCancel carries PostgreSQL cancels between worker replicas.
	SubjectPGCancel = SubjectWorkers + ".pg.cancel"
	// SubjectPGRenew carries a session's renewal with a fresh token of its
	// principal (sessionv1.RenewRequest, the token in HeaderCaller), from
	// the API only: every worker replica receives it, and only the one that
	// holds the session answers.
	SubjectPGRenew = SubjectWorkers + ".pg.renew"
	// SubjectKill carries an administrator's request to end a session to
	// every worker replica (the one that holds it answers).
	SubjectKill = SubjectWorkers + ".kill"
)
