package pgworker

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/gateway"
	commonv1 "sluice.dev/sluice/proto/sluice/common/v1"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
)

// Renewal: a session lives as long as its access token. A client that
// wants it to last longer presents a fresh token of the same principal
// (POST /api/v1/sessions/{id}/renew; `sluice connect` does it on its own),
// the API passes it on over bus.SubjectPGRenew, and the replica holding the
// session verifies it through the identity service as at the start. Only a
// token naming exactly the principal the session started with (issuer,
// subject, groups and every attribute a policy sees) replaces the session's
// token and moves its end; anything else is refused and recorded, and the
// session keeps the token it had. Nothing a policy decided changes: the
// principal is the same.

// ParamSessionID is the ParameterStatus that tells a client its session id
// (drivers keep parameters they do not know, and psql ignores them): the id
// to renew, and the one the audit log knows the session by.
const ParamSessionID = "sluice.session_id"

// sessionAuth is the part of a session a renewal changes.
type sessionAuth struct {
	// renewing lets one renewal of a session run at a time.
	renewing sync.Mutex

	mu sync.Mutex
	// token is the access token in force, kept in memory only: it is
	// forwarded to the approvals service (which verifies the requester
	// itself) and verified again when the identity configuration changes.
	// Never logged or recorded.
	token string
	// expires is when the session ends (zero: its token does not expire);
	// timer ends it then. The timer is armed only between started (run
	// relays: the connections a shutdown closes are in place) and stopped
	// (the session has ended).
	expires          time.Time
	timer            *time.Timer
	started, stopped bool
}

// init sets the token the session authenticated with, before anyone else
// sees the session.
func (a *sessionAuth) init(token string, expires *timestamppb.Timestamp) {
	a.token = token
	if expires != nil {
		a.expires = expires.AsTime()
	}
}

// callerToken is the session's token in force, for requests the services
// authorize as the session's principal.
func (s *session) callerToken() string {
	s.auth.mu.Lock()
	defer s.auth.mu.Unlock()
	return s.auth.token
}

// startExpiry arms the end of the session at its token's expiry (a renewal
// that came before the session ran has moved it already).
func (s *session) startExpiry() {
	s.auth.mu.Lock()
	defer s.auth.mu.Unlock()
	s.auth.started = true
	s.armLocked()
}

// stopExpiry disarms it for good once the session has ended.
func (s *session) stopExpiry() {
	s.auth.mu.Lock()
	defer s.auth.mu.Unlock()
	s.auth.stopped = true
	if s.auth.timer != nil {
		s.auth.timer.Stop()
	}
}

// armLocked (under auth.mu) sets the timer that ends the session when its
// token expires, in place of any earlier one.
func (s *session) armLocked() {
	s.auth.timer = nil
	if !s.auth.started || s.auth.stopped || s.auth.expires.IsZero() {
		return
	}
	at := s.auth.expires
	s.auth.timer = time.AfterFunc(time.Until(at), func() {
		s.shutdown("the access token expired", fatal(stateAdminShutdown,
			fmt.Sprintf("sluice: the access token expired at %s; the session is closed", at.UTC().Format(time.RFC3339)),
			"reconnect with a fresh token; sluice connect keeps sessions open by renewing them"))
	})
}

