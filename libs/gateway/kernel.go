package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"sluice.dev/sluice/libs/approvalstate"
	"sluice.dev/sluice/libs/authn"
	"sluice.dev/sluice/libs/authz"
	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/controlstate"
	"sluice.dev/sluice/libs/recording"
	"sluice.dev/sluice/libs/secrets"
	approvalsv1 "sluice.dev/sluice/proto/sluice/approvals/v1"
	commonv1 "sluice.dev/sluice/proto/sluice/common/v1"
	policyv1 "sluice.dev/sluice/proto/sluice/policy/v1"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
)

// Config configures a kernel. Zero values take the documented defaults.
type Config struct {
	// Conn is the worker's NATS connection (its own identity).
	Conn *bus.Conn
	Log  zerolog.Logger
	// Protocol names the worker's protocol in records: postgres, ssh, ...
	Protocol string
	// Name identifies the worker replica in records.
	Name string
	// MaxSessions bounds concurrent sessions (default 10000).
	MaxSessions int
	// MaxStarting bounds connections still negotiating or authenticating
	// (default 512): beyond it a new connection is closed at once, so
	// slow anonymous handshakes cannot take every session slot.
	MaxStarting int
	// PolicyTimeout bounds one decision round trip (default 2s).
	PolicyTimeout time.Duration
	// HoldTimeout bounds how long a command held for approval waits
	// (default 5m).
	HoldTimeout time.Duration
	// RecordTimeout bounds how long a command waits for its record to be
	// durable (default: the recorder's).
	RecordTimeout time.Duration
	// FenceAfter is how long the worker may go without writing its
	// presence before it ends its sessions and records nothing more
	// (default bus.WorkerFence; tests shorten it).
	FenceAfter time.Duration
}

func (c *Config) defaults() {
	if c.MaxSessions <= 0 {
		c.MaxSessions = 10000
	}
	if c.MaxStarting <= 0 {
		c.MaxStarting = 512
	}
	if c.PolicyTimeout <= 0 {
		c.PolicyTimeout = 2 * time.Second
	}
	if c.HoldTimeout <= 0 {
		c.HoldTimeout = 5 * time.Minute
	}
	if c.FenceAfter <= 0 {
		c.FenceAfter = bus.WorkerFence
	}
}

// EndCode says why the kernel ends a session; the protocol words it.
type EndCode int

// Why sessions end.
const (
	// EndShutdown: the worker is shutting down.
	EndShutdown EndCode = iota
	// EndRefused: the identity configuration no longer accepts the
	// session's token.
	EndRefused
	// EndChanged: the configuration now names someone else (other groups).
	EndChanged
	// EndKilled: an administrator ended the session (the reason says who
	// and why).
	EndKilled
	// EndFenced: the worker could not write its presence for
	// bus.WorkerFence; the reason says so.
	EndFenced
)

// Session is what the kernel needs of a protocol's session.
type Session interface {
	ID() string
	// CallerToken is the access token the session runs under (the
	// services verify it on every call the worker makes for the session).
	CallerToken() string
	PrincipalKey() [16]byte
	// End closes the session, telling the client why in its protocol.
	End(code EndCode, reason string)
}

// Kernel is the protocol-neutral part of a worker.
type Kernel struct {
	cfg       Config
	View      *controlstate.View
	Approvals *approvalstate.View
	Authn     *authn.Client
	Rec       *recording.Recorder
	Decisions *DecisionCache

	guard    *authz.Guard
	maskers  maskers
	slots    chan struct{}
	starting chan struct{}
	active   atomic.Int64
	metrics  kernelMetrics

	mu       sync.Mutex
	sessions map[string]Session

	// started is when this run of the worker started (its presence says
	// it: sessions started before it are another run's).
	started time.Time
	// lease is, once the presence is announced, until when (time since
	// started) this worker may record and serve without writing its
	// presence again (0: no lease in force); fenced says it lapsed.
	lease atomic.Int64
	// leaseWall is the same deadline on the wall clock (Unix ns).
	leaseWall atomic.Int64
	fenceMu   sync.Mutex
	fenced    atomic.Bool
}

