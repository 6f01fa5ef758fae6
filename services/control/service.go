package control

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"

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

// Aggregate names and ids.
const (
	aggTarget    = "target"
	aggPolicy    = "policy"
	aggApprovers = "approvers"
	aggIdentity  = "identity"
	aggAccess    = "access"
	singleton    = "default"
)

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
	// A grant approver group named in a file without approvers must exist
	// in the applied configuration.
	if ga := f.AccessProto().GetGrantApprovers(); ga != "" && f.Approvers == nil {
		found := false
		for _, g := range s.view.Approvers().GetGroups() {
			found = found || g.GetName() == ga
		}
		if !found {
			return applyError("invalid_config", fmt.Sprintf("access: grant_approvers %q is not an applied approver group", ga)), nil
		}
	}
	a := &applier{s: s, dry: req.GetDryRun(), actor: actor}
	for _, spec := range specs {
		a.target(ctx, spec)
	}
	if req.GetPrune() {
		keep := map[string]bool{}
		for _, spec := range specs {
			keep[spec.GetName()] = true
		}
		for _, t := range s.view.Targets() {
			if name := t.GetSpec().GetName(); !keep[name] {
				a.removeTarget(ctx, name)
			}
		}
	}
	if f.Policies != nil {
		a.policy(ctx, rules, req.GetFileName())
	}
	if f.Approvers != nil {
		a.approvers(ctx, f.ApproverProtos())
	}
	if ps := f.ProviderProtos(); ps != nil {
		a.identity(ctx, ps)
	}
	if ac := f.AccessProto(); ac != nil {
		a.access(ctx, ac)
	}
	if a.err != nil {
		s.cfg.Log.Error().Err(a.err).Msg("apply failed")
		return applyError("apply_failed", "the change could not be stored; retry"), nil
	}
	if !a.dry && a.lastSeq > 0 {
		if err := s.store.WaitApplied(ctx, projectionName, a.lastSeq); err != nil {
			return applyError("apply_failed", "the change is stored but not yet visible; retry to confirm"), nil
		}
	}
	return &controlv1.ApplyResponse{Changes: a.changes, PolicyRevision: a.revision}, nil
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

// applier compares and appends one piece at a time.
type applier struct {
	s        *Service
	dry      bool
	actor    string
	changes  []*controlv1.Change
	lastSeq  uint64
	revision uint64
	err      error
}

func (a *applier) load(ctx context.Context, agg, id string) (eventstore.Aggregate, bool) {
	st, err := a.s.store.Load(ctx, agg, id)
	if err != nil && !errors.Is(err, eventstore.ErrNotFound) {
		a.err = err
		return st, false
	}
	return st, true
}

func (a *applier) append(ctx context.Context, agg, id string, pos eventstore.Position, ev eventstore.Pending) bool {
	if a.dry {
		return true
	}
	p, err := a.s.store.Append(ctx, agg, id, pos, ev)
	if err != nil {
		a.err = fmt.Errorf("%s %s: %w", agg, id, err)
		return false
	}
	a.lastSeq = max(a.lastSeq, p.Sequence)
	return true
}

func (a *applier) change(kind, name, op string) {
	a.changes = append(a.changes, &controlv1.Change{Kind: kind, Name: name, Op: op})
}

// lastDigest returns the digest of the aggregate's current state; "" if it
// has none or was removed.
func lastDigest(st eventstore.Aggregate, decode func(eventstore.Event) string) string {
	if len(st.Events) == 0 {
		return ""
	}
	return decode(st.Events[len(st.Events)-1])
}

func (a *applier) target(ctx context.Context, spec *controlv1.TargetSpec) {
	if a.err != nil {
		return
	}
	st, ok := a.load(ctx, aggTarget, spec.GetName())
	if !ok {
		return
	}
	d := digest(spec)
	old := lastDigest(st, func(e eventstore.Event) string {
		var tc controlv1.TargetConfigured
		if e.Name != "configured" || e.Decode(&tc) != nil {
			return ""
		}
		return tc.GetDigest()
	})
	switch {
	case old == d:
		a.change("target", spec.GetName(), "unchanged")
		return
	case old == "":
		a.change("target", spec.GetName(), "created")
	default:
		a.change("target", spec.GetName(), "updated")
	}
	a.append(ctx, aggTarget, spec.GetName(), st.Position,
		eventstore.NewEvent("configured", &controlv1.TargetConfigured{Spec: spec, Digest: d, AppliedBy: a.actor}))
}

func (a *applier) removeTarget(ctx context.Context, name string) {
	if a.err != nil {
		return
	}
	st, ok := a.load(ctx, aggTarget, name)
	if !ok || len(st.Events) == 0 || st.Events[len(st.Events)-1].Name == "removed" {
		return
	}
	a.change("target", name, "removed")
	a.append(ctx, aggTarget, name, st.Position, eventstore.NewEvent("removed", &controlv1.TargetRemoved{Name: name, AppliedBy: a.actor}))
}

