// Package config reads sluice.yaml, the one declarative configuration file:
// the identity provider, targets with credential references, approver
// groups and the policy rules (with masking). It checks the file's syntax
// and shape and reports every error at its line and column; it keeps where
// each rule's `when` is, character by character, so that errors found later
// in an expression point into the file (WhenPosition). Diff says what
// applying a file changes in the applied configuration. It never resolves
// or prints a secret.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"strconv"
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
	node          *yaml.Node
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
		o.node = item
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
	node           *yaml.Node
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
	node *yaml.Node
}

// ApproverGroup names who may approve.
type ApproverGroup struct {
	Name     string   `yaml:"name"`
	Groups   []string `yaml:"groups"`
	Subjects []string `yaml:"subjects"`
	// Provider names the identity provider (its name or issuer) whose
	// tokens the groups and subjects count in. Required for subjects when
	// several providers are trusted: a subject or an email means someone
	// only within its issuer.
	Provider string `yaml:"provider"`
	node     *yaml.Node
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
	node         *yaml.Node
	// whenAt locates each character of When in the file.
	whenAt []pos
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

// Parse reads and checks a sluice.yaml. Unknown fields are errors. Every
// error names the line and column it is about.
func Parse(data []byte) (*File, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, Errors{syntaxError(data, err)}
	}
	if errs := checkShape(&root); len(errs) > 0 {
		return nil, errs
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var f File
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		// checkShape refuses what decoding would; this is a fallback.
		var te *yaml.TypeError
		if errors.As(err, &te) {
			errs := make(Errors, 0, len(te.Errors))
			for _, m := range te.Errors {
				errs = append(errs, messageError(m))
			}
			return nil, errs
		}
		return nil, Errors{messageError(err.Error())}
	}
	locate(&root, &f, data)
	if errs := f.check(); len(errs) > 0 {
		return nil, errs
	}
	return &f, nil
}

var messageLineRE = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

// messageError turns a yaml.v3 message that starts with its line into an
// Error at that line.
func messageError(msg string) Error {
	if m := messageLineRE.FindStringSubmatch(msg); m != nil {
		n, _ := strconv.Atoi(m[1])
		return Error{Line: n, Message: m[2]}
	}
	return Error{Message: msg}
}

// pos is a place in the file: 1-based line and column.
type pos struct{ line, col int }

// at is where n starts; the zero pos for no node.
func at(n *yaml.Node) pos {
	if n == nil {
		return pos{}
	}
	return pos{n.Line, n.Column}
}

