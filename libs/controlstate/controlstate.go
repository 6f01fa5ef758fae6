// Package controlstate is the read side of the control plane: the
// sluice_control key-value bucket into which the control service projects
// the CONTROL event stream (targets, the policy set, approver groups, the
// identity provider), and a live View of it for services and workers.
//
// Keys: target.<token(name)>, policy.current, approvers.current,
// identity.provider, access.current. Values are the serialized events that
// set them.
package controlstate

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"sluice.dev/sluice/libs/bus"
	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
)

// Keys of the control bucket.
const (
	KeyPolicy           = "policy.current"
	KeyApprovers        = "approvers.current"
	KeyIdentityProvider = "identity.provider"
	KeyAccess           = "access.current"
	targetPrefix        = "target."
)

// TargetKey is the key of a target.
func TargetKey(name string) string { return targetPrefix + bus.Token(name) }

// Bucket opens the control bucket (it is created by bus.Provision).
func Bucket(ctx context.Context, js jetstream.JetStream) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, bus.BucketControl)
	if err != nil {
		return nil, fmt.Errorf("control bucket: %w", err)
	}
	return kv, nil
}

// View is a live, read-only copy of the control state.
type View struct {
	mu       sync.RWMutex
	st       State
	ready    chan struct{}
	subs     []func(key string)
	progress bus.Progress
	// js is what Follow follows the bucket with (for Recheck).
	js jetstream.JetStream
}

// NewView returns an empty view; Follow fills it.
func NewView() *View {
	return &View{st: State{Targets: map[string]*controlv1.TargetConfigured{}}, ready: make(chan struct{})}
}

// OnChange registers fn to be called (from the follower goroutine) after
// every change, with the key that changed. Register before Follow.
func (v *View) OnChange(fn func(key string)) {
	v.mu.Lock()
	v.subs = append(v.subs, fn)
	v.mu.Unlock()
}

// Ready is closed once the initial state has been loaded.
func (v *View) Ready() <-chan struct{} { return v.ready }

func (v *View) apply(e jetstream.KeyValueEntry) error {
	key := e.Key()
	v.mu.Lock()
	err := v.st.set(key, e.Value(), e.Operation() != jetstream.KeyValuePut)
	subs := v.subs
	v.mu.Unlock()
	if err != nil {
		v.progress.Applied(e.Revision()) // seen, if not applied: no wait for it
		return err
	}
	for _, fn := range subs {
		fn(key)
	}
	// Applied once those who react to the change have (CatchUp promises
	// the change and its consequences).
	v.progress.Applied(e.Revision())
	return nil
}

// State is the control state: what the bucket holds, decoded.
type State struct {
	Targets   map[string]*controlv1.TargetConfigured
	Policy    *controlv1.PolicySetApplied
	Approvers *controlv1.ApproverGroupsSet
	Provider  *controlv1.IdentityProviderConfigured
	Access    *controlv1.AccessConfigured
}

// set applies one bucket entry (a put of value, or the key's deletion).
func (st *State) set(key string, value []byte, deleted bool) error {
	if st.Targets == nil {
		st.Targets = map[string]*controlv1.TargetConfigured{}
	}
	decode := func(m proto.Message) error {
		if deleted {
			return nil
		}
		if err := proto.Unmarshal(value, m); err != nil {
			return fmt.Errorf("control state %s: %w", key, err)
		}
		return nil
	}
	switch {
	case len(key) > len(targetPrefix) && key[:len(targetPrefix)] == targetPrefix:
		name, _ := bus.DecodeToken(key[len(targetPrefix):])
		if deleted {
			delete(st.Targets, name)
			return nil
		}
		var t controlv1.TargetConfigured
		if err := decode(&t); err != nil {
			return err
		}
		st.Targets[name] = &t
	case key == KeyPolicy:
		var p controlv1.PolicySetApplied
		if err := decode(&p); err != nil {
			return err
		}
		st.Policy = nilIf(deleted, &p)
	case key == KeyApprovers:
		var a controlv1.ApproverGroupsSet
		if err := decode(&a); err != nil {
			return err
		}
		st.Approvers = nilIf(deleted, &a)
	case key == KeyIdentityProvider:
		var p controlv1.IdentityProviderConfigured
		if err := decode(&p); err != nil {
			return err
		}
		st.Provider = nilIf(deleted, &p)
	case key == KeyAccess:
		var a controlv1.AccessConfigured
		if err := decode(&a); err != nil {
			return err
		}
		st.Access = nilIf(deleted, &a)
	}
	return nil
}

