// Package config reads sluice.yaml, the one declarative configuration file:
// the identity provider, targets with credential references, approver
// groups and the policy rules (with masking). It checks the file's shape and
// keeps the line and column of every rule so that later errors can point at
// them. It never resolves or prints a secret.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"sluice.dev/sluice/libs/claimmap"
	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
)

// File is a parsed sluice.yaml.
type File struct {
	OIDC      Providers       `yaml:"oidc"`
	Access    *Access         `yaml:"access"`
	Targets   []Target        `yaml:"targets"`
	Approvers []ApproverGroup `yaml:"approvers"`
	Policies  []Rule          `yaml:"policies"`
}

// OIDC configures token verification for one trusted issuer.
type OIDC struct {
	// Name identifies the provider; default "oidc" (or the issuer's host
	// when several are listed).
	Name                   string   `yaml:"name"`
	Issuer                 string   `yaml:"issuer"`
	Audience               string   `yaml:"audience"`
	GroupsClaim            string   `yaml:"groups_claim"`
	EmailClaim             string   `yaml:"email_claim"`
	MachineClaim           string   `yaml:"machine_claim"`
	Algorithms             []string `yaml:"algorithms"`
	RequireAccessTokenType bool     `yaml:"require_access_token_type"`
	JWKSRefreshInterval    string   `yaml:"jwks_refresh_interval"`
	// SubjectGroups gives listed subjects groups (a client-credentials
	// identity's sub is usually its client id).
	SubjectGroups map[string][]string `yaml:"subject_groups"`
	// GroupsExpression is CEL over `claims` returning a list of strings.
	GroupsExpression string `yaml:"groups_expression"`
	// AllowedGroups, when set, are the only groups this provider's tokens
	// may carry.
	AllowedGroups []string `yaml:"allowed_groups"`
	line          int
}

// Providers is the oidc section: one provider (a mapping) or several (a
// list), each a trusted issuer with its own audience and claim mapping.
type Providers []OIDC

// UnmarshalYAML accepts a mapping or a list, refusing unknown fields.
func (p *Providers) UnmarshalYAML(n *yaml.Node) error {
	items := []*yaml.Node{n}
	if n.Kind == yaml.SequenceNode {
		items = n.Content
	}
	for _, item := range items {
		if item.Kind != yaml.MappingNode {
			return fmt.Errorf("line %d: oidc holds a provider (issuer, audience, ...) or a list of them", item.Line)
		}
		if err := knownKeys(item, OIDC{}); err != nil {
			return err
		}
		var o OIDC
		if err := item.Decode(&o); err != nil {
			return err
		}
		o.line = item.Line
		*p = append(*p, o)
	}
	return nil
}

// knownKeys refuses mapping keys that v's yaml tags do not name (a nested
// Decode does not check them).
func knownKeys(n *yaml.Node, v any) error {
	known := map[string]bool{}
	t := reflect.TypeOf(v)
	for i := 0; i < t.NumField(); i++ {
		if tag := strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0]; tag != "" && tag != "-" {
			known[tag] = true
		}
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k := n.Content[i]; !known[k.Value] {
			return fmt.Errorf("line %d: field %s not found in type config.OIDC", k.Line, k.Value)
		}
	}
	return nil
}

// Access says which groups hold Sluice's own roles.
type Access struct {
	// Admins may apply configuration and see every approval.
	Admins []string `yaml:"admins"`
	// Auditors may read sessions, the audit log and every approval.
	Auditors []string `yaml:"auditors"`
	// GrantApprovers names the approver group (under approvers) that
	// decides grant requests.
	GrantApprovers string `yaml:"grant_approvers"`
}

// Secret references a credential; exactly one field is set.
type Secret struct {
	Env    string `yaml:"env"`
	File   string `yaml:"file"`
	Sealed string `yaml:"sealed"`
}

// Target is one registered target.
type Target struct {
	Name     string            `yaml:"name"`
	Kind     string            `yaml:"kind"`
	Labels   map[string]string `yaml:"labels"`
	Postgres *struct {
		Host     string  `yaml:"host"`
		Port     uint32  `yaml:"port"`
		Database string  `yaml:"database"`
		User     string  `yaml:"user"`
		Password *Secret `yaml:"password"`
		SSLMode  string  `yaml:"sslmode"`
		CAFile   string  `yaml:"ca_file"`
	} `yaml:"postgres"`
	SSH *struct {
		Host       string  `yaml:"host"`
		Port       uint32  `yaml:"port"`
		User       string  `yaml:"user"`
		PrivateKey *Secret `yaml:"private_key"`
		HostKey    string  `yaml:"host_key"`
	} `yaml:"ssh"`
	Kubernetes *struct {
		Server      string  `yaml:"server"`
		Token       *Secret `yaml:"token"`
		CAFile      string  `yaml:"ca_file"`
		Impersonate bool    `yaml:"impersonate"`
	} `yaml:"kubernetes"`
	line int
}

