package approvals

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"sluice.dev/sluice/libs/approvalstate"
	"sluice.dev/sluice/libs/authz"
	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/controlstate"
	"sluice.dev/sluice/libs/eventstore"
	"sluice.dev/sluice/libs/recording"
	"sluice.dev/sluice/libs/visible"
	approvalsv1 "sluice.dev/sluice/proto/sluice/approvals/v1"
	commonv1 "sluice.dev/sluice/proto/sluice/common/v1"
)

const projectionName = bus.DurableApprovalsProjection

// Config configures the service.
type Config struct {
	Conn *bus.Conn
	Log  zerolog.Logger
	// DefaultTTL is how long a held command waits when the request names
	// none; default 5m.
	DefaultTTL time.Duration
	// MaxGrant bounds a grant's length; default 12h.
	MaxGrant time.Duration
	// Now is the clock (tests).
	Now func() time.Time
	// Ready, if set, is called once the service serves.
	Ready func()
	// HotRetention is how long a request or grant that can change no more
	// (decided, expired, withdrawn, consumed, revoked, or a grant past its
	// end) stays in the hot view every worker follows before it retires to
	// the history; default 10m.
	HotRetention time.Duration
}

// Service is the approvals service.
type Service struct {
	cfg   Config
	store *eventstore.Store
	ctl   *controlstate.View
	view  *approvalstate.View
	guard *authz.Guard
}

// New returns the service.
func New(cfg Config) *Service {
	if cfg.DefaultTTL <= 0 {
		cfg.DefaultTTL = 5 * time.Minute
	}
	if cfg.MaxGrant <= 0 {
		cfg.MaxGrant = 12 * time.Hour
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.HotRetention <= 0 {
		cfg.HotRetention = 10 * time.Minute
	}
	ctl := controlstate.NewView()
	return &Service{cfg: cfg, store: eventstore.New(cfg.Conn.JS, bus.StreamApprovals, bus.SubjectApprovals),
		ctl: ctl, view: approvalstate.NewView(), guard: authz.New(cfg.Conn.NC, ctl)}
}

// Run serves until ctx is done.
func (s *Service) Run(ctx context.Context) error {
	nc := s.cfg.Conn.NC
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.ctl.Follow(ctx, s.cfg.Conn.JS) })
	g.Go(func() error { return s.view.Follow(ctx, s.cfg.Conn.JS) })
	g.Go(func() error {
		return s.store.Run(ctx, eventstore.Projection{Name: projectionName, Apply: s.project, Log: s.cfg.Log})
	})
	g.Go(func() error { return s.expire(ctx) })
	// Answer only once both read models hold what the buckets held at
	// start: a request must not be refused for a target that exists.
	for _, ready := range []<-chan struct{}{s.ctl.Ready(), s.view.Ready()} {
		select {
		case <-ready:
		case <-ctx.Done():
			_ = g.Wait()
			return nil
		}
	}
	serve := []error{}
	add := func(_ any, err error) { serve = append(serve, err) }
	add(bus.Serve(ctx, nc, bus.APIApprovalsOpen, "approvals", func() *approvalsv1.OpenRequest { return &approvalsv1.OpenRequest{} }, s.open))
	add(bus.Serve(ctx, nc, bus.APIApprovalsDecide, "approvals", func() *approvalsv1.Decide { return &approvalsv1.Decide{} }, s.decide))
	add(bus.Serve(ctx, nc, bus.APIApprovalsSlackDecide, "approvals", func() *approvalsv1.SlackDecide { return &approvalsv1.SlackDecide{} }, s.slackDecide))
	add(bus.Serve(ctx, nc, bus.APIApprovalsWithdraw, "approvals", func() *approvalsv1.Withdraw { return &approvalsv1.Withdraw{} }, s.withdraw))
	add(bus.Serve(ctx, nc, bus.APIApprovalsConsume, "approvals", func() *approvalsv1.Consume { return &approvalsv1.Consume{} }, s.consume))
	add(bus.Serve(ctx, nc, bus.APIApprovalsList, "approvals", func() *approvalsv1.ListRequest { return &approvalsv1.ListRequest{} }, s.list))
	add(bus.Serve(ctx, nc, bus.APIApprovalsGet, "approvals", func() *approvalsv1.Get { return &approvalsv1.Get{} }, s.get))
	add(bus.Serve(ctx, nc, bus.APIGrantsRequest, "approvals", func() *approvalsv1.RequestGrant { return &approvalsv1.RequestGrant{} }, s.requestGrant))
	add(bus.Serve(ctx, nc, bus.APIGrantsRevoke, "approvals", func() *approvalsv1.Revoke { return &approvalsv1.Revoke{} }, s.revoke))
	if err := errors.Join(serve...); err != nil {
		return err
	}
	s.cfg.Log.Info().Msg("approvals service ready")
	if s.cfg.Ready != nil {
		s.cfg.Ready()
	}
	s.shrink(ctx)
	err := g.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// shrink projects again the requests stored whole before commands were cut
// to an excerpt, so that the bucket every worker follows holds none.
func (s *Service) shrink(ctx context.Context) {
	for _, a := range s.view.List(func(a *approvalsv1.Approval) bool { return len(a.GetCommand()) > approvalstate.MaxCommandExcerpt }) {
		if err := s.project(ctx, eventstore.Event{Aggregate: "request", AggregateID: a.GetId()}); err != nil {
			s.cfg.Log.Warn().Err(err).Str("approval", a.GetId()).Msg("oversized request not shrunk")
		}
	}
}

// Bounds on what a request holds: every approval is in the view each
// worker follows, so no caller makes one large, or makes many.
const (
	// MaxText bounds a reason (the requester's, an approver's, a rule's).
	MaxText = 2048
	// MaxName bounds a target, role, rule, group or session id.
	MaxName = 256
	// MaxGroups bounds the approver groups of a request.
	MaxGroups = 32
	// MaxPending is how many pending requests one requester may have.
	MaxPending = 20
)

