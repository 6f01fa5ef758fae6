// Package approvalstate is the read side of the approvals service: a live
// copy of the sluice_approvals bucket (the folded state of every approval
// request and grant), with the active grants of a principal on a target for
// policies, and a way to wait for a request's outcome.
//
// Waiting reads the view rather than opening a watch per request: a watch is
// an ephemeral JetStream consumer, and stopping one deletes it, which a
// protocol worker's NATS user may not do (the request then waits out its
// five-second timeout before the held statement can go on).
package approvalstate

import (
	"context"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"sluice.dev/sluice/libs/bus"
	approvalsv1 "sluice.dev/sluice/proto/sluice/approvals/v1"
)

// View follows the approvals bucket. A view that falls behind the bucket
// (see bus.Follow) fails closed until it has caught up: it shows no grants.
type View struct {
	mu       sync.RWMutex
	items    map[string]*approvalsv1.Approval
	grantRev uint64
	ready    chan struct{}
	subs     []func(*approvalsv1.Approval)
	staleFns []func(bool)
	stale    atomic.Bool
	// waiters are woken when their approval changes.
	waiters  map[string][]chan struct{}
	progress bus.Progress
}

// OnStale registers fn, called when the view falls behind the bucket and
// when it has caught up again (before Follow).
func (v *View) OnStale(fn func(stale bool)) {
	v.mu.Lock()
	v.staleFns = append(v.staleFns, fn)
	v.mu.Unlock()
}

// Stale reports whether the view lags behind the bucket.
func (v *View) Stale() bool { return v.stale.Load() }

func (v *View) setStale(s bool) {
	v.stale.Store(s)
	v.mu.RLock()
	fns := v.staleFns
	v.mu.RUnlock()
	for _, fn := range fns {
		fn(s)
	}
}

// NewView returns an empty view.
func NewView() *View {
	return &View{items: map[string]*approvalsv1.Approval{}, ready: make(chan struct{}), waiters: map[string][]chan struct{}{}}
}

// OnChange registers fn, called after every change (before Follow).
func (v *View) OnChange(fn func(*approvalsv1.Approval)) {
	v.mu.Lock()
	v.subs = append(v.subs, fn)
	v.mu.Unlock()
}

// Ready is closed once the initial state is loaded.
func (v *View) Ready() <-chan struct{} { return v.ready }

// apply folds one bucket entry into the view.
func (v *View) apply(e jetstream.KeyValueEntry) error {
	defer v.progress.Applied(e.Revision())
	if e.Operation() != jetstream.KeyValuePut {
		// Retired to the history: no longer in the hot view.
		v.mu.Lock()
		delete(v.items, e.Key())
		v.mu.Unlock()
		return nil
	}
	var a approvalsv1.Approval
	if err := proto.Unmarshal(e.Value(), &a); err != nil {
		return nil // not an approval: skipped
	}
	v.mu.Lock()
	v.items[a.GetId()] = &a
	if a.GetType() == "grant" {
		v.grantRev = max(v.grantRev, e.Revision())
	}
	for _, ch := range v.waiters[a.GetId()] {
		close(ch)
	}
	delete(v.waiters, a.GetId())
	subs := v.subs
	v.mu.Unlock()
	for _, fn := range subs {
		fn(&a)
	}
	return nil
}

// Get returns an approval by id.
func (v *View) Get(id string) (*approvalsv1.Approval, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	a, ok := v.items[id]
	return a, ok
}

// List returns approvals matching keep, newest first.
func (v *View) List(keep func(*approvalsv1.Approval) bool) []*approvalsv1.Approval {
	v.mu.RLock()
	var out []*approvalsv1.Approval
	for _, a := range v.items {
		if keep(a) {
			out = append(out, a)
		}
	}
	v.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].GetCreatedAt().AsTime().After(out[j].GetCreatedAt().AsTime()) })
	return out
}