// New returns a kernel.
func New(cfg Config) *Kernel {
	cfg.defaults()
	rec := recording.New(cfg.Conn.JS)
	if cfg.RecordTimeout > 0 {
		rec.Timeout = cfg.RecordTimeout
	}
	view := controlstate.NewView()
	k := &Kernel{
		cfg:       cfg,
		guard:     authz.New(cfg.Conn.NC, view),
		View:      view,
		Approvals: approvalstate.NewView(),
		Authn:     authn.New(cfg.Conn.NC),
		Rec:       rec,
		Decisions: NewDecisionCache(100000),
		slots:     make(chan struct{}, cfg.MaxSessions),
		starting:  make(chan struct{}, cfg.MaxStarting),
		sessions:  map[string]Session{},
		metrics:   newKernelMetrics(cfg.Protocol),
		started:   time.Now(),
	}
	rec.Fenced = k.fencedErr
	return k
}

// Config is the kernel's configuration, defaults applied.
func (k *Kernel) Config() Config { return k.cfg }

// Active is the number of open sessions.
func (k *Kernel) Active() int64 { return k.active.Load() }

// Follow follows the control-plane views and returns once both are loaded
// (or ctx ends, or a view fails before its first load). Decisions are
// forgotten when the policy or a grant changes; open sessions are verified
// again when the identity configuration changes. The views keep following
// until ctx ends.
func (k *Kernel) Follow(ctx context.Context) error {
	k.View.OnChange(func(key string) {
		switch key {
		case controlstate.KeyPolicy:
			k.Decisions.SetRevision(k.View.Policy().GetRevision())
		case controlstate.KeyIdentityProvider:
			// Verifications made under the old configuration are
			// forgotten, and every open session proves itself again.
			if k.Authn.SetIdentityDigest(k.View.IdentityDigest()) {
				go k.reverify(ctx)
			}
		}
	})
	errc := make(chan error, 2)
	go func() { errc <- k.View.Follow(ctx, k.cfg.Conn.JS) }()
	// A grant that starts or ends changes decisions: forget cached ones.
	k.Approvals.OnChange(func(a *approvalsv1.Approval) {
		if a.GetType() == "grant" {
			k.Decisions.Flush()
		}
	})
	// A stalled view may have missed a revoked grant: forget decisions.
	k.Approvals.OnStale(func(stale bool) {
		k.Decisions.Flush()
		if stale {
			k.cfg.Log.Warn().Msg("the approvals view fell behind; no grants count until it has caught up")
		} else {
			k.cfg.Log.Info().Msg("the approvals view is current again")
		}
	})
	go func() { errc <- k.Approvals.Follow(ctx, k.cfg.Conn.JS) }()
	for _, ready := range []<-chan struct{}{k.View.Ready(), k.Approvals.Ready()} {
		select {
		case <-ready:
		case err := <-errc:
			if err == nil {
				return ctx.Err()
			}
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// Start readies the kernel for a worker: masking tokens keyed from the
// master key, the control-plane views followed (it returns once they are
// loaded), kills served and the worker's presence announced. stop ends the
// kill subscription and withdraws the presence: call it once the sessions
// have ended. When ctx ends
// first, it returns ctx's error.
func (k *Kernel) Start(ctx context.Context, master *secrets.Key) (stop func(), err error) {
	k.SetMaskingKey(master.Derive("masking tokens"))
	if err := k.Follow(ctx); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	kills, err := k.ServeKills(ctx)
	if err != nil {
		return nil, err
	}
	withdraw := k.announce(ctx)
	return func() { _ = kills.Unsubscribe(); withdraw() }, nil
}

// Serve accepts connections on ln until ctx ends and runs handle for each
// in its own goroutine. A connection beyond MaxSessions is still handled,
// with full set: the protocol refuses it with its own error. A panic in a
// handler closes that connection only. When ctx ends, every registered
// session is ended and Serve returns once all handlers have. Serve closes
// ln when it returns. Running out of file descriptors (a connection flood)
// slows accepting down; it never stops it.
func (k *Kernel) Serve(ctx context.Context, ln net.Listener, handle func(ctx context.Context, conn net.Conn, full bool)) error {
	go func() {
		<-ctx.Done()
		ln.Close()
		k.each(func(s Session) { s.End(EndShutdown, "the gateway is shutting down") })
	}()
	defer ln.Close()
	var wg sync.WaitGroup
	defer wg.Wait()
	pause := time.Duration(0)
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) || errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.ENOBUFS) {
				pause = min(max(2*pause, 5*time.Millisecond), time.Second)
				k.cfg.Log.Warn().Err(err).Dur("pause", pause).Msg("cannot accept connections for now; pausing")
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(pause):
				}
				continue
			}
			return fmt.Errorf("%s accept: %w", k.cfg.Protocol, err)
		}
		pause = 0
		select {
		case k.starting <- struct{}{}:
		default:
			// Too many connections still authenticating: a flood.
			conn.Close()
			continue
		}
		var once sync.Once
		release := func() { once.Do(func() { <-k.starting }) }
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer release()
			defer conn.Close()
			defer func() {
				if r := recover(); r != nil {
					k.cfg.Log.Error().Interface("panic", r).Str("client", conn.RemoteAddr().String()).Msg("connection failed; closed")
				}
			}()
			full := false
			select {
			case k.slots <- struct{}{}:
				defer func() { <-k.slots }()
			default:
				full = true
			}
			handle(context.WithValue(ctx, startedKey{}, release), conn, full)
		}()
	}
}