// renew replaces the session's token with token if it names the session's
// principal, and returns when the session now ends. Every refusal is
// recorded in the session; so is the renewal, before it takes effect.
func (s *session) renew(ctx context.Context, token string) (time.Time, *commonv1.Error) {
	s.auth.renewing.Lock()
	defer s.auth.renewing.Unlock()
	refuse := func(code, reason string, p *commonv1.Principal) (time.Time, *commonv1.Error) {
		_, _ = s.rec.Emit(&sessionv1.Event{Body: &sessionv1.Event_RenewalRefused{RenewalRefused: &sessionv1.RenewalRefused{
			Code: code, Reason: reason, Subject: p.GetSubject(), Issuer: p.GetIssuer(),
		}}})
		s.w.cfg.Log.Info().Str("session", s.id).Str("code", code).Msg("session renewal refused")
		return time.Time{}, &commonv1.Error{Code: code, Message: reason}
	}
	ended := &commonv1.Error{Code: "session_ended", Message: "the session has ended"}
	if r, _ := s.endReason.Load().(string); r != "" {
		return time.Time{}, ended
	}
	if token == "" {
		return refuse("unauthenticated", "the renewal carries no token", nil)
	}
	p, e := s.w.k.Authn.Verify(ctx, token)
	if e != nil {
		return refuse(e.GetCode(), "token refused: "+e.GetMessage(), nil)
	}
	if p.GetIssuer() != s.principal.GetIssuer() || p.GetSubject() != s.principal.GetSubject() {
		// Who owns the session is not told to another principal.
		return refuse("forbidden", "the token names another principal than the one that started the session; only its own principal renews a session", p)
	}
	if gateway.PrincipalKey(p) != s.pkey {
		// Policies were applied, and statements prepared, for the
		// principal as it was: a session never changes who it is.
		return refuse("principal_changed", "the token names the session's principal with other groups or attributes than it started with; the session keeps its token until that expires: reconnect to start a session as the principal you are now", p)
	}
	var next time.Time
	if p.GetExpiresAt() != nil {
		next = p.GetExpiresAt().AsTime()
	}

	s.auth.mu.Lock()
	prev := s.auth.expires
	if !prev.IsZero() && !next.IsZero() && next.Before(prev) {
		s.auth.mu.Unlock()
		return refuse("not_later", fmt.Sprintf("the token expires at %s, before the session's token does (%s); renew with a fresher one",
			next.UTC().Format(time.RFC3339), prev.UTC().Format(time.RFC3339)), p)
	}
	// The old expiry no longer ends the session while the renewal is being
	// recorded; whatever happens next arms one again. A timer that already
	// fired is ending the session.
	if s.auth.stopped || (s.auth.timer != nil && !s.auth.timer.Stop()) {
		s.auth.mu.Unlock()
		return time.Time{}, ended
	}
	s.auth.mu.Unlock()

	ev := &sessionv1.TokenRenewed{}
	if !next.IsZero() {
		ev.ExpiresAt = timestamppb.New(next)
	}
	if !prev.IsZero() {
		ev.PreviousExpiresAt = timestamppb.New(prev)
	}
	err := s.rec.Record(ctx, &sessionv1.Event{Body: &sessionv1.Event_TokenRenewed{TokenRenewed: ev}})

	s.auth.mu.Lock()
	defer s.auth.mu.Unlock()
	if err != nil {
		s.armLocked() // the old expiry, at once if it has passed meanwhile
		return time.Time{}, &commonv1.Error{Code: "unavailable", Message: "the renewal could not be recorded; the session keeps its token"}
	}
	s.auth.token, s.auth.expires = token, next
	s.armLocked()
	s.w.cfg.Log.Info().Str("session", s.id).Time("expires", next).Msg("session token renewed")
	return next, nil
}

// serveRenewals answers renewals of the sessions this replica holds; a
// renewal of another replica's session is left for that one to answer.
func (w *Worker) serveRenewals(ctx context.Context) (*nats.Subscription, error) {
	// A renewal waits on the identity service and the audit stream: a few
	// at a time, never one goroutine per message of a flood.
	sem := make(chan struct{}, 16)
	return w.cfg.Conn.NC.Subscribe(bus.SubjectPGRenew, func(m *nats.Msg) {
		if !strings.HasPrefix(m.Reply, "_INBOX.") {
			return
		}
		var req sessionv1.RenewRequest
		if err := proto.Unmarshal(m.Data, &req); err != nil {
			return
		}
		s := w.sessionByID(req.GetSessionId())
		if s == nil {
			return
		}
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			defer func() {
				if r := recover(); r != nil {
					w.cfg.Log.Error().Interface("panic", r).Str("session", s.id).Msg("session renewal failed")
				}
			}()
			// No deadline of its own: the verification has one, and a
			// record that waits out the audit stream's timeout ends the
			// session, as it would for a statement.
			exp, e := s.renew(ctx, m.Header.Get(bus.HeaderCaller))
			reply := &sessionv1.RenewReply{Error: e}
			if e == nil && !exp.IsZero() {
				reply.ExpiresAt = timestamppb.New(exp)
			}
			data, err := proto.Marshal(reply)
			if err == nil {
				_ = m.Respond(data)
			}
		}()
	})
}

// sessionByID finds an open session of this replica. Renewals are rare (one
// per session per token lifetime): a scan costs less than a second index
// kept on every session start and end.
func (w *Worker) sessionByID(id string) *session {
	if id == "" {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, s := range w.sessions {
		if s.id == id {
			return s
		}
	}
	return nil
}