func (a *applier) policy(ctx context.Context, rules []*controlv1.Rule, file string) {
	if a.err != nil {
		return
	}
	st, ok := a.load(ctx, aggPolicy, singleton)
	if !ok {
		return
	}
	// The digest covers what rules do, not where they sit in the file.
	stripped := make([]*controlv1.Rule, len(rules))
	for i, r := range rules {
		c := proto.Clone(r).(*controlv1.Rule)
		c.Line, c.Column = 0, 0
		stripped[i] = c
	}
	d := digest(&controlv1.PolicySetApplied{Rules: stripped})
	var cur controlv1.PolicySetApplied
	if len(st.Events) > 0 {
		_ = st.Events[len(st.Events)-1].Decode(&cur)
	}
	if cur.GetDigest() == d {
		a.revision = cur.GetRevision()
		a.change("policy", singleton, "unchanged")
		return
	}
	a.revision = st.Version + 1
	a.change("policy", singleton, map[bool]string{true: "created", false: "updated"}[len(st.Events) == 0])
	a.append(ctx, aggPolicy, singleton, st.Position, eventstore.NewEvent("applied",
		&controlv1.PolicySetApplied{Rules: rules, Digest: d, Revision: a.revision, SourceFile: file, AppliedBy: a.actor}))
}

func (a *applier) approvers(ctx context.Context, groups []*controlv1.ApproverGroup) {
	if a.err != nil {
		return
	}
	sort.Slice(groups, func(i, j int) bool { return groups[i].GetName() < groups[j].GetName() })
	st, ok := a.load(ctx, aggApprovers, singleton)
	if !ok {
		return
	}
	d := digest(&controlv1.ApproverGroupsSet{Groups: groups})
	var cur controlv1.ApproverGroupsSet
	if len(st.Events) > 0 {
		_ = st.Events[len(st.Events)-1].Decode(&cur)
	}
	if cur.GetDigest() == d {
		a.change("approvers", singleton, "unchanged")
		return
	}
	a.change("approvers", singleton, map[bool]string{true: "created", false: "updated"}[len(st.Events) == 0])
	a.append(ctx, aggApprovers, singleton, st.Position, eventstore.NewEvent("set",
		&controlv1.ApproverGroupsSet{Groups: groups, Digest: d, AppliedBy: a.actor}))
}

func (a *applier) identity(ctx context.Context, ps []*controlv1.IdentityProvider) {
	if a.err != nil {
		return
	}
	st, ok := a.load(ctx, aggIdentity, singleton)
	if !ok {
		return
	}
	d := digest(&controlv1.IdentityProviderConfigured{Providers: ps})
	var cur controlv1.IdentityProviderConfigured
	if len(st.Events) > 0 {
		_ = st.Events[len(st.Events)-1].Decode(&cur)
	}
	if cur.GetDigest() == d {
		a.change("identity", "oidc", "unchanged")
		return
	}
	a.change("identity", "oidc", map[bool]string{true: "created", false: "updated"}[len(st.Events) == 0])
	a.append(ctx, aggIdentity, singleton, st.Position, eventstore.NewEvent("configured",
		&controlv1.IdentityProviderConfigured{Providers: ps, Digest: d, AppliedBy: a.actor}))
}

func (a *applier) access(ctx context.Context, ac *controlv1.AccessConfigured) {
	if a.err != nil {
		return
	}
	st, ok := a.load(ctx, aggAccess, singleton)
	if !ok {
		return
	}
	d := digest(ac)
	var cur controlv1.AccessConfigured
	if len(st.Events) > 0 {
		_ = st.Events[len(st.Events)-1].Decode(&cur)
	}
	if cur.GetDigest() == d {
		a.change("access", singleton, "unchanged")
		return
	}
	a.change("access", singleton, map[bool]string{true: "created", false: "updated"}[len(st.Events) == 0])
	ac.Digest, ac.AppliedBy = d, a.actor
	a.append(ctx, aggAccess, singleton, st.Position, eventstore.NewEvent("configured", ac))
}

// project writes the state an event sets into the control bucket. Events
// carry full state, so applying one twice is harmless.
func (s *Service) project(ctx context.Context, e eventstore.Event) error {
	key, value, del, ok := projected(e)
	if !ok {
		return nil
	}
	kv, err := controlstate.Bucket(ctx, s.cfg.Conn.JS)
	if err != nil {
		return err
	}
	if del {
		if err := kv.Delete(ctx, key); err != nil {
			return fmt.Errorf("project %s: %w", key, err)
		}
		return nil
	}
	if _, err := kv.Put(ctx, key, value); err != nil {
		return fmt.Errorf("project %s: %w", key, err)
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
		if key, value, del, ok := projected(e); ok {
			if del {
				delete(state, key)
			} else {
				state[key] = value
			}
		}
		return nil
	})
	return state, err
}

func (s *Service) listTargets(ctx context.Context, _ *controlv1.ListTargetsRequest) (*controlv1.ListTargetsResponse, error) {
	if _, e := s.guard.Caller(ctx); e != nil {
		return &controlv1.ListTargetsResponse{Error: e}, nil
	}
	resp := &controlv1.ListTargetsResponse{}
	for _, t := range s.view.Targets() {
		resp.Targets = append(resp.Targets, View(t.GetSpec()))
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