// value returns the value of key in the mapping n, nil if absent.
func value(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

// atKey is where key's value starts in the mapping n, else where n starts.
func atKey(n *yaml.Node, key string) pos {
	if v := value(n, key); v != nil {
		return at(v)
	}
	return at(n)
}

// locate records where each section, item and rule's `when` starts.
func locate(root *yaml.Node, f *File, data []byte) {
	if len(root.Content) == 0 {
		return
	}
	doc := root.Content[0]
	items := func(key string) []*yaml.Node {
		if v := value(doc, key); v != nil && v.Kind == yaml.SequenceNode {
			return v.Content
		}
		return nil
	}
	src := newSource(data)
	for j, item := range items("policies") {
		if j >= len(f.Policies) {
			break
		}
		r := &f.Policies[j]
		r.node = item
		r.Line, r.Column = item.Line, item.Column
		if w := value(item, "when"); w != nil && w.Kind == yaml.ScalarNode {
			r.whenAt = src.scalar(w, r.When)
			if len(r.whenAt) > 0 {
				r.Line, r.Column = r.whenAt[0].line, r.whenAt[0].col
			} else {
				r.Line, r.Column = w.Line, w.Column
			}
		}
	}
	for j, item := range items("targets") {
		if j < len(f.Targets) {
			f.Targets[j].node = item
		}
	}
	for j, item := range items("approvers") {
		if j < len(f.Approvers) {
			f.Approvers[j].node = item
		}
	}
	if f.Access != nil {
		f.Access.node = value(doc, "access")
	}
}

// WhenPosition locates in the file the character at line and column (both
// 1-based) of the `when` expression of rule i, for errors found in the
// expression. A place outside the expression gives its first character.
func (f *File) WhenPosition(i, line, column int) (int, int) {
	if i < 0 || i >= len(f.Policies) {
		return 0, 0
	}
	r := f.Policies[i]
	if len(r.whenAt) == 0 {
		return r.Line, r.Column
	}
	off, l, c := 0, 1, 1
	for _, ch := range r.When {
		if l > line || (l == line && c >= column) {
			break
		}
		off++
		if ch == '\n' {
			l, c = l+1, 1
		} else {
			c++
		}
	}
	off = min(off, len(r.whenAt)-1)
	p := r.whenAt[off]
	return p.line, p.col
}

func (f *File) check() Errors {
	var errs Errors
	names := map[string]bool{}
	for _, t := range f.Targets {
		bad := func(format string, args ...any) {
			p := at(t.node)
			errs = append(errs, Error{Line: p.line, Column: p.col, Message: fmt.Sprintf("target %q: ", t.Name) + fmt.Sprintf(format, args...)})
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
			p := atKey(g.node, "name")
			errs = append(errs, Error{Line: p.line, Column: p.col, Message: fmt.Sprintf("approver group %q: a name is 1-63 lowercase letters, digits, '-' or '_'", g.Name)})
		}
		if len(g.Groups) == 0 && len(g.Subjects) == 0 {
			p := at(g.node)
			errs = append(errs, Error{Line: p.line, Column: p.col, Message: fmt.Sprintf("approver group %q: give groups or subjects", g.Name)})
		}
		// With its own oidc section, a file says here which providers its
		// groups name (else the applied ones decide: ApproverProtos).
		switch {
		case f.OIDC != nil && g.Provider != "" && f.OIDC.issuerOf(g.Provider) == "":
			p := atKey(g.node, "provider")
			errs = append(errs, Error{Line: p.line, Column: p.col, Message: fmt.Sprintf("approver group %q: provider %q is not one of the oidc providers (give its name or its issuer)", g.Name, g.Provider)})
		case g.Provider == "" && len(g.Subjects) > 0 && len(f.OIDC) > 1:
			p := atKey(g.node, "subjects")
			errs = append(errs, Error{Line: p.line, Column: p.col, Message: fmt.Sprintf("approver group %q: with several oidc providers, say which one its subjects come from (provider: NAME): a subject or an email names someone only within its issuer", g.Name)})
		}
		groups[g.Name] = true
	}
	for _, r := range f.Policies {
		for i, a := range r.Approvers {
			if !groups[a] {
				p := atKey(r.node, "approvers")
				if v := value(r.node, "approvers"); v != nil && v.Kind == yaml.SequenceNode && i < len(v.Content) {
					p = at(v.Content[i])
				}
				errs = append(errs, Error{Line: p.line, Column: p.col, Rule: r.Name, Message: fmt.Sprintf("approver group %q is not defined under approvers", a)})
			}
		}
	}
	issuers, pnames := map[string]bool{}, map[string]bool{}
	for i, o := range f.OIDC {
		// badAt reports at key's value, or at the provider without one.
		badAt := func(key, format string, args ...any) {
			p := at(o.node)
			if key != "" {
				p = atKey(o.node, key)
			}
			errs = append(errs, Error{Line: p.line, Column: p.col, Message: "oidc: " + fmt.Sprintf(format, args...)})
		}
		if o.Issuer == "" || o.Audience == "" {
			badAt("", "issuer and audience are required")
		}
		if issuers[o.Issuer] {
			badAt("issuer", "issuer %q is listed twice", o.Issuer)
		}
		issuers[o.Issuer] = true
		name := f.OIDC.name(i)
		if pnames[name] {
			badAt("name", "provider name %q is used twice", name)
		}
		pnames[name] = true
		if o.JWKSRefreshInterval != "" {
			if _, err := time.ParseDuration(o.JWKSRefreshInterval); err != nil {
				badAt("jwks_refresh_interval", "jwks_refresh_interval: %v", err)
			}
		}
		if o.GroupsExpression != "" {
			if _, err := claimmap.Compile(o.GroupsExpression); err != nil {
				badAt("groups_expression", "%v", err)
			}
		}
		if o.AllowedGroups != nil && len(o.AllowedGroups) == 0 {
			badAt("allowed_groups", "allowed_groups is empty: list the groups this provider may grant, or remove the key")
		}
	}
	if a := f.Access; a != nil {
		if len(a.Admins) == 0 {
			p := atKey(a.node, "admins")
			errs = append(errs, Error{Line: p.line, Column: p.col, Message: "access: name at least one admins group (an empty list would lock every admin out)"})
		}
		if a.GrantApprovers != "" && f.Approvers != nil && !groups[a.GrantApprovers] {
			p := atKey(a.node, "grant_approvers")
			errs = append(errs, Error{Line: p.line, Column: p.col, Message: fmt.Sprintf("access: grant_approvers %q is not defined under approvers", a.GrantApprovers)})
		}
	}
	return errs
}

// issuerOf is the issuer of the provider named (by its name or its
// issuer) ref, or "".
func (p Providers) issuerOf(ref string) string {
	for i, o := range p {
		if ref == p.name(i) || ref == o.Issuer {
			return o.Issuer
		}
	}
	return ""
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
