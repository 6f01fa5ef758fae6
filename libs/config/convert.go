package config

import (
	"encoding/base64"
	"fmt"
	"slices"
	"time"

	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
)

// decodeSealed turns the text form of a sealed secret into bytes.
func decodeSealed(s string) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("sealed secret is not base64: %w", err)
	}
	return b, nil
}

// TargetSpecs converts the targets.
func (f *File) TargetSpecs() ([]*controlv1.TargetSpec, error) {
	out := make([]*controlv1.TargetSpec, 0, len(f.Targets))
	for _, t := range f.Targets {
		spec := &controlv1.TargetSpec{Name: t.Name, Kind: t.Kind, Labels: t.Labels}
		switch {
		case t.Postgres != nil:
			pw, err := t.Postgres.Password.Proto(decodeSealed)
			if err != nil {
				return nil, fmt.Errorf("target %s: %w", t.Name, err)
			}
			port := t.Postgres.Port
			if port == 0 {
				port = 5432
			}
			mode := t.Postgres.SSLMode
			if mode == "" {
				mode = "verify-full"
			}
			spec.Endpoint = &controlv1.TargetSpec_Postgres{Postgres: &controlv1.PostgresTarget{
				Host: t.Postgres.Host, Port: port, Database: t.Postgres.Database, User: t.Postgres.User,
				Password: pw, Sslmode: mode, CaFile: t.Postgres.CAFile,
			}}
		case t.SSH != nil:
			key, err := t.SSH.PrivateKey.Proto(decodeSealed)
			if err != nil {
				return nil, fmt.Errorf("target %s: %w", t.Name, err)
			}
			port := t.SSH.Port
			if port == 0 {
				port = 22
			}
			spec.Endpoint = &controlv1.TargetSpec_Ssh{Ssh: &controlv1.SSHTarget{
				Host: t.SSH.Host, Port: port, User: t.SSH.User, PrivateKey: key, HostKey: t.SSH.HostKey,
			}}
		case t.Kubernetes != nil:
			tok, err := t.Kubernetes.Token.Proto(decodeSealed)
			if err != nil {
				return nil, fmt.Errorf("target %s: %w", t.Name, err)
			}
			spec.Endpoint = &controlv1.TargetSpec_Kubernetes{Kubernetes: &controlv1.KubernetesTarget{
				Server: t.Kubernetes.Server, Token: tok, CaFile: t.Kubernetes.CAFile, Impersonate: t.Kubernetes.Impersonate,
			}}
		}
		out = append(out, spec)
	}
	return out, nil
}

// RuleProtos converts the policy rules.
func (f *File) RuleProtos() []*controlv1.Rule {
	out := make([]*controlv1.Rule, 0, len(f.Policies))
	for _, r := range f.Policies {
		pr := &controlv1.Rule{
			Name: r.Name, Action: r.Action, When: r.When, Reason: r.Reason,
			Approvers: r.Approvers, Quorum: r.Quorum, Line: int32(r.Line), Column: int32(r.Column),
		}
		if r.Mask != nil {
			pr.Mask = &controlv1.MaskRule{Columns: r.Mask.Columns, Detectors: r.Mask.Detectors, Action: r.Mask.Action, Keep: r.Mask.Keep, Derived: r.Mask.Derived}
		}
		out = append(out, pr)
	}
	return out
}

// ApproverProtos converts the approver groups against the identity
// providers in force once the file is applied: its own oidc section, or
// applied (the providers of the configuration in force) when it has none.
// Each group's provider is named by its issuer; the groups are checked as
// CheckApprovers does.
func (f *File) ApproverProtos(applied []*controlv1.IdentityProvider) ([]*controlv1.ApproverGroup, error) {
	providers := f.ProviderProtos()
	if providers == nil {
		providers = applied
	}
	out := make([]*controlv1.ApproverGroup, 0, len(f.Approvers))
	for _, g := range f.Approvers {
		pg := &controlv1.ApproverGroup{Name: g.Name, Groups: g.Groups, Subjects: g.Subjects}
		if g.Provider != "" {
			for _, p := range providers {
				if g.Provider == p.GetName() || g.Provider == p.GetIssuer() {
					pg.Issuer = p.GetIssuer()
				}
			}
			if pg.Issuer == "" {
				return nil, fmt.Errorf("approver group %q: provider %q is not one of the identity providers (give its name or its issuer)", g.Name, g.Provider)
			}
		}
		out = append(out, pg)
	}
	return out, CheckApprovers(out, providers)
}

// CheckApprovers refuses approver groups that could count someone by
// another issuer's subject: with several identity providers, a group that
// lists subjects must name the provider they come from, and a group's
// provider must be one of them.
func CheckApprovers(groups []*controlv1.ApproverGroup, providers []*controlv1.IdentityProvider) error {
	for _, g := range groups {
		switch {
		case g.GetIssuer() != "" && !slices.ContainsFunc(providers, func(p *controlv1.IdentityProvider) bool { return p.GetIssuer() == g.GetIssuer() }):
			return fmt.Errorf("approver group %q counts members of %s, which would no longer be an identity provider; apply the approvers with it", g.GetName(), g.GetIssuer())
		case g.GetIssuer() == "" && len(g.GetSubjects()) > 0 && len(providers) > 1:
			return fmt.Errorf("approver group %q: with several identity providers, say which one its subjects come from (provider: NAME): a subject or an email names someone only within its issuer", g.GetName())
		}
	}
	return nil
}

// ProviderProtos converts the oidc section; nil if absent.
func (f *File) ProviderProtos() []*controlv1.IdentityProvider {
	if f.OIDC == nil {
		return nil
	}
	out := make([]*controlv1.IdentityProvider, 0, len(f.OIDC))
	for i, o := range f.OIDC {
		var refresh uint32
		if d, err := time.ParseDuration(o.JWKSRefreshInterval); err == nil {
			refresh = uint32(d.Seconds())
		}
		p := &controlv1.IdentityProvider{
			Name:   f.OIDC.name(i),
			Issuer: o.Issuer, Audience: o.Audience, GroupsClaim: o.GroupsClaim, EmailClaim: o.EmailClaim,
			MachineClaim: o.MachineClaim, Algorithms: o.Algorithms, RequireAccessTokenType: o.RequireAccessTokenType,
			JwksRefreshIntervalSeconds: refresh, GroupsExpression: o.GroupsExpression, AllowedGroups: o.AllowedGroups,
		}
		for sub, groups := range o.SubjectGroups {
			if p.SubjectGroups == nil {
				p.SubjectGroups = map[string]*controlv1.GroupList{}
			}
			p.SubjectGroups[sub] = &controlv1.GroupList{Groups: groups}
		}
		out = append(out, p)
	}
	return out
}

// AccessProto converts the access section; nil if absent.
func (f *File) AccessProto() *controlv1.AccessConfigured {
	if f.Access == nil {
		return nil
	}
	return &controlv1.AccessConfigured{Admins: f.Access.Admins, Auditors: f.Access.Auditors, GrantApprovers: f.Access.GrantApprovers}
}