// tooLong names the first field over its bound, or "".
func tooLong(fields map[string]string, bound int) string {
	for name, v := range fields {
		if len(v) > bound {
			return fmt.Sprintf("%s is longer than %d bytes", name, bound)
		}
	}
	return ""
}

// roleName reports whether role is a name a policy's grants can match and
// an approver reads as it is.
func roleName(role string) bool {
	for i, r := range role {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case i > 0 && (r == '.' || r == '_' || r == ':' || r == '-'):
		default:
			return false
		}
	}
	return role != ""
}

func groupMap(groups []string) map[string]string {
	m := make(map[string]string, len(groups))
	for i, g := range groups {
		m[fmt.Sprintf("approver group %d", i+1)] = g
	}
	return m
}

// pendingOf counts the requester's pending requests.
func (s *Service) pendingOf(p *commonv1.Principal) int {
	return len(s.view.List(func(a *approvalsv1.Approval) bool {
		return a.GetState() == Pending && sameSubject(a.GetRequester(), p)
	}))
}

func replyErr(code, format string, args ...any) *approvalsv1.ApprovalReply {
	return &approvalsv1.ApprovalReply{Error: &commonv1.Error{Code: code, Message: fmt.Sprintf(format, args...)}}
}

// caller verifies who asks: the principal of the access token the request
// carries (forwarded by the API for its caller, by a worker for its
// session's principal). A principal in a request body is never trusted.
func (s *Service) caller(ctx context.Context) (*commonv1.Principal, *approvalsv1.ApprovalReply) {
	p, e := s.guard.Caller(ctx)
	if e != nil {
		return nil, &approvalsv1.ApprovalReply{Error: e}
	}
	return p, nil
}

// aggregateOf finds whether id is a command request or a grant.
func (s *Service) aggregateOf(ctx context.Context, id string) (string, eventstore.Aggregate, error) {
	for _, agg := range []string{"request", "grant"} {
		st, err := s.store.Load(ctx, agg, id)
		if err == nil {
			return agg, st, nil
		}
		if !errors.Is(err, eventstore.ErrNotFound) {
			return "", st, err
		}
	}
	return "", eventstore.Aggregate{}, eventstore.ErrNotFound
}

func (s *Service) open(ctx context.Context, req *approvalsv1.OpenRequest) (*approvalsv1.ApprovalReply, error) {
	requester, refused := s.caller(ctx)
	if refused != nil {
		return refused, nil
	}
	if req.GetCommandHash() == "" || len(req.GetApproverGroups()) == 0 {
		return replyErr("bad_request", "command hash and approver groups are required"), nil
	}
	if msg := tooLong(map[string]string{"the rule": req.GetRule(), "the target": req.GetTarget(), "the session id": req.GetSessionId(), "the command hash": req.GetCommandHash(), "the protocol": req.GetProtocol()}, MaxName); msg != "" {
		return replyErr("bad_request", "%s", msg), nil
	}
	for name, v := range map[string]string{"the rule": req.GetRule(), "the target": req.GetTarget(), "the session id": req.GetSessionId(), "the protocol": req.GetProtocol()} {
		if v != visible.Text(v) || strings.ContainsRune(v, '\n') {
			return replyErr("bad_request", "%s holds characters an approver would not see", name), nil
		}
	}
	if msg := tooLong(map[string]string{"the reason": req.GetReason()}, MaxText); msg != "" {
		return replyErr("bad_request", "%s", msg), nil
	}
	if len(req.GetApproverGroups()) > MaxGroups || tooLong(groupMap(req.GetApproverGroups()), MaxName) != "" {
		return replyErr("bad_request", "at most %d approver groups of at most %d bytes", MaxGroups, MaxName), nil
	}
	if s.pendingOf(requester) >= MaxPending {
		return replyErr("too_many", "%s already has %d pending requests; wait for a decision", requester.GetSubject(), MaxPending), nil
	}
	ttl := time.Duration(req.GetTtlSeconds()) * time.Second
	if ttl <= 0 {
		ttl = s.cfg.DefaultTTL
	}
	now := s.cfg.Now()
	id := recording.NewSessionID()
	// A request keeps its command as an approver must see it: whatever
	// would not show as itself is written out. The approval binds to the
	// hash; the command is whole or the request is refused, so an approver
	// is never shown part of what the approval runs, and no request is
	// large enough to burden the views that every session reads.
	command, size := visible.Text(req.GetCommand()), max(req.GetCommandSize(), int64(len(req.GetCommand())))
	if size > approvalstate.MaxCommandExcerpt || len(command) > approvalstate.MaxCommandExcerpt {
		return replyErr("too_long", "the command is %d bytes (%d written out for an approver), longer than an approver is shown (%d bytes): it cannot be approved as one; split it, or ask for a grant",
			size, len(command), approvalstate.MaxCommandExcerpt), nil
	}
	ev := &approvalsv1.RequestOpened{
		Id: id, Requester: requester, SessionId: req.GetSessionId(), Target: req.GetTarget(), CommandSize: size,
		Command: command, CommandHash: req.GetCommandHash(), Rule: req.GetRule(), Reason: req.GetReason(),
		ApproverGroups: req.GetApproverGroups(), Quorum: max(req.GetQuorum(), 1),
		OpenedAt: timestamppb.New(now), ExpiresAt: timestamppb.New(now.Add(ttl)), Protocol: req.GetProtocol(),
	}
	pos, err := s.store.Append(ctx, "request", id, eventstore.Position{}, eventstore.NewEvent("opened", ev))
	if err != nil {
		return nil, err
	}
	s.settle(ctx, pos)
	approvalsOpened.WithLabelValues(req.GetProtocol()).Inc()
	s.supersede(ctx, ev)
	a, _ := fold([]eventstore.Event{{Type: "sluice.approvals.v1.RequestOpened", Data: mustMarshal(ev), Version: 1}})
	return &approvalsv1.ApprovalReply{Approval: a}, nil
}