type startedKey struct{}

// Started tells the kernel that the connection served under ctx has
// authenticated: it no longer counts against MaxStarting.
func Started(ctx context.Context) {
	if f, ok := ctx.Value(startedKey{}).(func()); ok {
		f()
	}
}

// Register adds an open session (for shutdown, kill and re-verification)
// and counts it; Unregister removes it.
func (k *Kernel) Register(s Session) {
	k.mu.Lock()
	k.sessions[s.ID()] = s
	k.mu.Unlock()
	k.active.Add(1)
	k.metrics.started.Inc()
	k.metrics.active.Inc()
}

// endWait bounds how long a session's end waits to be durable, and
// endRetry how long a session whose recording failed keeps trying to
// record its end (in the background) while the audit stream refuses it.
const (
	endWait  = 5 * time.Second
	endRetry = 2 * time.Minute
)

// RecordEnd records a session's end, waiting at most endWait for it to be
// durable. Whatever stands in its way (the audit stream refusing events,
// the worker fenced), it goes on in the background for up to endRetry, and
// a session whose recording failed records it all the same, after the gap
// the failure left (recording.Session.Close): a session must not be shown
// open for good because it ended while the stream was down.
func (k *Kernel) RecordEnd(rec *recording.Session, ended *sessionv1.Ended) {
	ev := &sessionv1.Event{Time: timestamppb.Now(), Body: &sessionv1.Event_Ended{Ended: ended}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		ctx, cancel := context.WithTimeout(context.Background(), endRetry)
		defer cancel()
		if err := rec.Close(ctx, ev, time.Second); err != nil {
			k.cfg.Log.Error().Err(err).Str("session", rec.ID).Dur("tried_for", endRetry).
				Msg("session end not recorded: the audit stream refused it for too long; the session has no end in the audit log")
		}
	}()
	select {
	case <-done:
	case <-time.After(endWait):
		k.cfg.Log.Warn().Str("session", rec.ID).Msg("session end not durable yet; still trying in the background")
	}
}

// Unregister removes a session Register added.
func (k *Kernel) Unregister(s Session) {
	k.mu.Lock()
	if k.sessions[s.ID()] == s {
		delete(k.sessions, s.ID())
		k.active.Add(-1)
		k.metrics.active.Dec()
	}
	k.mu.Unlock()
}