// ApproverGroup names who may approve.
type ApproverGroup struct {
	Name     string   `yaml:"name"`
	Groups   []string `yaml:"groups"`
	Subjects []string `yaml:"subjects"`
}

// Rule is one policy rule.
type Rule struct {
	Name      string   `yaml:"name"`
	Action    string   `yaml:"action"`
	When      string   `yaml:"when"`
	Reason    string   `yaml:"reason"`
	Approvers []string `yaml:"approvers"`
	Quorum    uint32   `yaml:"quorum"`
	Mask      *struct {
		Columns   []string `yaml:"columns"`
		Detectors []string `yaml:"detectors"`
		Action    string   `yaml:"action"`
		Keep      uint32   `yaml:"keep"`
		Derived   string   `yaml:"derived"`
	} `yaml:"mask"`
	// Line and Column locate the `when` expression's first character.
	Line, Column int `yaml:"-"`
}

// Error is a problem at a place in the file.
type Error struct {
	Line, Column int
	Rule         string
	Message      string
}

func (e Error) Error() string {
	var b strings.Builder
	if e.Line > 0 {
		fmt.Fprintf(&b, "line %d, column %d: ", e.Line, e.Column)
	}
	if e.Rule != "" {
		fmt.Fprintf(&b, "rule %q: ", e.Rule)
	}
	b.WriteString(e.Message)
	return b.String()
}

// Errors lists every problem found.
type Errors []Error

func (e Errors) Error() string {
	s := make([]string, len(e))
	for i, x := range e {
		s[i] = x.Error()
	}
	return strings.Join(s, "\n")
}

// ReadFile parses a file.
func ReadFile(path string) (*File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(b)
}