// supersede withdraws the requester's other pending requests for the same
// command on the same target: a client that sends a held statement again
// (a retry, a reconnect) leaves one request for approvers to decide, the
// newest, whose session waits.
func (s *Service) supersede(ctx context.Context, ev *approvalsv1.RequestOpened) {
	older := s.view.List(func(a *approvalsv1.Approval) bool {
		return a.GetId() != ev.GetId() && a.GetType() == TypeCommand && a.GetState() == Pending &&
			sameSubject(a.GetRequester(), ev.GetRequester()) && a.GetTarget() == ev.GetTarget() && a.GetCommandHash() == ev.GetCommandHash()
	})
	for _, a := range older {
		_, err := s.withRetry(ctx, a.GetId(), func(_ string, _ eventstore.Aggregate, cur *approvalsv1.Approval) (*approvalsv1.ApprovalReply, []eventstore.Pending) {
			if cur.GetState() != Pending {
				return nil, nil
			}
			return nil, []eventstore.Pending{eventstore.NewEvent("withdrawn", &approvalsv1.RequestWithdrawn{
				Id: cur.GetId(), SessionId: cur.GetSessionId(), SupersededBy: ev.GetId(), At: timestamppb.New(s.cfg.Now()),
				Reason: fmt.Sprintf("the same statement was sent again and waits under request %s", ev.GetId()),
			})}
		})
		if err != nil {
			s.cfg.Log.Warn().Err(err).Str("approval", a.GetId()).Msg("superseded request not withdrawn")
		}
	}
}

// withdraw records that a request's session no longer waits for it: the
// client left or cancelled, or the session ended. Only the requester's own
// session withdraws its request; a withdrawn request never runs.
//
// A session ended by its token's expiry withdraws with a token that no
// longer verifies: that is accepted for the request's own session, since
// only workers may publish this subject and a withdrawal only ever stops a
// command from running.
func (s *Service) withdraw(ctx context.Context, req *approvalsv1.Withdraw) (*approvalsv1.ApprovalReply, error) {
	p, refused := s.caller(ctx)
	if len(req.GetReason()) > MaxText {
		return replyErr("bad_request", "the reason is longer than %d bytes", MaxText), nil
	}
	return s.withRetry(ctx, req.GetId(), func(agg string, _ eventstore.Aggregate, a *approvalsv1.Approval) (*approvalsv1.ApprovalReply, []eventstore.Pending) {
		switch {
		case agg != "request":
			return replyErr("bad_request", "%s is a grant, not a command approval", a.GetId()), nil
		case req.GetSessionId() != a.GetSessionId() || (refused == nil && !sameSubject(p, a.GetRequester())):
			return replyErr("mismatch", "request %s belongs to another session", a.GetId()), nil
		case a.GetState() != Pending && a.GetState() != Approved:
			// Decided, expired or spent already: nothing is waiting.
			return &approvalsv1.ApprovalReply{Approval: a}, nil
		}
		return nil, []eventstore.Pending{eventstore.NewEvent("withdrawn", &approvalsv1.RequestWithdrawn{
			Id: a.GetId(), SessionId: a.GetSessionId(), Reason: req.GetReason(), At: timestamppb.New(s.cfg.Now()),
		})}
	})
}

func (s *Service) requestGrant(ctx context.Context, req *approvalsv1.RequestGrant) (*approvalsv1.ApprovalReply, error) {
	requester, refused := s.caller(ctx)
	if refused != nil {
		return refused, nil
	}
	d := time.Duration(req.GetDurationSeconds()) * time.Second
	// The request names the group that decides it and the target it is
	// for as applied by now, not as this service's view last heard: an
	// admin who moved grant_approvers has moved every later request.
	cctx, cancel := context.WithTimeout(ctx, settleWait)
	if err := s.ctl.CatchUp(cctx, s.cfg.Conn.JS); err != nil {
		s.cfg.Log.Warn().Err(err).Msg("the control view could not catch up; deciding on it as it is")
	}
	cancel()
	grantApprovers := s.ctl.Access().GetGrantApprovers()
	switch {
	case grantApprovers == "":
		return replyErr("not_configured", "no approver group decides grant requests (set access.grant_approvers in sluice.yaml)"), nil
	case req.GetTarget() == "" || req.GetRole() == "":
		return replyErr("bad_request", "target and role are required"), nil
	case d <= 0 || d > s.cfg.MaxGrant:
		return replyErr("bad_request", "the duration must be between 1s and %s", s.cfg.MaxGrant), nil
	case strings.TrimSpace(req.GetReason()) == "":
		return replyErr("bad_request", "give a reason"), nil
	case len(req.GetReason()) > MaxText:
		return replyErr("bad_request", "the reason is longer than %d bytes", MaxText), nil
	case len(req.GetRole()) > MaxName || len(req.GetTarget()) > MaxName:
		return replyErr("bad_request", "the target and the role are at most %d bytes", MaxName), nil
	case !roleName(req.GetRole()):
		return replyErr("bad_request", "a role is a name of letters, digits, '.', '_', ':' and '-', starting with a letter or a digit"), nil
	case s.pendingOf(requester) >= MaxPending:
		return replyErr("too_many", "%s already has %d pending requests; wait for a decision", requester.GetSubject(), MaxPending), nil
	}
	if _, ok := s.ctl.Target(req.GetTarget()); !ok {
		return replyErr("not_found", "there is no target %q", req.GetTarget()), nil
	}
	if len(req.GetSessionId()) > MaxName || !roleName(req.GetSessionId()) && req.GetSessionId() != "" {
		return replyErr("bad_request", "a session id is at most %d letters and digits (sluice sessions list shows them)", MaxName), nil
	}
	id := recording.NewSessionID()
	ev := &approvalsv1.GrantRequested{Id: id, Requester: requester, Target: req.GetTarget(), Role: req.GetRole(),
		DurationSeconds: req.GetDurationSeconds(), Reason: visible.Text(req.GetReason()), ApproverGroups: []string{grantApprovers}, Quorum: 1,
		RequestedAt: timestamppb.New(s.cfg.Now()), SessionId: req.GetSessionId()}
	pos, err := s.store.Append(ctx, "grant", id, eventstore.Position{}, eventstore.NewEvent("requested", ev))
	if err != nil {
		return nil, err
	}
	s.settle(ctx, pos)
	approvalsOpened.WithLabelValues(TypeGrant).Inc()
	a, _ := fold([]eventstore.Event{{Type: "sluice.approvals.v1.GrantRequested", Data: mustMarshal(ev), Version: 1}})
	return &approvalsv1.ApprovalReply{Approval: a}, nil
}