// GrantSet is what the grants state says for one command: the grants in
// force, the revision of the grants state, when the answer next changes
// (the earliest end of a grant in force; zero if none), and whether the
// principal holds grants confined to a session (then the answer depends on
// the session, and a decision made from it holds for that session only).
type GrantSet struct {
	Grants   []*approvalsv1.Grant
	Revision uint64
	Next     time.Time
	Scoped   bool
}

// Grants returns the grants of the principal named by issuer and subject
// on target in force at now for a command of session: those for every
// session and those confined to this one. A subject is compared with its
// issuer: two issuers may each have a subject of the same name. A stale
// view has none, and its answer may change at once (decisions made
// meanwhile are not reused).
func (v *View) Grants(issuer, subject, target, session string, now time.Time) GrantSet {
	if v.stale.Load() {
		return GrantSet{Next: now}
	}
	v.mu.RLock()
	defer v.mu.RUnlock()
	set := GrantSet{Revision: v.grantRev}
	for _, a := range v.items {
		if a.GetType() != "grant" || a.GetState() != "approved" || a.GetRequester().GetSubject() != subject || a.GetRequester().GetIssuer() != issuer || a.GetTarget() != target {
			continue
		}
		start, end := a.GetStartsAt().AsTime(), a.GetEndsAt().AsTime()
		if now.Before(start) || !now.Before(end) {
			continue
		}
		if a.GetSessionId() != "" {
			set.Scoped = true
			if a.GetSessionId() != session {
				continue
			}
		}
		set.Grants = append(set.Grants, &approvalsv1.Grant{Id: a.GetId(), Subject: subject, Target: target, Role: a.GetRole(),
			StartsAt: a.GetStartsAt(), EndsAt: a.GetEndsAt(), SessionId: a.GetSessionId()})
		if set.Next.IsZero() || end.Before(set.Next) {
			set.Next = end
		}
	}
	return set
}

// GrantRevision changes whenever any grant changes.
func (v *View) GrantRevision() uint64 {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.grantRev
}

// Await blocks until the view holds approval id in a state other than
// pending (or ctx ends) and returns it. The view must be following the
// bucket (Follow).
func (v *View) Await(ctx context.Context, id string) (*approvalsv1.Approval, error) {
	for {
		v.mu.Lock()
		if a, ok := v.items[id]; ok && a.GetState() != "pending" {
			v.mu.Unlock()
			return a, nil
		}
		ch := make(chan struct{})
		v.waiters[id] = append(v.waiters[id], ch)
		v.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			v.mu.Lock()
			keep := slices.DeleteFunc(v.waiters[id], func(c chan struct{}) bool { return c == ch })
			if len(keep) == 0 {
				delete(v.waiters, id)
			} else {
				v.waiters[id] = keep
			}
			v.mu.Unlock()
			return nil, ctx.Err()
		}
	}
}

// CatchUp returns once the view holds every entry the bucket holds now
// (bus.Progress), or with an error when ctx is done first.
func (v *View) CatchUp(ctx context.Context, js jetstream.JetStream) error {
	return v.progress.CatchUp(ctx, js, bus.BucketApprovals)
}

// Follow keeps the view current until ctx is done, watching again when a
// watch ends (a NATS node lost, a reconnect).
func (v *View) Follow(ctx context.Context, js jetstream.JetStream) error {
	return bus.Follow{Bucket: bus.BucketApprovals, OnStale: v.setStale}.Run(ctx, js, v.ready, v.apply)
}

// MaxCommandExcerpt bounds the command text an approval request keeps,
// and so the command a request may be opened for: an approver is shown the
// whole of what the approval runs.
const MaxCommandExcerpt = 16 << 10

// Excerpt cuts a command to MaxCommandExcerpt bytes at a character
// boundary: a request keeps an excerpt (bound to the whole command by its
// hash), so no client makes the view every session reads large.
func Excerpt(cmd string) string {
	if len(cmd) <= MaxCommandExcerpt {
		return cmd
	}
	cut := MaxCommandExcerpt
	for cut > 0 && !utf8.RuneStart(cmd[cut]) {
		cut--
	}
	return cmd[:cut]
}