// Lookup returns an open session by id.
func (k *Kernel) Lookup(id string) (Session, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	s, ok := k.sessions[id]
	return s, ok
}

func (k *Kernel) each(fn func(Session)) {
	k.mu.Lock()
	open := make([]Session, 0, len(k.sessions))
	for _, s := range k.sessions {
		open = append(open, s)
	}
	k.mu.Unlock()
	for _, s := range open {
		fn(s)
	}
}

// reverify checks every open session's token under the identity
// configuration now in force, and ends the sessions it no longer accepts
// as the same principal. It fails closed: a session that cannot be
// verified ends.
func (k *Kernel) reverify(ctx context.Context) {
	var open []Session
	k.each(func(s Session) { open = append(open, s) })
	// Many sessions may share a few tokens (cached after the first) or
	// each wait on the identity service: check them sixteen at a time.
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for _, s := range open {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			p, e := k.Authn.Verify(ctx, s.CallerToken())
			switch {
			case ctx.Err() != nil:
			case e != nil:
				s.End(EndRefused, fmt.Sprintf("the identity configuration changed and no longer accepts this session's token: %s (%s)", e.GetMessage(), e.GetCode()))
			case PrincipalKey(p) != s.PrincipalKey():
				s.End(EndChanged, "the identity configuration changed who this session's token names (groups or identity)")
			}
		}()
	}
	wg.Wait()
}

// Decide rules on a command: from the cache when it may, else from the
// policy service. Without an answer the verdict is deny. key is the
// protocol's cache key for the command (its exact text, say); shape, when
// set, gives a key that stands for every command of the same shape (and
// whether there is one), used when the policy service says so. It is
// called with key, and only when the exact key misses (a plain function, so
// that the hot path allocates no closure).
func (k *Kernel) Decide(ctx context.Context, req *policyv1.EvaluateRequest, pkey [16]byte, key string, shape func(string) (string, bool)) (*policyv1.Decision, bool) {
	now := time.Now()
	target := req.GetTarget().GetName()
	exact := CacheKey{Principal: pkey, Target: target, Text: key}
	if d := k.Decisions.Get(exact, now); d != nil {
		return k.Count(d), true
	}
	var shapeKey CacheKey
	shapeOK := false
	if shape != nil {
		var text string
		if text, shapeOK = shape(key); shapeOK {
			shapeKey = CacheKey{Principal: pkey, Target: target, Shape: true, Text: text}
			if d := k.Decisions.Get(shapeKey, now); d != nil {
				return k.Count(d), true
			}
		}
	}
	caller := ctx
	ctx, cancel := context.WithTimeout(ctx, k.cfg.PolicyTimeout)
	defer cancel()
	gen := k.Decisions.Generation()
	// Decided with grants at least as current as this worker has seen.
	req.MinGrantsRevision = k.Approvals.GrantRevision()
	// And with the policy this worker holds, or a later one.
	req.MinPolicyRevision = k.View.Policy().GetRevision()
	var d policyv1.Decision
	if err := bus.RequestIdempotent(ctx, k.cfg.Conn.NC, bus.APIPolicyEvaluate, req, &d); err != nil {
		if caller.Err() != nil {
			// The caller gave up (its client left, its request was
			// cancelled): nothing is known of the policy service.
			return k.Count(&policyv1.Decision{Action: "deny", Rule: RuleGivenUp, Reason: "the command was given up before the policy service answered"}), false
		}
		k.cfg.Log.Warn().Err(err).Str("session", req.GetSessionId()).Msg("no policy decision; denying")
		return k.Count(&policyv1.Decision{Action: "deny", Rule: RulePolicyUnavailable, Reason: "the policy service did not answer; nothing runs without a decision"}), false
	}
	if c := d.GetCache(); c.GetCacheable() {
		k.Decisions.Put(exact, &d, now, gen)
		if shapeOK && c.GetShapeCacheable() && c.GetShape() == shapeKey.Text {
			k.Decisions.Put(shapeKey, &d, now, gen)
		}
	}
	return k.Count(&d), false
}