// mayApprove reports whether p belongs to one of the approver groups, as
// applied by the time it asks (controlstate.View.Recheck).
func (s *Service) mayApprove(ctx context.Context, p *commonv1.Principal, groups []string) bool {
	return s.ctl.Recheck(ctx, func() bool { return authz.IsApprover(s.ctl.Approvers(), p, groups) })
}

// mayRead reports whether p may see a: its requester, those who may decide
// it, and auditors.
func (s *Service) mayRead(p *commonv1.Principal, a *approvalsv1.Approval) bool {
	return sameSubject(a.GetRequester(), p) || authz.IsApprover(s.ctl.Approvers(), p, a.GetApproverGroups()) || s.guard.Has(p, authz.Auditor)
}

// mayReadNow is mayRead asked again once the view has caught up, for one
// approval asked for by id (a list filters with mayRead).
func (s *Service) mayReadNow(ctx context.Context, p *commonv1.Principal, a *approvalsv1.Approval) bool {
	return s.ctl.Recheck(ctx, func() bool { return s.mayRead(p, a) })
}

// sameSubject: the same subject at the same issuer.
func sameSubject(a, b *commonv1.Principal) bool {
	return a.GetSubject() == b.GetSubject() && a.GetIssuer() == b.GetIssuer()
}

// withRetry runs fn on the current state of id, retrying on a lost race.
// A request its events take out of pending counts as decided.
func (s *Service) withRetry(ctx context.Context, id string, fn func(agg string, st eventstore.Aggregate, a *approvalsv1.Approval) (*approvalsv1.ApprovalReply, []eventstore.Pending)) (*approvalsv1.ApprovalReply, error) {
	for attempt := 0; attempt < 5; attempt++ {
		agg, st, err := s.aggregateOf(ctx, id)
		if errors.Is(err, eventstore.ErrNotFound) {
			return replyErr("not_found", "there is no approval request %s", id), nil
		}
		if err != nil {
			return nil, err
		}
		a, err := fold(st.Events)
		if err != nil {
			return nil, err
		}
		reply, events := fn(agg, st, a)
		if len(events) == 0 {
			return reply, nil
		}
		prev, through := a, len(st.Events)+len(events)
		pos, err := s.store.Append(ctx, agg, id, st.Position, events...)
		if errors.Is(err, eventstore.ErrConflict) {
			continue
		} else if err != nil {
			return nil, err
		}
		s.settle(ctx, pos)
		st, err = s.store.Load(ctx, agg, id)
		if err != nil {
			return nil, err
		}
		if through <= len(st.Events) {
			s.countDecided(prev, st.Events[:through])
		}
		a, err = fold(st.Events)
		if err != nil {
			return nil, err
		}
		if reply == nil {
			reply = &approvalsv1.ApprovalReply{}
		}
		reply.Approval = a
		return reply, nil
	}
	return replyErr("conflict", "the request changed concurrently; try again"), nil
}

// settleWait bounds how long a change waits to be visible before its
// caller is answered.
const settleWait = 2 * time.Second

// settle waits until what was stored at pos is in the approvals bucket and
// in this service's view, so that the caller's next request finds it: a
// `sluice approvals show` of the request just held, a revocation that
// every worker's view is then one watch delivery from, a held statement
// sent again that supersedes the request the first one opened. A wait
// that runs out is logged, not returned: the change is stored.
func (s *Service) settle(ctx context.Context, pos eventstore.Position) {
	wctx, cancel := context.WithTimeout(ctx, settleWait)
	defer cancel()
	err := s.store.WaitApplied(wctx, projectionName, pos.Sequence)
	if err == nil {
		err = s.view.CatchUp(wctx, s.cfg.Conn.JS)
	}
	if err != nil && ctx.Err() == nil {
		s.cfg.Log.Warn().Err(err).Uint64("sequence", pos.Sequence).Msg("a stored change is not yet visible")
	}
}

// countDecided counts a request that was pending before events (its
// events up to the ones just stored) and is decided after them.
func (s *Service) countDecided(prev *approvalsv1.Approval, events []eventstore.Event) {
	if prev.GetState() != Pending {
		return
	}
	after, err := fold(events)
	if err != nil {
		return
	}
	switch outcome := after.GetState(); outcome {
	case Approved, Denied, Expired, Withdrawn:
		approvalsDecided.WithLabelValues(outcome).Inc()
		if created := prev.GetCreatedAt(); created != nil {
			approvalWait.WithLabelValues(outcome).Observe(max(s.cfg.Now().Sub(created.AsTime()).Seconds(), 0))
		}
	}
}

func (s *Service) expiredNow(a *approvalsv1.Approval) bool {
	return a.GetState() == Pending && a.GetExpiresAt() != nil && !s.cfg.Now().Before(a.GetExpiresAt().AsTime())
}