// Read reads the bucket as it stands now, entry by entry (the control
// service compares an apply with it).
func Read(ctx context.Context, js jetstream.JetStream) (State, error) {
	st := State{Targets: map[string]*controlv1.TargetConfigured{}}
	kv, err := Bucket(ctx, js)
	if err != nil {
		return st, err
	}
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		return st, fmt.Errorf("control bucket: %w", err)
	}
	for key := range keys.Keys() {
		e, err := kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			return st, fmt.Errorf("control bucket %s: %w", key, err)
		}
		if err := st.set(key, e.Value(), false); err != nil {
			return st, err
		}
	}
	return st, nil
}

func nilIf[T any](deleted bool, v *T) *T {
	if deleted {
		return nil
	}
	return v
}

// Target returns a registered target.
func (v *View) Target(name string) (*controlv1.TargetConfigured, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	t, ok := v.st.Targets[name]
	return t, ok
}

// Targets returns every target, sorted by name.
func (v *View) Targets() []*controlv1.TargetConfigured {
	v.mu.RLock()
	out := make([]*controlv1.TargetConfigured, 0, len(v.st.Targets))
	for _, t := range v.st.Targets {
		out = append(out, t)
	}
	v.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].GetSpec().GetName() < out[j].GetSpec().GetName() })
	return out
}

// Policy returns the policy set in force, or nil.
func (v *View) Policy() *controlv1.PolicySetApplied {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.st.Policy
}

// Approvers returns the approver groups, or nil.
func (v *View) Approvers() *controlv1.ApproverGroupsSet {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.st.Approvers
}

// IdentityProvider returns the applied provider settings, or nil.
func (v *View) IdentityProvider() *controlv1.IdentityProviderConfigured {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.st.Provider
}

// IdentityDigest names the applied identity configuration ("" if none is
// applied): verifications made under another one are not trusted.
func (v *View) IdentityDigest() string {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.st.Provider.GetDigest()
}

// Providers returns every applied identity provider (events written before
// several could be configured carry one, in provider).
func Providers(ev *controlv1.IdentityProviderConfigured) []*controlv1.IdentityProvider {
	if ps := ev.GetProviders(); len(ps) > 0 {
		return ps
	}
	if p := ev.GetProvider(); p != nil {
		return []*controlv1.IdentityProvider{p}
	}
	return nil
}

// Access returns which groups administer and audit, or nil if no access
// section was ever applied (then only the break-glass path administers).
func (v *View) Access() *controlv1.AccessConfigured {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.st.Access
}

// CatchUp returns once the view holds every entry the bucket holds now,
// or when ctx is done: what a caller wrote to the bucket before calling
// it is then what the view answers with. A service that authorizes with
// its view calls it before it reports an apply done, so that the caller's
// next request is judged by what it applied.
func (v *View) CatchUp(ctx context.Context, js jetstream.JetStream) error {
	return v.progress.CatchUp(ctx, js, bus.BucketControl)
}

// recheckWait bounds how long Recheck waits for the view to catch up.
const recheckWait = 2 * time.Second

// Recheck reports ok(); if it is false, it asks again once the view holds
// everything the bucket holds (waiting at most two seconds). A refusal is
// then never made for the view's lag behind a change already stored: a
// role, an approver group or a target applied a moment before, by an apply
// that has returned. Only refusals pay for it, with one request to
// JetStream.
func (v *View) Recheck(ctx context.Context, ok func() bool) bool {
	if ok() {
		return true
	}
	v.mu.RLock()
	js := v.js
	v.mu.RUnlock()
	if js == nil {
		return false
	}
	cctx, cancel := context.WithTimeout(ctx, recheckWait)
	defer cancel()
	if err := v.CatchUp(cctx, js); err != nil {
		return false
	}
	return ok()
}

// LookupTarget is Target, rechecked (Recheck) when the view has no such
// target.
func (v *View) LookupTarget(ctx context.Context, name string) (*controlv1.TargetConfigured, bool) {
	var tc *controlv1.TargetConfigured
	found := v.Recheck(ctx, func() bool {
		var ok bool
		tc, ok = v.Target(name)
		return ok
	})
	return tc, found
}

// Follow keeps the view current until ctx is done, watching again when a
// watch ends (a NATS node lost, a reconnect).
func (v *View) Follow(ctx context.Context, js jetstream.JetStream) error {
	v.mu.Lock()
	v.js = js
	v.mu.Unlock()
	return bus.FollowKV(ctx, js, bus.BucketControl, v.ready, v.apply)
}
