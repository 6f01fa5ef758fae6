package control

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/proto"

	"sluice.dev/sluice/libs/authz"
	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/config"
	"sluice.dev/sluice/libs/controlstate"
	"sluice.dev/sluice/libs/eventstore"
	"sluice.dev/sluice/libs/policy"
	"sluice.dev/sluice/libs/secrets"
	commonv1 "sluice.dev/sluice/proto/sluice/common/v1"
	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
)

const projectionName = bus.DurableControlProjection

// ActorBreakGlass is the actor of changes applied through the break-glass
// subject (the NATS admin identity, no token).
const ActorBreakGlass = "break-glass"

// Aggregate names and ids (controlstate.Expand reads both schemas).
const (
	aggTarget    = controlstate.AggregateTarget
	aggPolicy    = controlstate.AggregatePolicy
	aggApprovers = controlstate.AggregateApprovers
	aggIdentity  = controlstate.AggregateIdentity
	aggAccess    = controlstate.AggregateAccess
	singleton    = controlstate.Singleton
)

// applyAttempts bounds how often an apply that lost a race with another
// is computed again against the new state.
const applyAttempts = 20

// Config configures the control service.
type Config struct {
	Conn *bus.Conn
	Log  zerolog.Logger
	// Ready, if set, is called once the service serves.
	Ready func()
}

// Service is the control service.
type Service struct {
	cfg   Config
	store *eventstore.Store
	view  *controlstate.View
	guard *authz.Guard
}

// New returns the service.
func New(cfg Config) *Service {
	view := controlstate.NewView()
	return &Service{
		cfg:   cfg,
		store: eventstore.New(cfg.Conn.JS, bus.StreamControl, bus.SubjectControl),
		view:  view,
		guard: authz.New(cfg.Conn.NC, view),
	}
}

// Run serves until ctx is done.
func (s *Service) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		return s.store.Run(ctx, eventstore.Projection{Name: projectionName, Apply: s.project, Log: s.cfg.Log})
	})
	g.Go(func() error { return s.view.Follow(ctx, s.cfg.Conn.JS) })
	// Authorize only once the view holds the applied access groups.
	select {
	case <-s.view.Ready():
	case <-ctx.Done():
		return g.Wait()
	}
	newApply := func() *controlv1.ApplyRequest { return &controlv1.ApplyRequest{} }
	if _, err := bus.Serve(ctx, s.cfg.Conn.NC, bus.APIControlApply, "control", newApply, s.applyAsCaller); err != nil {
		return err
	}
	if _, err := bus.Serve(ctx, s.cfg.Conn.NC, bus.APIControlBreakGlass, "control", newApply, s.applyBreakGlass); err != nil {
		return err
	}
	if _, err := bus.Serve(ctx, s.cfg.Conn.NC, bus.APIControlTargets, "control",
		func() *controlv1.ListTargetsRequest { return &controlv1.ListTargetsRequest{} }, s.listTargets); err != nil {
		return err
	}
	s.cfg.Log.Info().Msg("control service ready")
	if s.cfg.Ready != nil {
		s.cfg.Ready()
	}
	return g.Wait()
}

// applyAsCaller applies for a verified caller in an admin group.
func (s *Service) applyAsCaller(ctx context.Context, req *controlv1.ApplyRequest) (resp *controlv1.ApplyResponse, err error) {
	defer func() { countApply(resp, err, req.GetDryRun()) }()
	p, e := s.guard.Require(ctx, authz.Admin)
	if e != nil {
		return &controlv1.ApplyResponse{Error: e}, nil
	}
	return s.apply(ctx, req, p.GetSubject())
}

// applyBreakGlass applies with no token: only the break-glass NATS identity
// may publish its subject (bootstrap, and recovery when an identity change
// locked every admin out). Every change it makes names it as the actor.
func (s *Service) applyBreakGlass(ctx context.Context, req *controlv1.ApplyRequest) (resp *controlv1.ApplyResponse, err error) {
	defer func() { countApply(resp, err, req.GetDryRun()) }()
	s.cfg.Log.Warn().Str("file", req.GetFileName()).Bool("dry_run", req.GetDryRun()).Msg("configuration applied through the break-glass identity")
	return s.apply(ctx, req, ActorBreakGlass)
}