func (s *Service) decide(ctx context.Context, req *approvalsv1.Decide) (*approvalsv1.ApprovalReply, error) {
	p, refused := s.caller(ctx)
	if refused != nil {
		return refused, nil
	}
	return s.decideAs(ctx, p, req)
}

// slackDecide records a decision made in Slack. Only the Slack bot may
// publish this subject: it vouches for the Slack user's email, which counts
// as an approver only where an approver group lists it under subjects.
func (s *Service) slackDecide(ctx context.Context, req *approvalsv1.SlackDecide) (*approvalsv1.ApprovalReply, error) {
	// An email, and only that: it can match only approver entries that are
	// emails, never an OIDC subject or a client id, and carries no groups.
	email := strings.ToLower(strings.TrimSpace(req.GetEmail()))
	if !strings.Contains(email, "@") {
		return replyErr("bad_request", "the Slack user has no email"), nil
	}
	p := &commonv1.Principal{Subject: email, Email: email, ClientId: authz.SlackClient}
	return s.decideAs(ctx, p, &approvalsv1.Decide{Id: req.GetId(), Verdict: req.GetVerdict(), Reason: req.GetReason()})
}

func (s *Service) decideAs(ctx context.Context, p *commonv1.Principal, req *approvalsv1.Decide) (*approvalsv1.ApprovalReply, error) {
	if req.GetVerdict() != "approve" && req.GetVerdict() != "deny" {
		return replyErr("bad_request", "the verdict is approve or deny"), nil
	}
	if len(req.GetReason()) > MaxText {
		return replyErr("bad_request", "the reason is longer than %d bytes", MaxText), nil
	}
	req.Reason = visible.Text(req.GetReason()) // shown to the requester and the other approvers
	scope := time.Duration(req.GetGrantSeconds()) * time.Second
	if req.GetGrantRole() != "" {
		switch {
		case req.GetVerdict() != "approve":
			return replyErr("bad_request", "a grant goes with an approval, not a denial"), nil
		case len(req.GetGrantRole()) > MaxName || !roleName(req.GetGrantRole()):
			return replyErr("bad_request", "the role is a name of at most %d bytes: letters, digits, '.', '_', ':' and '-'", MaxName), nil
		case scope <= 0 || scope > s.cfg.MaxGrant:
			return replyErr("bad_request", "the grant's duration must be between 1s and %s", s.cfg.MaxGrant), nil
		}
	}
	var grantID string
	reply, err := s.withRetry(ctx, req.GetId(), func(agg string, st eventstore.Aggregate, a *approvalsv1.Approval) (*approvalsv1.ApprovalReply, []eventstore.Pending) {
		now := s.cfg.Now()
		// Who may decide comes first: a request's state, expiry and
		// withdrawal reason are for those who may read it.
		switch {
		case samePerson(p, a.GetRequester()):
			return replyErr("self_approval", "nobody approves their own request"), nil
		case !s.mayApprove(ctx, p, a.GetApproverGroups()):
			return replyErr("forbidden", "you are not in an approver group of this request"), nil
		case !comparable(p, a.GetRequester()):
			return replyErr("not_comparable", "the requester (%s) has no email to be told apart from a Slack user by; decide with sluice approve or in the console",
				a.GetRequester().GetSubject()), nil
		case s.expiredNow(a):
			return replyErr("expired", "request %s expired at %s", a.GetId(), a.GetExpiresAt().AsTime().UTC().Format(time.RFC3339)),
				[]eventstore.Pending{expiredEvent(agg, a.GetId(), now)}
		case a.GetState() == Withdrawn:
			return replyErr("not_pending", "request %s was withdrawn (%s); nothing will run", a.GetId(), a.GetDecisionReason()), nil
		case a.GetState() != Pending:
			return replyErr("not_pending", "request %s is %s", a.GetId(), a.GetState()), nil
		}
		if req.GetVerdict() == "approve" && p.GetClientId() == authz.SlackClient && agg != "grant" && !approvalstate.FitsSlackCard(a) {
			// A Slack card shows part of it: approved where it is read whole.
			return replyErr("too_long", "request %s is too long to approve from Slack, whose card shows %d characters; read it whole and approve it in the console or with sluice approvals show", a.GetId(), approvalstate.SlackCardRunes), nil
		}
		if req.GetVerdict() == "deny" {
			if agg == "grant" {
				return nil, []eventstore.Pending{eventstore.NewEvent("denied", &approvalsv1.GrantDenied{Id: a.GetId(), Approver: p, Reason: req.GetReason(), At: timestamppb.New(now)})}
			}
			return nil, []eventstore.Pending{eventstore.NewEvent("denied", &approvalsv1.RequestDenied{Id: a.GetId(), Approver: p, Reason: req.GetReason(), At: timestamppb.New(now)})}
		}
		if slices.ContainsFunc(voters(st.Events), func(v *commonv1.Principal) bool { return samePerson(v, p) }) {
			return replyErr("already_voted", "you already approved request %s", a.GetId()), nil
		}
		if slices.ContainsFunc(voters(st.Events), func(v *commonv1.Principal) bool { return !comparable(v, p) }) {
			return replyErr("not_comparable", "an earlier approval of %s names someone who cannot be told apart from you (no email to compare); decide with sluice approve or in the console", a.GetId()), nil
		}
		granted := uint32(len(a.GetApprovedBy())+1) >= a.GetQuorum()
		if req.GetGrantRole() != "" {
			// The scope is granted by the vote that completes the quorum,
			// for the held command's requester, target and session only.
			switch {
			case agg != "request":
				return replyErr("bad_request", "--grant goes with the approval of a held command; %s is a grant request", a.GetId()), nil
			case !granted:
				return replyErr("bad_request", "request %s needs %d approvals; only the vote that completes them can add a grant", a.GetId(), a.GetQuorum()), nil
			case a.GetSessionId() == "":
				return replyErr("bad_request", "request %s has no session to scope a grant to", a.GetId()), nil
			case s.ctl.Access().GetGrantApprovers() == "":
				return replyErr("not_configured", "no approver group decides grants (set access.grant_approvers in sluice.yaml)"), nil
			case !s.mayApprove(ctx, p, []string{s.ctl.Access().GetGrantApprovers()}):
				// Approving one held command is not granting a role: that
				// is for those who decide grant requests.
				return replyErr("forbidden", "only the grant approvers (%s) add a grant to an approval", s.ctl.Access().GetGrantApprovers()), nil
			}
			// The grant is stored before the approval: whoever sees the
			// approval (the waiting worker, then the policy service) has
			// seen the grant, so the session's next change finds it.
			if grantID == "" {
				id := recording.NewSessionID()
				if err := s.scopeGrant(ctx, p, a, id, req.GetGrantRole(), scope, req.GetReason()); err != nil {
					return replyErr("unavailable", "the grant was not recorded (%v); nothing was approved", err), nil
				}
				grantID = id
			}
			return nil, []eventstore.Pending{eventstore.NewEvent("approved", &approvalsv1.RequestApproved{Id: a.GetId(), Approver: p, Reason: req.GetReason(), Granted: granted, At: timestamppb.New(now), GrantId: grantID})}
		}
		if agg == "grant" {
			ev := &approvalsv1.GrantApproved{Id: a.GetId(), Approver: p, Reason: req.GetReason(), Granted: granted, At: timestamppb.New(now)}
			if granted {
				ev.StartsAt, ev.EndsAt = timestamppb.New(now), timestamppb.New(now.Add(time.Duration(a.GetDurationSeconds())*time.Second))
			}
			return nil, []eventstore.Pending{eventstore.NewEvent("approved", ev)}
		}
		return nil, []eventstore.Pending{eventstore.NewEvent("approved", &approvalsv1.RequestApproved{Id: a.GetId(), Approver: p, Reason: req.GetReason(), Granted: granted, At: timestamppb.New(now)})}
	})
	if grantID != "" && (err != nil || reply.GetError() != nil) {
		// The approval it came with was not recorded: neither is the scope.
		ev := &approvalsv1.GrantRevoked{Id: grantID, By: p, Reason: "the approval it came with was not recorded", At: timestamppb.New(s.cfg.Now())}
		st, rerr := s.store.Load(ctx, "grant", grantID)
		if rerr == nil {
			_, rerr = s.store.Append(ctx, "grant", grantID, st.Position, eventstore.NewEvent("revoked", ev))
		}
		if rerr != nil {
			s.cfg.Log.Error().Err(rerr).Str("grant", grantID).Msg("a grant whose approval failed was not revoked")
		}
	}
	return reply, err
}

