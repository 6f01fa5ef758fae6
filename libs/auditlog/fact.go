package auditlog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/controlstate"
	"sluice.dev/sluice/libs/eventstore"
	approvalsv1 "sluice.dev/sluice/proto/sluice/approvals/v1"
	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
)

// A Fact is an event of a control-plane stream: an approval request or
// grant and its decisions (APPROVALS), a configuration change (CONTROL).
// These happen outside any session, so they are not in AUDIT; a SIEM needs
// them beside it (who approved what, who changed the policy).
type Fact struct {
	// Stream is bus.StreamApprovals or bus.StreamControl.
	Stream string
	Event  eventstore.Event
}

// ErrNotAFact marks a message that is not an event of a control-plane
// stream.
var ErrNotAFact = errors.New("auditlog: not a control-plane event")

// factPrefixes are the subject prefixes of the control-plane streams.
var factPrefixes = map[string]string{bus.StreamApprovals: bus.SubjectApprovals, bus.StreamControl: bus.SubjectControl}

// DecodeFact reads one message of APPROVALS or CONTROL, as the event store
// wrote it (subject <prefix>.<aggregate>.<id>.<event>, type and version in
// headers, the event id as the message id).
func DecodeFact(m jetstream.Msg) (Fact, error) {
	md, err := m.Metadata()
	if err != nil {
		return Fact{}, err
	}
	prefix, ok := factPrefixes[md.Stream]
	if !ok || !strings.HasPrefix(m.Subject(), prefix+".") {
		return Fact{}, fmt.Errorf("%w: %s", ErrNotAFact, m.Subject())
	}
	parts := strings.Split(strings.TrimPrefix(m.Subject(), prefix+"."), ".")
	if len(parts) != 3 {
		return Fact{}, fmt.Errorf("%w: %s", ErrNotAFact, m.Subject())
	}
	id, ok := bus.DecodeToken(parts[1])
	if !ok {
		return Fact{}, fmt.Errorf("%w: %s", ErrNotAFact, m.Subject())
	}
	h := m.Headers()
	e := eventstore.Event{ID: h.Get(jetstream.MsgIDHeader), Type: h.Get(eventstore.HeaderType), Aggregate: parts[0], AggregateID: id,
		Name: parts[2], Data: m.Data(), Sequence: md.Sequence.Stream, Time: md.Timestamp}
	if v, err := strconv.ParseUint(h.Get(eventstore.HeaderVersion), 10, 64); err == nil {
		e.Version = v
	}
	if t, err := time.Parse(time.RFC3339Nano, h.Get(eventstore.HeaderTime)); err == nil {
		e.Time = t
	}
	if e.ID == "" {
		// Every event is appended with its id; a message without one still
		// gets a stable id.
		e.ID = fmt.Sprintf("%s-%d", strings.ToLower(md.Stream), e.Sequence)
	}
	return Fact{Stream: md.Stream, Event: e}, nil
}

// DecodeFacts reads one message of APPROVALS or CONTROL as the facts it
// holds: an apply stored whole (control's config.applied) gives one fact
// per piece it changed, as applies stored piece by piece did, so that a
// SIEM sees the same facts from either schema; an approval's retirement
// from the hot view gives none.
func DecodeFacts(m jetstream.Msg) ([]Fact, error) {
	f, err := DecodeFact(m)
	if err != nil {
		return nil, err
	}
	if f.Stream == bus.StreamApprovals && f.Event.Name == "retired" {
		// Housekeeping (out of the hot view into the history), not a
		// decision anyone made.
		return nil, nil
	}
	if f.Stream != bus.StreamControl {
		return []Fact{f}, nil
	}
	pieces, err := controlstate.Expand(f.Event)
	if err != nil {
		return nil, err
	}
	out := make([]Fact, len(pieces))
	for i, p := range pieces {
		out[i] = Fact{Stream: f.Stream, Event: p}
	}
	return out, nil
}