func digest(m proto.Message) string {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		panic(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func applyError(code, msg string) *controlv1.ApplyResponse {
	return &controlv1.ApplyResponse{Error: &commonv1.Error{Code: code, Message: msg}}
}

func (s *Service) apply(ctx context.Context, req *controlv1.ApplyRequest, actor string) (*controlv1.ApplyResponse, error) {
	f, err := config.Parse(req.GetConfig())
	if err != nil {
		resp := applyError("invalid_config", "the configuration is invalid")
		var errs config.Errors
		if errors.As(err, &errs) {
			for _, e := range errs {
				resp.Errors = append(resp.Errors, &controlv1.ConfigError{Message: e.Message, Rule: e.Rule, Line: int32(e.Line), Column: int32(e.Column)})
			}
		} else {
			resp.Errors = append(resp.Errors, &controlv1.ConfigError{Message: err.Error()})
		}
		return resp, nil
	}
	rules := f.RuleProtos()
	if errs := policyErrors(f, rules); len(errs) > 0 {
		resp := applyError("invalid_policy", "a policy rule does not compile")
		resp.Errors = errs
		return resp, nil
	}
	specs, err := f.TargetSpecs()
	if err != nil {
		return applyError("invalid_config", err.Error()), nil
	}
	for attempt := 1; ; attempt++ {
		a, err := s.plan(ctx, req, f, specs, rules, actor)
		var invalid invalidConfig
		if errors.As(err, &invalid) {
			return applyError("invalid_config", invalid.Error()), nil
		}
		if err != nil {
			s.cfg.Log.Error().Err(err).Msg("apply failed: the applied state cannot be read")
			return applyError("apply_failed", "the applied configuration cannot be read; retry"), nil
		}
		if a.dry || len(a.pieces) == 0 {
			return &controlv1.ApplyResponse{Changes: a.changes, PolicyRevision: a.revision}, nil
		}
		// One event for the whole apply, expecting the one before it: all
		// of it is stored or none, and two applies never interleave.
		pos, err := s.store.Append(ctx, controlstate.AggregateConfig, controlstate.ConfigID, a.at,
			eventstore.NewEvent(controlstate.EventApplied, &controlv1.ConfigApplied{Schema: controlstate.ConfigSchema, AppliedBy: actor,
				SourceFile: req.GetFileName(), Changes: a.pieces}))
		if errors.Is(err, eventstore.ErrConflict) {
			if attempt < applyAttempts {
				s.cfg.Log.Info().Int("attempt", attempt).Msg("another apply landed first; comparing again")
				// A jittered pause, so that applies racing each other spread.
				select {
				case <-ctx.Done():
					return applyError("apply_failed", "the apply was cancelled; nothing of it was applied"), nil
				case <-time.After(time.Duration(attempt) * time.Duration(5+rand.IntN(20)) * time.Millisecond):
				}
				continue
			}
			return applyError("conflict", fmt.Sprintf("other applies landed first %d times; nothing of this one was applied; retry", applyAttempts)), nil
		}
		if err != nil {
			s.cfg.Log.Error().Err(err).Msg("apply failed")
			return applyError("apply_failed", "the change could not be stored (nothing of it was applied); retry"), nil
		}
		wctx, cancel := context.WithTimeout(ctx, projectionWait)
		err = s.store.WaitApplied(wctx, projectionName, pos.Sequence)
		if err == nil {
			// The service authorizes with its view: the caller's next
			// request must be judged by what this apply set.
			err = s.view.CatchUp(wctx, s.cfg.Conn.JS)
		}
		cancel()
		if err != nil {
			return applyError("apply_failed", "the change is stored but not yet visible; retry to confirm"), nil
		}
		return &controlv1.ApplyResponse{Changes: a.changes, PolicyRevision: a.revision}, nil
	}
}

// invalidConfig is a plan's refusal of the file against the configuration
// in force.
type invalidConfig struct{ error }

// projectionWait bounds how long an apply waits for the projection to
// have applied every event stored before it.
const projectionWait = 10 * time.Second

// plan compares the file with the applied state and says what an apply
// changes. The applied state is the projection once it has applied every
// event stored when the plan began; at is where the config aggregate stood
// then, so that the apply is refused if another landed meanwhile.
func (s *Service) plan(ctx context.Context, req *controlv1.ApplyRequest, f *config.File, specs []*controlv1.TargetSpec, rules []*controlv1.Rule, actor string) (*applier, error) {
	at, err := s.store.Position(ctx, controlstate.AggregateConfig, controlstate.ConfigID)
	if err != nil {
		return nil, err
	}
	last, err := s.store.LastSequence(ctx)
	if err != nil {
		return nil, err
	}
	// The projection may be starting with the service (its first apply):
	// wait for it, but not for ever.
	wctx, cancel := context.WithTimeout(ctx, projectionWait)
	defer cancel()
	if err := s.store.WaitApplied(wctx, projectionName, last); err != nil {
		return nil, err
	}
	state, err := controlstate.Read(ctx, s.cfg.Conn.JS)
	if err != nil {
		return nil, err
	}
	// A grant approver group named in a file without approvers must exist
	// in the applied configuration.
	if ga := f.AccessProto().GetGrantApprovers(); ga != "" && f.Approvers == nil {
		found := false
		for _, g := range state.Approvers.GetGroups() {
			found = found || g.GetName() == ga
		}
		if !found {
			return nil, invalidConfig{fmt.Errorf("access: grant_approvers %q is not an applied approver group", ga)}
		}
	}
	a := &applier{dry: req.GetDryRun(), actor: actor, state: state, at: at}
	for _, spec := range specs {
		a.target(spec)
	}
	if req.GetPrune() {
		keep := map[string]bool{}
		for _, spec := range specs {
			keep[spec.GetName()] = true
		}
		for name := range state.Targets {
			if !keep[name] {
				a.removeTarget(name)
			}
		}
	}
	if f.Policies != nil {
		a.policy(rules, req.GetFileName())
	}
	// Approver groups are checked against the providers in force once
	// this applies: a group's subjects mean someone only within its issuer.
	var applied []*controlv1.IdentityProvider
	if state.Provider != nil {
		applied = controlstate.Providers(state.Provider)
	}
	providers := f.ProviderProtos()
	if providers == nil {
		providers = applied
	}
	groups := state.Approvers.GetGroups()
	if f.Approvers != nil {
		if groups, err = f.ApproverProtos(applied); err != nil {
			return nil, invalidConfig{err}
		}
	}
	if err := config.CheckApprovers(groups, providers); err != nil {
		return nil, invalidConfig{err}
	}
	if f.Approvers != nil {
		a.approvers(groups)
	}
	if ps := f.ProviderProtos(); ps != nil {
		a.identity(ps)
	}
	if ac := f.AccessProto(); ac != nil {
		a.access(ac)
	}
	return a, nil
}

// policyErrors type-checks the rules and locates each error in the file.
// The engine places an error inside a `when` by counting from the rule's
// line and column as if the expression were one plain line of the file;
// a quoted, folded or literal expression, or one over several lines, is
// not. So the rules are checked placed at line 1, column 1, which gives
// the place in the expression, and the file maps it to its own lines.
func policyErrors(f *config.File, rules []*controlv1.Rule) []*controlv1.ConfigError {
	placed := make([]*controlv1.Rule, len(rules))
	for i, r := range rules {
		c := proto.Clone(r).(*controlv1.Rule)
		c.Line, c.Column = 1, 1
		placed[i] = c
	}
	_, err := policy.Compile(placed, 0)
	if err == nil {
		return nil
	}
	var errs policy.CompileErrors
	if !errors.As(err, &errs) {
		return []*controlv1.ConfigError{{Message: err.Error()}}
	}
	out := make([]*controlv1.ConfigError, 0, len(errs))
	// Errors come in the order of the rules; a duplicate name is reported
	// at the rule that repeats it.
	cur := 0
	for _, e := range errs {
		i := indexOfRule(rules, e.Rule, cur)
		if i >= 0 && strings.HasPrefix(e.Message, "duplicate rule name") {
			if j := indexOfRule(rules, e.Rule, i+1); j >= 0 {
				i = j
			}
		}
		line, col := 0, 0
		if i >= 0 {
			cur = i
			line, col = f.WhenPosition(i, e.Line, e.Column)
		}
		out = append(out, &controlv1.ConfigError{Message: e.Message, Rule: e.Rule, Line: int32(line), Column: int32(col)})
	}
	return out
}

func indexOfRule(rules []*controlv1.Rule, name string, from int) int {
	for i := from; i < len(rules); i++ {
		if rules[i].GetName() == name {
			return i
		}
	}
	return -1
}

// applier compares a file with the applied state, piece by piece, and
// gathers the changes of one apply.
type applier struct {
	dry      bool
	actor    string
	state    controlstate.State
	at       eventstore.Position
	changes  []*controlv1.Change
	pieces   []*controlv1.ConfigChange
	revision uint64
}

func (a *applier) change(kind, name, op string) {
	a.changes = append(a.changes, &controlv1.Change{Kind: kind, Name: name, Op: op})
}

func (a *applier) add(m proto.Message) {
	a.pieces = append(a.pieces, controlstate.Change(m))
}

func created(exists bool) string {
	if exists {
		return "updated"
	}
	return "created"
}

func (a *applier) target(spec *controlv1.TargetSpec) {
	cur, exists := a.state.Targets[spec.GetName()]
	d := digest(spec)
	if exists && cur.GetDigest() == d {
		a.change("target", spec.GetName(), "unchanged")
		return
	}
	a.change("target", spec.GetName(), created(exists))
	a.add(&controlv1.TargetConfigured{Spec: spec, Digest: d, AppliedBy: a.actor})
}

func (a *applier) removeTarget(name string) {
	if _, exists := a.state.Targets[name]; !exists {
		return
	}
	a.change("target", name, "removed")
	a.add(&controlv1.TargetRemoved{Name: name, AppliedBy: a.actor})
}

func (a *applier) policy(rules []*controlv1.Rule, file string) {
	// The digest covers what rules do, not where they sit in the file.
	stripped := make([]*controlv1.Rule, len(rules))
	for i, r := range rules {
		c := proto.Clone(r).(*controlv1.Rule)
		c.Line, c.Column = 0, 0
		stripped[i] = c
	}
	d := digest(&controlv1.PolicySetApplied{Rules: stripped})
	cur := a.state.Policy
	if cur != nil && cur.GetDigest() == d {
		a.revision = cur.GetRevision()
		a.change("policy", singleton, "unchanged")
		return
	}
	a.revision = cur.GetRevision() + 1
	a.change("policy", singleton, created(cur != nil))
	a.add(&controlv1.PolicySetApplied{Rules: rules, Digest: d, Revision: a.revision, SourceFile: file, AppliedBy: a.actor})
}

func (a *applier) approvers(groups []*controlv1.ApproverGroup) {
	sort.Slice(groups, func(i, j int) bool { return groups[i].GetName() < groups[j].GetName() })
	d := digest(&controlv1.ApproverGroupsSet{Groups: groups})
	cur := a.state.Approvers
	if cur != nil && cur.GetDigest() == d {
		a.change("approvers", singleton, "unchanged")
		return
	}
	a.change("approvers", singleton, created(cur != nil))
	a.add(&controlv1.ApproverGroupsSet{Groups: groups, Digest: d, AppliedBy: a.actor})
}

func (a *applier) identity(ps []*controlv1.IdentityProvider) {
	d := digest(&controlv1.IdentityProviderConfigured{Providers: ps})
	cur := a.state.Provider
	if cur != nil && cur.GetDigest() == d {
		a.change("identity", "oidc", "unchanged")
		return
	}
	a.change("identity", "oidc", created(cur != nil))
	a.add(&controlv1.IdentityProviderConfigured{Providers: ps, Digest: d, AppliedBy: a.actor})
}

func (a *applier) access(ac *controlv1.AccessConfigured) {
	d := digest(ac)
	cur := a.state.Access
	if cur != nil && cur.GetDigest() == d {
		a.change("access", singleton, "unchanged")
		return
	}
	a.change("access", singleton, created(cur != nil))
	ac.Digest, ac.AppliedBy = d, a.actor
	a.add(ac)
}

// project writes the state an event sets into the control bucket. Events
// carry full state, so applying one twice is harmless.
func (s *Service) project(ctx context.Context, e eventstore.Event) error {
	pieces, err := controlstate.Expand(e)
	if err != nil {
		return err
	}
	kv, err := controlstate.Bucket(ctx, s.cfg.Conn.JS)
	if err != nil {
		return err
	}
	for _, p := range pieces {
		key, value, del, ok := projected(p)
		switch {
		case !ok:
		case del:
			if err := kv.Delete(ctx, key); err != nil {
				return fmt.Errorf("project %s: %w", key, err)
			}
		default:
			if _, err := kv.Put(ctx, key, value); err != nil {
				return fmt.Errorf("project %s: %w", key, err)
			}
		}
	}
	return nil
}

// projected is the bucket entry an event sets: a key and its value, or
// the key's deletion; ok is false for an event that sets none.
func projected(e eventstore.Event) (key string, value []byte, del, ok bool) {
	switch e.Aggregate {
	case aggTarget:
		key = controlstate.TargetKey(e.AggregateID)
		if e.Name == "removed" {
			return key, nil, true, true
		}
	case aggPolicy:
		key = controlstate.KeyPolicy
	case aggApprovers:
		key = controlstate.KeyApprovers
	case aggIdentity:
		key = controlstate.KeyIdentityProvider
	case aggAccess:
		key = controlstate.KeyAccess
	default:
		return "", nil, false, false
	}
	return key, e.Data, false, true
}

// Fold is what the control bucket holds once the projection has applied
// every CONTROL event: each key and its value, folded from the first
// event (sluice admin reproject control compares and rebuilds the bucket
// with it).
func Fold(ctx context.Context, js jetstream.JetStream) (map[string][]byte, error) {
	state := map[string][]byte{}
	store := eventstore.New(js, bus.StreamControl, bus.SubjectControl)
	err := store.Read(ctx, bus.SubjectControl+".>", func(e eventstore.Event) error {
		pieces, err := controlstate.Expand(e)
		if err != nil {
			return err
		}
		for _, p := range pieces {
			if key, value, del, ok := projected(p); ok {
				if del {
					delete(state, key)
				} else {
					state[key] = value
				}
			}
		}
		return nil
	})
	return state, err
}

func (s *Service) listTargets(ctx context.Context, _ *controlv1.ListTargetsRequest) (*controlv1.ListTargetsResponse, error) {
	p, e := s.guard.Caller(ctx)
	if e != nil {
		return &controlv1.ListTargetsResponse{Error: e}, nil
	}
	// Where a target is and as whom Sluice logs in is for those who run
	// Sluice (admins, auditors): anyone else sees a target's name, kind
	// and labels, what a client connects with.
	full := s.guard.Has(p, authz.Admin) || s.guard.Has(p, authz.Auditor)
	resp := &controlv1.ListTargetsResponse{}
	for _, t := range s.view.Targets() {
		v := View(t.GetSpec())
		if !full {
			v = &controlv1.TargetView{Name: v.GetName(), Kind: v.GetKind(), Labels: v.GetLabels()}
		}
		resp.Targets = append(resp.Targets, v)
	}
	return resp, nil
}

// View describes a target without its credential.
func View(spec *controlv1.TargetSpec) *controlv1.TargetView {
	v := &controlv1.TargetView{Name: spec.GetName(), Kind: spec.GetKind(), Labels: spec.GetLabels(), Credential: "none"}
	switch ep := spec.GetEndpoint().(type) {
	case *controlv1.TargetSpec_Postgres:
		v.Address = fmt.Sprintf("%s:%d", ep.Postgres.GetHost(), ep.Postgres.GetPort())
		v.Database, v.User = ep.Postgres.GetDatabase(), ep.Postgres.GetUser()
		v.Credential = secrets.Describe(ep.Postgres.GetPassword())
	case *controlv1.TargetSpec_Ssh:
		v.Address = fmt.Sprintf("%s:%d", ep.Ssh.GetHost(), ep.Ssh.GetPort())
		v.User = ep.Ssh.GetUser()
		v.Credential = secrets.Describe(ep.Ssh.GetPrivateKey())
	case *controlv1.TargetSpec_Kubernetes:
		v.Address = ep.Kubernetes.GetServer()
		v.Credential = secrets.Describe(ep.Kubernetes.GetToken())
	}
	return v
}