// scopeGrant records the grant an approver attaches to the approval of a
// held command: the command's requester gets role on its target, in its
// session, from now for d. It is requested and approved at once, by the
// approver, and names the request it came with.
func (s *Service) scopeGrant(ctx context.Context, approver *commonv1.Principal, a *approvalsv1.Approval, id, role string, d time.Duration, reason string) error {
	now := s.cfg.Now()
	asked := &approvalsv1.GrantRequested{Id: id, Requester: a.GetRequester(), Target: a.GetTarget(), Role: role,
		DurationSeconds: int64(d / time.Second), Reason: fmt.Sprintf("with the approval of %s: %s", a.GetId(), reason),
		ApproverGroups: a.GetApproverGroups(), Quorum: 1, RequestedAt: timestamppb.New(now), SessionId: a.GetSessionId(), RequestId: a.GetId()}
	approved := &approvalsv1.GrantApproved{Id: id, Approver: approver, Reason: reason, Granted: true,
		StartsAt: timestamppb.New(now), EndsAt: timestamppb.New(now.Add(d)), At: timestamppb.New(now)}
	_, err := s.store.Append(ctx, "grant", id, eventstore.Position{}, eventstore.NewEvent("requested", asked), eventstore.NewEvent("approved", approved))
	return err
}

func expiredEvent(agg, id string, now time.Time) eventstore.Pending {
	return eventstore.NewEvent("expired", &approvalsv1.RequestExpired{Id: id, At: timestamppb.New(now)})
}

func (s *Service) consume(ctx context.Context, req *approvalsv1.Consume) (*approvalsv1.ApprovalReply, error) {
	p, refused := s.caller(ctx)
	if refused != nil {
		return refused, nil
	}
	return s.withRetry(ctx, req.GetId(), func(agg string, st eventstore.Aggregate, a *approvalsv1.Approval) (*approvalsv1.ApprovalReply, []eventstore.Pending) {
		switch {
		case agg != "request":
			return replyErr("bad_request", "%s is a grant, not a command approval", a.GetId()), nil
		case p.GetSubject() != a.GetRequester().GetSubject() || p.GetIssuer() != a.GetRequester().GetIssuer():
			// Only the requester itself (its subject at its issuer), who
			// learns nothing more of another's request.
			return replyErr("mismatch", "approval %s was given to another principal", a.GetId()), nil
		case req.GetSessionId() != a.GetSessionId():
			return replyErr("mismatch", "approval %s was given for another session", a.GetId()), nil
		case req.GetCommandHash() != a.GetCommandHash():
			return replyErr("mismatch", "approval %s was given for another command or other parameters", a.GetId()), nil
		}
		// The requester's refusals carry the request as it stands (its
		// own, which it may read): a worker that no longer holds it in its
		// view (retired to the history) learns the outcome here.
		var refusal *approvalsv1.ApprovalReply
		switch {
		case a.GetState() == Consumed:
			refusal = replyErr("consumed", "approval %s was already used; it is single-use", a.GetId())
		case a.GetState() != Approved:
			refusal = replyErr("not_approved", "request %s is %s", a.GetId(), a.GetState())
		case !s.cfg.Now().Before(a.GetExpiresAt().AsTime()):
			refusal = replyErr("expired", "approval %s expired", a.GetId())
		default:
			return nil, []eventstore.Pending{eventstore.NewEvent("consumed", &approvalsv1.RequestConsumed{Id: a.GetId(), SessionId: req.GetSessionId(), At: timestamppb.New(s.cfg.Now())})}
		}
		refusal.Approval = a
		return refusal, nil
	})
}