// Kind names a fact as "<stream>.<aggregate>.<event>", for example
// "approvals.request.approved" or "control.policy.applied".
func (f Fact) Kind() string {
	return strings.ToLower(f.Stream) + "." + f.Event.Aggregate + "." + f.Event.Name
}

// message decodes the fact's payload by its type.
func (f Fact) message() (proto.Message, error) {
	mt, err := protoregistry.GlobalTypes.FindMessageByName(protoreflect.FullName(f.Event.Type))
	if err != nil {
		return nil, fmt.Errorf("event %s: type %q: %w", f.Event.ID, f.Event.Type, err)
	}
	m := mt.New().Interface()
	if err := proto.Unmarshal(f.Event.Data, m); err != nil {
		return nil, fmt.Errorf("event %s: %w", f.Event.ID, err)
	}
	return m, nil
}

// FactJSON is the machine-readable form of a fact.
func FactJSON(f Fact) map[string]any {
	out := map[string]any{
		"stream":       f.Stream,
		"stream_seq":   f.Event.Sequence,
		"event_id":     f.Event.ID,
		"kind":         f.Kind(),
		"type":         f.Event.Type,
		"aggregate":    f.Event.Aggregate,
		"aggregate_id": f.Event.AggregateID,
		"version":      f.Event.Version,
		"time":         f.Event.Time,
	}
	if m, err := f.message(); err == nil {
		if b, err := marshal.Marshal(withoutCredentials(m)); err == nil {
			out["event"] = json.RawMessage(b)
		}
	}
	return out
}

// withoutCredentials drops a target's credential reference or sealed
// credential: neither belongs in a SIEM.
func withoutCredentials(m proto.Message) proto.Message {
	tc, ok := m.(*controlv1.TargetConfigured)
	if !ok {
		return m
	}
	tc = proto.Clone(tc).(*controlv1.TargetConfigured)
	switch ep := tc.GetSpec().GetEndpoint().(type) {
	case *controlv1.TargetSpec_Postgres:
		ep.Postgres.Password = nil
	case *controlv1.TargetSpec_Ssh:
		ep.Ssh.PrivateKey = nil
	case *controlv1.TargetSpec_Kubernetes:
		ep.Kubernetes.Token = nil
	}
	return tc
}

// Requests remembers what each approval request or grant asked for, so
// that a decision, which names only the request, is exported with its
// requester, target and command. It learns requests as they pass and
// looks up those opened before it started in APPROVALS.
type Requests struct {
	js jetstream.JetStream
	mu sync.Mutex
	m  map[string]*approvalsv1.Approval
}

// NewRequests returns an empty cache.
func NewRequests(js jetstream.JetStream) *Requests {
	return &Requests{js: js, m: map[string]*approvalsv1.Approval{}}
}

// Of returns what the request or grant of an APPROVALS fact asked for, or
// nil when it cannot be found.
func (r *Requests) Of(ctx context.Context, f Fact) *approvalsv1.Approval {
	if f.Stream != bus.StreamApprovals {
		return nil
	}
	if a := opening(f); a != nil {
		r.put(a)
		return a
	}
	r.mu.Lock()
	a, ok := r.m[f.Event.AggregateID]
	r.mu.Unlock()
	if ok {
		return a
	}
	first := map[string]string{"request": "opened", "grant": "requested"}[f.Event.Aggregate]
	if first == "" || r.js == nil {
		return nil
	}
	st, err := r.js.Stream(ctx, bus.StreamApprovals)
	if err != nil {
		return nil
	}
	raw, err := st.GetLastMsgForSubject(ctx, bus.Subject(bus.SubjectApprovals, f.Event.Aggregate, bus.Token(f.Event.AggregateID), first))
	if err != nil {
		return nil
	}
	a = opening(Fact{Stream: bus.StreamApprovals, Event: eventstore.Event{Type: raw.Header.Get(eventstore.HeaderType), Data: raw.Data}})
	if a != nil {
		r.put(a)
	}
	return a
}