var (
	nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9_-]{0,62})$`)
	kinds  = map[string]bool{"postgres": true, "ssh": true, "kubernetes": true}
)

// Parse reads and checks a sluice.yaml. Unknown fields are errors.
func Parse(data []byte) (*File, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, Errors{{Message: err.Error()}}
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var f File
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			errs := make(Errors, 0, len(te.Errors))
			for _, m := range te.Errors {
				errs = append(errs, Error{Message: m})
			}
			return nil, errs
		}
		return nil, Errors{{Message: err.Error()}}
	}
	locate(&root, &f)
	if errs := f.check(); len(errs) > 0 {
		return nil, errs
	}
	return &f, nil
}

// locate records where each rule's `when` and each target starts.
func locate(root *yaml.Node, f *File) {
	if len(root.Content) == 0 {
		return
	}
	doc := root.Content[0]
	for i := 0; i+1 < len(doc.Content); i += 2 {
		key, val := doc.Content[i], doc.Content[i+1]
		switch key.Value {
		case "policies":
			for j, item := range val.Content {
				if j >= len(f.Policies) {
					break
				}
				f.Policies[j].Line, f.Policies[j].Column = item.Line, item.Column
				for k := 0; k+1 < len(item.Content); k += 2 {
					if item.Content[k].Value != "when" {
						continue
					}
					w := item.Content[k+1]
					line, col := w.Line, w.Column
					switch w.Style {
					case yaml.DoubleQuotedStyle, yaml.SingleQuotedStyle:
						col++
					case yaml.LiteralStyle, yaml.FoldedStyle:
						line++
						col = item.Content[k].Column + 2
					}
					f.Policies[j].Line, f.Policies[j].Column = line, col
				}
			}
		case "targets":
			for j, item := range val.Content {
				if j < len(f.Targets) {
					f.Targets[j].line = item.Line
				}
			}
		}
	}
}

func (f *File) check() Errors {
	var errs Errors
	names := map[string]bool{}
	for _, t := range f.Targets {
		bad := func(format string, args ...any) {
			errs = append(errs, Error{Line: t.line, Message: fmt.Sprintf("target %q: ", t.Name) + fmt.Sprintf(format, args...)})
		}
		if !nameRE.MatchString(t.Name) {
			bad("a target name is 1-63 lowercase letters, digits, '-' or '_'")
		}
		if names[t.Name] {
			bad("duplicate target")
		}
		names[t.Name] = true
		if !kinds[t.Kind] {
			bad("kind must be postgres, ssh or kubernetes")
			continue
		}
		endpoints := 0
		for _, set := range []bool{t.Postgres != nil, t.SSH != nil, t.Kubernetes != nil} {
			if set {
				endpoints++
			}
		}
		if endpoints != 1 {
			bad("give exactly one of postgres, ssh, kubernetes")
			continue
		}
		switch t.Kind {
		case "postgres":
			if t.Postgres == nil {
				bad("kind postgres needs a postgres section")
				continue
			}
			if t.Postgres.Host == "" || t.Postgres.Database == "" || t.Postgres.User == "" {
				bad("postgres needs host, database and user")
			}
			switch t.Postgres.SSLMode {
			case "", "disable", "require", "verify-ca", "verify-full":
			default:
				bad("sslmode must be disable, require, verify-ca or verify-full")
			}
			if err := t.Postgres.Password.check(); err != nil {
				bad("password: %v", err)
			}
		case "ssh":
			if t.SSH == nil {
				bad("kind ssh needs an ssh section")
				continue
			}
			if t.SSH.Host == "" || t.SSH.User == "" {
				bad("ssh needs host and user")
			}
			if err := t.SSH.PrivateKey.check(); err != nil {
				bad("private_key: %v", err)
			}
		case "kubernetes":
			if t.Kubernetes == nil {
				bad("kind kubernetes needs a kubernetes section")
				continue
			}
			if t.Kubernetes.Server == "" {
				bad("kubernetes needs server")
			}
			if err := t.Kubernetes.Token.check(); err != nil {
				bad("token: %v", err)
			}
		}
	}
	groups := map[string]bool{}
	for _, g := range f.Approvers {
		if !nameRE.MatchString(g.Name) {
			errs = append(errs, Error{Message: fmt.Sprintf("approver group %q: invalid name", g.Name)})
		}
		if len(g.Groups) == 0 && len(g.Subjects) == 0 {
			errs = append(errs, Error{Message: fmt.Sprintf("approver group %q: give groups or subjects", g.Name)})
		}
		groups[g.Name] = true
	}
	for _, r := range f.Policies {
		for _, a := range r.Approvers {
			if !groups[a] {
				errs = append(errs, Error{Line: r.Line, Column: r.Column, Rule: r.Name, Message: fmt.Sprintf("approver group %q is not defined under approvers", a)})
			}
		}
	}
	issuers, pnames := map[string]bool{}, map[string]bool{}
	for i, o := range f.OIDC {
		bad := func(format string, args ...any) {
			errs = append(errs, Error{Line: o.line, Message: "oidc: " + fmt.Sprintf(format, args...)})
		}
		if o.Issuer == "" || o.Audience == "" {
			bad("issuer and audience are required")
		}
		if issuers[o.Issuer] {
			bad("issuer %q is listed twice", o.Issuer)
		}
		issuers[o.Issuer] = true
		name := f.OIDC.name(i)
		if pnames[name] {
			bad("provider name %q is used twice", name)
		}
		pnames[name] = true
		if o.JWKSRefreshInterval != "" {
			if _, err := time.ParseDuration(o.JWKSRefreshInterval); err != nil {
				bad("jwks_refresh_interval: %v", err)
			}
		}
		if o.GroupsExpression != "" {
			if _, err := claimmap.Compile(o.GroupsExpression); err != nil {
				bad("%v", err)
			}
		}
		if o.AllowedGroups != nil && len(o.AllowedGroups) == 0 {
			bad("allowed_groups is empty: list the groups this provider may grant, or remove the key")
		}
	}
	if a := f.Access; a != nil {
		if len(a.Admins) == 0 {
			errs = append(errs, Error{Message: "access: name at least one admins group (an empty list would lock every admin out)"})
		}
		if a.GrantApprovers != "" && f.Approvers != nil && !groups[a.GrantApprovers] {
			errs = append(errs, Error{Message: fmt.Sprintf("access: grant_approvers %q is not defined under approvers", a.GrantApprovers)})
		}
	}
	return errs
}

// name is provider i's name.
func (p Providers) name(i int) string {
	if p[i].Name != "" {
		return p[i].Name
	}
	if len(p) == 1 {
		return "oidc"
	}
	return p[i].Issuer
}

func (s *Secret) check() error {
	if s == nil {
		return nil
	}
	n := 0
	for _, v := range []string{s.Env, s.File, s.Sealed} {
		if v != "" {
			n++
		}
	}
	if n != 1 {
		return errors.New("give exactly one of env, file, sealed (inline secrets are not accepted; seal them with `sluice secret seal`)")
	}
	return nil
}

// Proto converts a secret reference.
func (s *Secret) Proto(unseal func(string) ([]byte, error)) (*controlv1.Credential, error) {
	switch {
	case s == nil:
		return nil, nil
	case s.Env != "":
		return &controlv1.Credential{Source: &controlv1.Credential_Env{Env: s.Env}}, nil
	case s.File != "":
		return &controlv1.Credential{Source: &controlv1.Credential_File{File: s.File}}, nil
	default:
		b, err := unseal(s.Sealed)
		if err != nil {
			return nil, err
		}
		return &controlv1.Credential{Source: &controlv1.Credential_Sealed{Sealed: b}}, nil
	}
}