func (s *Service) revoke(ctx context.Context, req *approvalsv1.Revoke) (*approvalsv1.ApprovalReply, error) {
	by, refused := s.caller(ctx)
	if refused != nil {
		return refused, nil
	}
	if len(req.GetReason()) > MaxText {
		return replyErr("bad_request", "the reason is longer than %d bytes", MaxText), nil
	}
	return s.withRetry(ctx, req.GetId(), func(agg string, st eventstore.Aggregate, a *approvalsv1.Approval) (*approvalsv1.ApprovalReply, []eventstore.Pending) {
		switch {
		case agg != "grant":
			return replyErr("bad_request", "%s is not a grant", a.GetId()), nil
		case a.GetState() != Approved:
			return replyErr("not_active", "grant %s is %s", a.GetId(), a.GetState()), nil
		case !sameSubject(by, a.GetRequester()) && !s.mayApprove(ctx, by, a.GetApproverGroups()):
			return replyErr("forbidden", "only the grantee or an approver may revoke a grant"), nil
		}
		return nil, []eventstore.Pending{eventstore.NewEvent("revoked", &approvalsv1.GrantRevoked{Id: a.GetId(), By: by, Reason: req.GetReason(), At: timestamppb.New(s.cfg.Now())})}
	})
}

func (s *Service) get(ctx context.Context, req *approvalsv1.Get) (*approvalsv1.ApprovalReply, error) {
	p, refused := s.caller(ctx)
	if refused != nil {
		return refused, nil
	}
	a, ok := s.view.Get(req.GetId())
	if !ok {
		// The view lags the bucket: an approval opened or changed a moment
		// ago may not be in it yet. The bucket itself, then the history
		// (a retired approval goes into the history before it leaves the
		// bucket, so it is always in one of them, read in this order).
		a, ok = s.stored(ctx, bus.BucketApprovals, req.GetId())
	}
	if !ok {
		a, ok = s.retired(ctx, req.GetId())
	}
	// Someone who may not see a request learns nothing, not even that it
	// exists.
	if !ok || !s.mayReadNow(ctx, p, a) {
		return replyErr("not_found", "there is no approval request %s", req.GetId()), nil
	}
	return &approvalsv1.ApprovalReply{Approval: a}, nil
}

func (s *Service) list(ctx context.Context, req *approvalsv1.ListRequest) (*approvalsv1.ListReply, error) {
	caller, e := s.guard.Caller(ctx)
	if e != nil {
		return &approvalsv1.ListReply{Error: e}, nil
	}
	if !s.guard.Has(caller, authz.Auditor) && !authz.IsApprover(s.ctl.Approvers(), caller, nil) {
		// Someone who sees only their own requests here may have been
		// made an approver or an auditor a moment ago.
		cctx, cancel := context.WithTimeout(ctx, settleWait)
		_ = s.ctl.CatchUp(cctx, s.cfg.Conn.JS)
		cancel()
	}
	state := req.GetState()
	if state == "" {
		state = Pending
	}
	keep := func(a *approvalsv1.Approval) bool {
		if state != "all" && a.GetState() != state {
			return false
		}
		// Approvers see what they may decide; everyone sees their own;
		// auditors see everything.
		return s.mayRead(caller, a)
	}
	reply := &approvalsv1.ListReply{}
	if req.GetBefore() == "" {
		reply.Approvals = s.view.List(keep)
	}
	if state == Pending {
		return reply, nil // pending requests never leave the hot view
	}
	limit := int(req.GetLimit())
	if limit <= 0 || limit > 1000 {
		limit = 100
	}
	older, next, err := s.history(ctx, req.GetBefore(), limit, keep)
	if err != nil {
		return &approvalsv1.ListReply{Error: &commonv1.Error{Code: "unavailable", Message: "the approvals history cannot be read"}}, nil
	}
	reply.Approvals, reply.Next = append(reply.Approvals, older...), next
	return reply, nil
}

// history pages back through the retired approvals, newest retired first:
// up to limit that keep accepts, from before (a stream sequence; "" for
// the newest). It reads the history bucket's stream message by message,
// so a page costs what it holds (and what keep refuses), not the history;
// next is "" at its start.
func (s *Service) history(ctx context.Context, before string, limit int, keep func(*approvalsv1.Approval) bool) (out []*approvalsv1.Approval, next string, err error) {
	stream, err := s.cfg.Conn.JS.Stream(ctx, bus.KVStream(bus.BucketApprovalsHistory))
	if err != nil {
		return nil, "", err
	}
	var seq uint64
	if before != "" {
		if seq, err = strconv.ParseUint(before, 10, 64); err != nil {
			return nil, "", fmt.Errorf("bad cursor %q", before)
		}
		seq--
	} else {
		info, err := stream.Info(ctx)
		if err != nil {
			return nil, "", err
		}
		seq = info.State.LastSeq
	}
	// A page looks at no more than this many retired approvals, however
	// few keep accepts.
	budget := limit * 20
	for ; seq > 0 && len(out) < limit && budget > 0; seq-- {
		m, err := stream.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue // replaced by a later put of the same key
		}
		if err != nil {
			return nil, "", err
		}
		budget--
		if op := m.Header.Get("KV-Operation"); op != "" {
			continue // a deletion
		}
		var a approvalsv1.Approval
		if proto.Unmarshal(m.Data, &a) != nil || !keep(&a) {
			continue
		}
		out = append(out, &a)
	}
	if seq > 0 {
		next = strconv.FormatUint(seq+1, 10)
	}
	return out, next, nil
}

