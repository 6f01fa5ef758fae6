package auditlog

import (
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"

	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
)

// breakGlass is who applies through the break-glass subject, which only
// the NATS admin identity may publish (the control service's actor name).
const breakGlass = "break-glass"

// controlFact maps a CONTROL event, one piece of an applied configuration:
// created (the aggregate's first event), updated, or removed.
func controlFact(f Fact, m proto.Message) ocsfEvent {
	activity, op := apiUpdate, "updated"
	switch {
	case f.Event.Name == "removed":
		activity, op = apiDelete, "removed"
	case f.Event.Version == 1:
		activity, op = apiCreate, "created"
	}
	config := map[string]any{"kind": f.Event.Aggregate, "name": f.Event.AggregateID, "op": op, "version": f.Event.Version}
	resource := map[string]any{"type": f.Event.Aggregate, "uid": f.Event.AggregateID, "name": f.Event.AggregateID,
		"version": strconv.FormatUint(f.Event.Version, 10)}
	var appliedBy, what string
	switch ev := m.(type) {
	case *controlv1.TargetConfigured:
		spec := ev.GetSpec()
		appliedBy = ev.GetAppliedBy()
		config["digest"], config["target_kind"] = ev.GetDigest(), spec.GetKind()
		if addr := targetAddress(spec); addr != "" {
			config["address"] = addr
		}
		if cred := credentialSource(spec); cred != "" {
			config["credential"] = cred
		}
		if len(spec.GetLabels()) > 0 {
			resource["labels"] = labels(spec.GetLabels())
		}
		resource["name"] = spec.GetName()
		what = fmt.Sprintf("%s target %s (%s)", op, spec.GetName(), spec.GetKind())
	case *controlv1.TargetRemoved:
		appliedBy = ev.GetAppliedBy()
		resource["name"] = ev.GetName()
		what = "removed target " + ev.GetName()
	case *controlv1.PolicySetApplied:
		appliedBy = ev.GetAppliedBy()
		rules := make([]map[string]any, len(ev.GetRules()))
		for i, r := range ev.GetRules() {
			rules[i] = map[string]any{"name": r.GetName(), "action": r.GetAction()}
		}
		config["revision"], config["digest"], config["rules"] = ev.GetRevision(), ev.GetDigest(), rules
		if ev.GetSourceFile() != "" {
			config["source_file"] = ev.GetSourceFile()
		}
		resource["name"], resource["version"] = "policy", strconv.FormatUint(ev.GetRevision(), 10)
		what = fmt.Sprintf("applied policy revision %d (%d rule(s))", ev.GetRevision(), len(ev.GetRules()))
		if ev.GetSourceFile() != "" {
			what += " from " + ev.GetSourceFile()
		}
	case *controlv1.ApproverGroupsSet:
		appliedBy = ev.GetAppliedBy()
		groups := make([]map[string]any, len(ev.GetGroups()))
		names := make([]string, len(ev.GetGroups()))
		for i, g := range ev.GetGroups() {
			groups[i] = map[string]any{"name": g.GetName(), "groups": g.GetGroups(), "subjects": g.GetSubjects()}
			names[i] = g.GetName()
		}
		config["digest"], config["groups"] = ev.GetDigest(), groups
		resource["name"] = "approver groups"
		what = fmt.Sprintf("set %d approver group(s): %s", len(names), strings.Join(names, ", "))
	case *controlv1.IdentityProviderConfigured:
		appliedBy = ev.GetAppliedBy()
		ps := ev.GetProviders()
		if len(ps) == 0 && ev.GetProvider() != nil {
			ps = []*controlv1.IdentityProvider{ev.GetProvider()}
		}
		providers := make([]map[string]any, len(ps))
		issuers := make([]string, len(ps))
		for i, p := range ps {
			providers[i] = map[string]any{"name": p.GetName(), "issuer": p.GetIssuer(), "audience": p.GetAudience()}
			issuers[i] = p.GetIssuer()
		}
		config["digest"], config["providers"] = ev.GetDigest(), providers
		resource["name"] = "identity providers"
		what = fmt.Sprintf("configured %d identity provider(s): %s", len(ps), strings.Join(issuers, ", "))
	case *controlv1.AccessConfigured:
		appliedBy = ev.GetAppliedBy()
		config["digest"], config["admins"], config["auditors"], config["grant_approvers"] = ev.GetDigest(), ev.GetAdmins(), ev.GetAuditors(), ev.GetGrantApprovers()
		resource["name"] = "access"
		what = fmt.Sprintf("configured access: admins %s, auditors %s, grant approvers %s",
			strings.Join(ev.GetAdmins(), ","), strings.Join(ev.GetAuditors(), ","), ev.GetGrantApprovers())
	default:
		return unknownFact(f, "not a configuration event")
	}
	operation, from, user := "control.config.apply", fromAPI, subjectUser(appliedBy)
	if appliedBy == breakGlass {
		operation, from = "control.config.breakglass", "admin"
		user = map[string]any{"uid": breakGlass, "name": breakGlass, "type_id": 2, "type": "Admin"}
	}
	e := factEvent(f, activity, "", operation, "control")
	e["actor"] = map[string]any{"user": user}
	e["src_endpoint"] = serviceEndpoint(from)
	e["resources"] = []map[string]any{resource}
	config["applied_by"] = appliedBy
	e.unmapped()["config"] = config
	e["message"] = fmt.Sprintf("%s %s", orUnknown(appliedBy), what)
	return e
}

// targetAddress is where a target is reached; never its credential.
func targetAddress(spec *controlv1.TargetSpec) string {
	switch ep := spec.GetEndpoint().(type) {
	case *controlv1.TargetSpec_Postgres:
		return net.JoinHostPort(ep.Postgres.GetHost(), strconv.Itoa(int(ep.Postgres.GetPort())))
	case *controlv1.TargetSpec_Ssh:
		return net.JoinHostPort(ep.Ssh.GetHost(), strconv.Itoa(int(ep.Ssh.GetPort())))
	case *controlv1.TargetSpec_Kubernetes:
		return ep.Kubernetes.GetServer()
	}
	return ""
}

// credentialSource says how a target's credential is held (env, file,
// sealed), never the credential.
func credentialSource(spec *controlv1.TargetSpec) string {
	var c *controlv1.Credential
	switch ep := spec.GetEndpoint().(type) {
	case *controlv1.TargetSpec_Postgres:
		c = ep.Postgres.GetPassword()
	case *controlv1.TargetSpec_Ssh:
		c = ep.Ssh.GetPrivateKey()
	case *controlv1.TargetSpec_Kubernetes:
		c = ep.Kubernetes.GetToken()
	}
	switch c.GetSource().(type) {
	case *controlv1.Credential_Env:
		return "env"
	case *controlv1.Credential_File:
		return "file"
	case *controlv1.Credential_Sealed:
		return "sealed"
	}
	return ""
}

func labels(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}