// Count counts a decision in sluice_decisions_total and returns it: each
// one Decide returns, and each one a worker makes itself, that the policy
// service never saw (a protocol message it refuses outright, say).
func (k *Kernel) Count(d *policyv1.Decision) *policyv1.Decision {
	k.metrics.decisions.WithLabelValues(d.GetAction(), d.GetRule()).Inc()
	return d
}

// ServeKills ends the sessions an administrator kills (sluice sessions kill):
// every replica receives the request, the one that holds the session
// verifies that the caller holds the admin role and ends it; the others stay
// silent. Call it after Follow.
func (k *Kernel) ServeKills(ctx context.Context) (*nats.Subscription, error) {
	sem := make(chan struct{}, 16)
	return k.cfg.Conn.NC.Subscribe(bus.SubjectKill, func(m *nats.Msg) {
		if !strings.HasPrefix(m.Reply, "_INBOX.") {
			return
		}
		var req sessionv1.KillRequest
		if proto.Unmarshal(m.Data, &req) != nil {
			return
		}
		s, ok := k.Lookup(req.GetSessionId())
		if !ok {
			return
		}
		select {
		case sem <- struct{}{}:
		default:
			return // a flood: the caller times out
		}
		go func() {
			defer func() { <-sem }()
			vctx, cancel := context.WithTimeout(bus.WithCallerToken(ctx, m.Header.Get(bus.HeaderCaller)), 5*time.Second)
			defer cancel()
			reply := &sessionv1.KillReply{}
			p, e := k.guard.Require(vctx, authz.Admin)
			if e != nil {
				reply.Error = e
			} else {
				reason := fmt.Sprintf("ended by %s", p.GetSubject())
				if r := strings.TrimSpace(req.GetReason()); r != "" {
					reason += ": " + truncate(r, 500)
				}
				k.cfg.Log.Info().Str("session", s.ID()).Str("by", p.GetSubject()).Msg("session killed")
				s.End(EndKilled, reason)
			}
			if data, err := proto.Marshal(reply); err == nil {
				_ = m.Respond(data)
			}
		}()
	})
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// RulePolicyUnavailable is the rule of a deny made because the policy
// service did not answer.
const RulePolicyUnavailable = "builtin:policy-unavailable"

// RuleGivenUp is the rule of a deny made because the caller gave up (its
// client left, its request was cancelled) before the policy service
// answered: not a sign that the service failed.
const RuleGivenUp = "builtin:given-up"

// RecordAuthFailure records a refused connection as an event of its own.
func (k *Kernel) RecordAuthFailure(ctx context.Context, client, target, code, reason string) {
	k.metrics.authFailures.WithLabelValues(code).Inc()
	s := k.Rec.Open(recording.NewSessionID())
	err := s.Record(ctx, &sessionv1.Event{Time: timestamppb.Now(), Body: &sessionv1.Event_AuthFailed{AuthFailed: &sessionv1.AuthFailed{
		Protocol: k.cfg.Protocol, ClientAddr: client, Code: code, Reason: reason, Target: target,
	}}})
	if err != nil {
		k.cfg.Log.Warn().Err(err).Msg("authentication failure not recorded")
	}
}

// TargetRef is the part of a target policies and records see.
func TargetRef(name, kind string, labels map[string]string) *commonv1.Target {
	return &commonv1.Target{Name: name, Kind: kind, Labels: labels}
}

// Recorded is what the audit log keeps of a decision: the verdict, the
// classification and the grants it was made under, not the mask rules or
// cache hints (which the policy revision identifies).
func Recorded(d *policyv1.Decision) *policyv1.Decision {
	return &policyv1.Decision{Action: d.GetAction(), Rule: d.GetRule(), Reason: d.GetReason(), Revision: d.GetRevision(),
		Approvers: d.GetApprovers(), Quorum: d.GetQuorum(), Statements: d.GetStatements(), Error: d.GetError(), Grants: d.GetGrants(),
		Ssh: d.GetSsh(), Mcp: d.GetMcp(), K8S: d.GetK8S()}
}