// retired looks an approval up in the history.
func (s *Service) retired(ctx context.Context, id string) (*approvalsv1.Approval, bool) {
	return s.stored(ctx, bus.BucketApprovalsHistory, id)
}

// stored reads an approval from a bucket.
func (s *Service) stored(ctx context.Context, bucket, id string) (*approvalsv1.Approval, bool) {
	kv, err := s.cfg.Conn.JS.KeyValue(ctx, bucket)
	if err != nil {
		return nil, false
	}
	e, err := kv.Get(ctx, id)
	if err != nil {
		return nil, false
	}
	var a approvalsv1.Approval
	if proto.Unmarshal(e.Value(), &a) != nil {
		return nil, false
	}
	return &a, true
}

// retirable says since when an approval can change no more (zero: it
// still can): decided, expired, withdrawn, consumed or revoked since its
// last event; a grant in force until its end; an approved command until
// it expires unconsumed.
func retirable(a *approvalsv1.Approval) time.Time {
	switch a.GetState() {
	case Denied, Expired, Withdrawn, Consumed, Revoked:
		if t := a.GetUpdatedAt(); t != nil {
			return t.AsTime()
		}
		return a.GetCreatedAt().AsTime()
	case Approved:
		end := a.GetExpiresAt() // a command: unconsumed past its expiry
		if a.GetType() == TypeGrant {
			end = a.GetEndsAt()
		}
		if end == nil {
			return time.Time{}
		}
		return end.AsTime()
	}
	return time.Time{}
}

// retire moves approvals that have been unable to change for the hot
// retention out of the hot view: a retired event each, which the
// projection turns into a move to the history.
func (s *Service) retire(ctx context.Context) {
	now := s.cfg.Now()
	old := s.view.List(func(a *approvalsv1.Approval) bool {
		since := retirable(a)
		return !a.GetRetired() && !since.IsZero() && now.Sub(since) >= s.cfg.HotRetention
	})
	for _, a := range old {
		_, err := s.withRetry(ctx, a.GetId(), func(agg string, st eventstore.Aggregate, cur *approvalsv1.Approval) (*approvalsv1.ApprovalReply, []eventstore.Pending) {
			since := retirable(cur)
			if cur.GetRetired() || since.IsZero() || now.Sub(since) < s.cfg.HotRetention {
				return nil, nil
			}
			return nil, []eventstore.Pending{{ID: agg + "-" + cur.GetId() + "-retired", Name: "retired", Time: now,
				Msg: &approvalsv1.ApprovalRetired{RetiredAt: timestamppb.New(now)}}}
		})
		if err != nil && ctx.Err() == nil {
			s.cfg.Log.Warn().Err(err).Str("approval", a.GetId()).Msg("retiring to the history failed; will retry")
		}
	}
}

// expire turns pending requests past their expiry into expired ones. Every
// replica runs it; optimistic concurrency makes the transition happen once.
// Reading the view, it sets the pending and active grants gauges too.
func (s *Service) expire(ctx context.Context) error {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	// Retire every 10 s, or more often under a short retention (tests).
	every := max(min(int(s.cfg.HotRetention/time.Second), 20), 1)
	for tick := 0; ; tick++ {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if tick%every == 0 {
			s.retire(ctx)
		}
		pending, active, now := 0, 0, s.cfg.Now()
		expired := s.view.List(func(a *approvalsv1.Approval) bool {
			switch {
			case a.GetState() == Pending:
				pending++
			case a.GetType() == TypeGrant && a.GetState() == Approved &&
				!now.Before(a.GetStartsAt().AsTime()) && now.Before(a.GetEndsAt().AsTime()):
				active++
			}
			return s.expiredNow(a)
		})
		approvalsPending.Set(float64(pending))
		grantsActive.Set(float64(active))
		for _, a := range expired {
			_, err := s.withRetry(ctx, a.GetId(), func(agg string, st eventstore.Aggregate, cur *approvalsv1.Approval) (*approvalsv1.ApprovalReply, []eventstore.Pending) {
				if !s.expiredNow(cur) {
					return nil, nil
				}
				return nil, []eventstore.Pending{expiredEvent(agg, cur.GetId(), s.cfg.Now())}
			})
			if err != nil && ctx.Err() == nil {
				s.cfg.Log.Warn().Err(err).Str("approval", a.GetId()).Msg("expiry failed; will retry")
			}
		}
	}
}

// project folds the aggregate and stores its state in the bucket.
func (s *Service) project(ctx context.Context, e eventstore.Event) error {
	st, err := s.store.Load(ctx, e.Aggregate, e.AggregateID)
	if err != nil {
		return err
	}
	a, err := fold(st.Events)
	if err != nil {
		return err
	}
	data, err := proto.Marshal(a)
	if err != nil {
		return err
	}
	kv, err := s.cfg.Conn.JS.KeyValue(ctx, bus.BucketApprovals)
	if err != nil {
		return err
	}
	if !a.GetRetired() {
		_, err = kv.Put(ctx, a.GetId(), data)
		return err
	}
	// Retired: into the history first, then out of the hot view, so that
	// it is always in one of them.
	history, err := s.cfg.Conn.JS.KeyValue(ctx, bus.BucketApprovalsHistory)
	if err != nil {
		return err
	}
	if _, err := history.Put(ctx, a.GetId(), data); err != nil {
		return err
	}
	if err := kv.Purge(ctx, a.GetId()); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return err
	}
	return nil
}

func mustMarshal(m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b
}