func (r *Requests) put(a *approvalsv1.Approval) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.m) > 100000 {
		r.m = map[string]*approvalsv1.Approval{}
	}
	r.m[a.GetId()] = a
}

// opening is what a request's or grant's first event asked for; nil for
// any other event.
func opening(f Fact) *approvalsv1.Approval {
	switch f.Event.Type {
	case "sluice.approvals.v1.RequestOpened":
		var m approvalsv1.RequestOpened
		if proto.Unmarshal(f.Event.Data, &m) != nil {
			return nil
		}
		return &approvalsv1.Approval{Id: m.GetId(), Type: "command", Requester: m.GetRequester(), SessionId: m.GetSessionId(),
			Target: m.GetTarget(), Command: m.GetCommand(), CommandHash: m.GetCommandHash(), CommandSize: m.GetCommandSize(),
			Rule: m.GetRule(), Reason: m.GetReason(), ApproverGroups: m.GetApproverGroups(), Quorum: m.GetQuorum(),
			CreatedAt: m.GetOpenedAt(), ExpiresAt: m.GetExpiresAt()}
	case "sluice.approvals.v1.GrantRequested":
		var m approvalsv1.GrantRequested
		if proto.Unmarshal(f.Event.Data, &m) != nil {
			return nil
		}
		return &approvalsv1.Approval{Id: m.GetId(), Type: "grant", Requester: m.GetRequester(), Target: m.GetTarget(), Role: m.GetRole(),
			Reason: m.GetReason(), ApproverGroups: m.GetApproverGroups(), Quorum: m.GetQuorum(), DurationSeconds: m.GetDurationSeconds(),
			CreatedAt: m.GetRequestedAt()}
	}
	return nil
}

// OCSFFact maps a control-plane fact to an OCSF API Activity (6003): the
// call that made it (approvals.request.decide, control.config.apply, ...),
// its actor (the approver, the requester, whoever applied the
// configuration) and the resource it changed. request is what the approval
// request or grant asked for (see Requests); nil for configuration changes
// or when unknown.
func OCSFFact(f Fact, request *approvalsv1.Approval) map[string]any {
	m, err := f.message()
	if err != nil {
		return unknownFact(f, err.Error())
	}
	if f.Stream == bus.StreamControl {
		return controlFact(f, m)
	}
	return approvalFact(f, m, request)
}

// unknownFact exports an event this version cannot read rather than drop
// it.
func unknownFact(f Fact, why string) ocsfEvent {
	e := factEvent(f, activityOther, "Unknown event", strings.ToLower(f.Stream)+"."+f.Event.Aggregate+"."+f.Event.Name, "")
	e["actor"] = map[string]any{"user": unknownUser()}
	e["src_endpoint"] = serviceEndpoint(strings.ToLower(f.Stream))
	e["message"] = fmt.Sprintf("%s event %s of %s %s: %s", f.Stream, f.Event.Type, f.Event.Aggregate, f.Event.AggregateID, why)
	return e
}

// factEvent starts the API Activity of a fact.
func factEvent(f Fact, activity int, activityName, operation, service string) ocsfEvent {
	logName, provider := logControl, "control"
	if f.Stream == bus.StreamApprovals {
		logName, provider = logApprovals, "approvals"
	}
	if service == "" {
		service = provider
	}
	e := newEvent(apiActivity, activity, activityName, f.Event.Time, f.Event.ID, logName, provider)
	md := e.metadata()
	md["correlation_uid"] = f.Event.AggregateID
	md["sequence"] = f.Event.Version
	e["api"] = map[string]any{"operation": operation, "service": map[string]any{"name": service}}
	u := e.unmapped()
	u["stream"], u["stream_seq"], u["event_type"] = f.Stream, f.Event.Sequence, f.Event.Type
	return e
}
