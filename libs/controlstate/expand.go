package controlstate

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	"sluice.dev/sluice/libs/eventstore"
	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
)

// CONTROL's aggregates and their events (see controlv1.ConfigApplied for
// the schemas).
const (
	// AggregateConfig holds schema 2: one "applied" event per apply.
	AggregateConfig = "config"
	// ConfigID is the config aggregate's only id.
	ConfigID = "current"
	// EventApplied is the config aggregate's event.
	EventApplied = "applied"
	// ConfigSchema is the schema ConfigApplied events are written with.
	ConfigSchema = 2

	// Schema 1 aggregates, one per piece; an apply's pieces expand to them.
	AggregateTarget    = "target"
	AggregatePolicy    = "policy"
	AggregateApprovers = "approvers"
	AggregateIdentity  = "identity"
	AggregateAccess    = "access"
	// Singleton is the id of the aggregates that have one instance.
	Singleton = "default"
)

// Expand returns the pieces an event of CONTROL stands for, each as the
// schema-1 event of its own aggregate: a config.applied event gives one per
// change (ids <event id>.<n>, sequence and time its own), any other event
// is itself. Projections, the fold and the SIEM export read CONTROL
// through it, so both schemas fold alike.
func Expand(e eventstore.Event) ([]eventstore.Event, error) {
	if e.Aggregate != AggregateConfig {
		return []eventstore.Event{e}, nil
	}
	if e.Name != EventApplied {
		return nil, nil
	}
	var ca controlv1.ConfigApplied
	if err := e.Decode(&ca); err != nil {
		return nil, fmt.Errorf("control event %s: %w", e.ID, err)
	}
	out := make([]eventstore.Event, 0, len(ca.GetChanges()))
	for i, c := range ca.GetChanges() {
		var agg, id, name string
		var msg proto.Message
		switch ch := c.GetChange().(type) {
		case *controlv1.ConfigChange_TargetConfigured:
			agg, id, name, msg = AggregateTarget, ch.TargetConfigured.GetSpec().GetName(), "configured", ch.TargetConfigured
		case *controlv1.ConfigChange_TargetRemoved:
			agg, id, name, msg = AggregateTarget, ch.TargetRemoved.GetName(), "removed", ch.TargetRemoved
		case *controlv1.ConfigChange_PolicyApplied:
			agg, id, name, msg = AggregatePolicy, Singleton, "applied", ch.PolicyApplied
		case *controlv1.ConfigChange_ApproversSet:
			agg, id, name, msg = AggregateApprovers, Singleton, "set", ch.ApproversSet
		case *controlv1.ConfigChange_IdentityConfigured:
			agg, id, name, msg = AggregateIdentity, Singleton, "configured", ch.IdentityConfigured
		case *controlv1.ConfigChange_AccessConfigured:
			agg, id, name, msg = AggregateAccess, Singleton, "configured", ch.AccessConfigured
		default:
			return nil, fmt.Errorf("control event %s: change %d of an unknown kind (a newer schema?)", e.ID, i)
		}
		data, err := proto.Marshal(msg)
		if err != nil {
			return nil, err
		}
		out = append(out, eventstore.Event{ID: fmt.Sprintf("%s.%d", e.ID, i), Type: string(msg.ProtoReflect().Descriptor().FullName()),
			Aggregate: agg, AggregateID: id, Name: name, Data: data, Time: e.Time, Sequence: e.Sequence, Version: e.Version})
	}
	return out, nil
}

// Change wraps one piece of an apply.
func Change(m proto.Message) *controlv1.ConfigChange {
	switch v := m.(type) {
	case *controlv1.TargetConfigured:
		return &controlv1.ConfigChange{Change: &controlv1.ConfigChange_TargetConfigured{TargetConfigured: v}}
	case *controlv1.TargetRemoved:
		return &controlv1.ConfigChange{Change: &controlv1.ConfigChange_TargetRemoved{TargetRemoved: v}}
	case *controlv1.PolicySetApplied:
		return &controlv1.ConfigChange{Change: &controlv1.ConfigChange_PolicyApplied{PolicyApplied: v}}
	case *controlv1.ApproverGroupsSet:
		return &controlv1.ConfigChange{Change: &controlv1.ConfigChange_ApproversSet{ApproversSet: v}}
	case *controlv1.IdentityProviderConfigured:
		return &controlv1.ConfigChange{Change: &controlv1.ConfigChange_IdentityConfigured{IdentityConfigured: v}}
	case *controlv1.AccessConfigured:
		return &controlv1.ConfigChange{Change: &controlv1.ConfigChange_AccessConfigured{AccessConfigured: v}}
	}
	panic(fmt.Sprintf("controlstate: %T is not a piece of the configuration", m))
}
