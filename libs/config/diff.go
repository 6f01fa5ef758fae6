package config

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
)

// State is the configuration in force, as the control bucket holds it; a
// file is compared with it to say what applying the file changes.
type State struct {
	Targets   []*controlv1.TargetConfigured
	Rules     []*controlv1.Rule // nil: no policy applied
	Approvers []*controlv1.ApproverGroup
	Providers []*controlv1.IdentityProvider
	Access    *controlv1.AccessConfigured
}

// Sections of a diff.
const (
	SectionTargets   = "targets"
	SectionPolicies  = "policies"
	SectionMasking   = "masking"
	SectionApprovers = "approvers"
	SectionIdentity  = "identity"
	SectionAccess    = "access"
)

// Operations on an item.
const (
	OpAdded   = "added"
	OpChanged = "changed"
	OpRemoved = "removed"
)

// Change is one item a file adds, changes or removes. Summaries never hold
// a secret: a sealed credential is only said to have changed.
type Change struct {
	Section string
	Name    string
	Op      string
	// Fields are the fields that differ, for a changed item.
	Fields []string
	// Summary says in one line what the item is or what changes in it.
	Summary string
	// WhenDiff is a unified diff of a changed rule's `when`: lines that
	// start with "-", "+" or " ".
	WhenDiff []string
}

// Diff says what applying f changes in cur: each target the file names,
// the targets it does not name when prune is set, and each section the
// file holds (a section it leaves out is left as it is). It says the same
// as the control service's apply, which compares the same values.
func (f *File) Diff(cur State, prune bool) ([]Change, error) {
	specs, err := f.TargetSpecs()
	if err != nil {
		return nil, err
	}
	var out []Change
	out = append(out, diffTargets(cur.Targets, specs, prune)...)
	if f.Policies != nil {
		rules := f.RuleProtos()
		out = append(out, diffRules(cur.Rules, rules)...)
		out = append(out, diffMasks(cur.Rules, rules)...)
	}
	if f.Approvers != nil {
		groups, err := f.ApproverProtos(cur.Providers)
		if err != nil {
			return nil, err
		}
		out = append(out, diffApprovers(cur.Approvers, groups)...)
	}
	if ps := f.ProviderProtos(); ps != nil {
		out = append(out, diffProviders(cur.Providers, ps)...)
	}
	if a := f.AccessProto(); a != nil {
		out = append(out, diffAccess(cur.Access, a)...)
	}
	return out, nil
}

// fieldDiff gathers the fields of one item that differ.
type fieldDiff struct {
	fields []string
	parts  []string
}

// value records a field whose old and new values may be shown.
func (d *fieldDiff) value(name, old, new string) {
	if old == new {
		return
	}
	d.fields = append(d.fields, name)
	d.parts = append(d.parts, fmt.Sprintf("%s %s -> %s", name, orNone(old), orNone(new)))
}

// changed records a field whose values are too long or too secret to show.
func (d *fieldDiff) changed(name string, differ bool, note string) {
	if !differ {
		return
	}
	d.fields = append(d.fields, name)
	d.parts = append(d.parts, name+" "+note)
}

// list records a list field as what it gains and loses.
func (d *fieldDiff) list(name string, old, new []string) {
	if slices.Equal(old, new) {
		return
	}
	d.fields = append(d.fields, name)
	var p []string
	for _, x := range new {
		if !slices.Contains(old, x) {
			p = append(p, "+"+x)
		}
	}
	for _, x := range old {
		if !slices.Contains(new, x) {
			p = append(p, "-"+x)
		}
	}
	if len(p) == 0 {
		p = append(p, "reordered")
	}
	d.parts = append(d.parts, name+" "+strings.Join(p, " "))
}

func (d *fieldDiff) change(section, name string) (Change, bool) {
	if len(d.fields) == 0 {
		return Change{}, false
	}
	return Change{Section: section, Name: name, Op: OpChanged, Fields: d.fields, Summary: strings.Join(d.parts, "; ")}, true
}

func orNone(s string) string {
	if s == "" {
		return `""`
	}
	return s
}

// --- targets

func diffTargets(cur []*controlv1.TargetConfigured, next []*controlv1.TargetSpec, prune bool) []Change {
	byName := map[string]*controlv1.TargetConfigured{}
	for _, t := range cur {
		byName[t.GetSpec().GetName()] = t
	}
	var out []Change
	named := map[string]bool{}
	for _, spec := range next {
		named[spec.GetName()] = true
		old, ok := byName[spec.GetName()]
		if !ok {
			out = append(out, Change{Section: SectionTargets, Name: spec.GetName(), Op: OpAdded, Summary: describeTarget(spec)})
			continue
		}
		if c, ok := diffTarget(old.GetSpec(), spec); ok {
			out = append(out, c)
		}
	}
	if prune {
		for _, t := range cur {
			if name := t.GetSpec().GetName(); !named[name] {
				summary := describeTarget(t.GetSpec())
				if by := t.GetAppliedBy(); by != "" {
					summary += ", registered by " + by
				}
				out = append(out, Change{Section: SectionTargets, Name: name, Op: OpRemoved, Summary: summary + "; not in the file (--prune)"})
			}
		}
	}
	return out
}

// endpoint is a target's address and credential as comparable fields.
type endpoint struct {
	kind   string
	fields [][2]string // name, value, in a stable order
	cred   string
	secret *controlv1.Credential
}

func endpointOf(spec *controlv1.TargetSpec) endpoint {
	switch ep := spec.GetEndpoint().(type) {
	case *controlv1.TargetSpec_Postgres:
		p := ep.Postgres
		return endpoint{kind: "postgres", cred: "password", secret: p.GetPassword(), fields: [][2]string{
			{"host", p.GetHost()}, {"port", fmt.Sprint(p.GetPort())}, {"database", p.GetDatabase()}, {"user", p.GetUser()},
			{"sslmode", p.GetSslmode()}, {"ca_file", p.GetCaFile()}}}
	case *controlv1.TargetSpec_Ssh:
		s := ep.Ssh
		return endpoint{kind: "ssh", cred: "private_key", secret: s.GetPrivateKey(), fields: [][2]string{
			{"host", s.GetHost()}, {"port", fmt.Sprint(s.GetPort())}, {"user", s.GetUser()}, {"host_key", s.GetHostKey()}}}
	case *controlv1.TargetSpec_Kubernetes:
		k := ep.Kubernetes
		return endpoint{kind: "kubernetes", cred: "token", secret: k.GetToken(), fields: [][2]string{
			{"server", k.GetServer()}, {"ca_file", k.GetCaFile()}, {"impersonate", fmt.Sprint(k.GetImpersonate())}}}
	}
	return endpoint{}
}

// credential describes a credential reference; sealed values only as such.
func credential(c *controlv1.Credential) string {
	switch s := c.GetSource().(type) {
	case *controlv1.Credential_Env:
		return "env " + s.Env
	case *controlv1.Credential_File:
		return "file " + s.File
	case *controlv1.Credential_Sealed:
		return "(sealed)"
	}
	return "none"
}

func describeTarget(spec *controlv1.TargetSpec) string {
	ep := endpointOf(spec)
	get := func(name string) string {
		for _, f := range ep.fields {
			if f[0] == name {
				return f[1]
			}
		}
		return ""
	}
	var where string
	switch ep.kind {
	case "postgres":
		where = fmt.Sprintf("%s@%s:%s/%s", get("user"), get("host"), get("port"), get("database"))
	case "ssh":
		where = fmt.Sprintf("%s@%s:%s", get("user"), get("host"), get("port"))
	case "kubernetes":
		where = get("server")
	}
	s := strings.TrimSpace(spec.GetKind() + " " + where)
	if ep.cred != "" {
		s += ", " + ep.cred + " " + credential(ep.secret)
	}
	return s
}

func diffTarget(old, new *controlv1.TargetSpec) (Change, bool) {
	var d fieldDiff
	d.value("kind", old.GetKind(), new.GetKind())
	d.value("labels", labels(old.GetLabels()), labels(new.GetLabels()))
	o, n := endpointOf(old), endpointOf(new)
	if o.kind != n.kind {
		d.changed("endpoint", true, fmt.Sprintf("%s -> %s", orNone(o.kind), orNone(n.kind)))
	} else {
		for i := range n.fields {
			d.value(n.fields[i][0], o.fields[i][1], n.fields[i][1])
		}
		oc, nc := credential(o.secret), credential(n.secret)
		switch {
		case oc != nc:
			d.value(n.cred, oc, nc)
		case !proto.Equal(o.secret, n.secret):
			// Both sealed: the ciphertext is never shown.
			d.changed(n.cred, true, "(sealed, changed)")
		}
	}
	return d.change(SectionTargets, new.GetName())
}

func labels(m map[string]string) string {
	keys := slices.Sorted(maps.Keys(m))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + m[k]
	}
	return strings.Join(parts, ",")
}

// --- policies and masking

func diffRules(cur, next []*controlv1.Rule) []Change {
	old := map[string]*controlv1.Rule{}
	for _, r := range cur {
		old[r.GetName()] = r
	}
	var out []Change
	named := map[string]bool{}
	for _, r := range next {
		named[r.GetName()] = true
		o, ok := old[r.GetName()]
		if !ok {
			out = append(out, Change{Section: SectionPolicies, Name: r.GetName(), Op: OpAdded, Summary: describeRule(r)})
			continue
		}
		var d fieldDiff
		d.value("action", o.GetAction(), r.GetAction())
		whenChanged := o.GetWhen() != r.GetWhen()
		d.changed("when", whenChanged, "changed")
		d.changed("reason", o.GetReason() != r.GetReason(), "changed")
		d.list("approvers", o.GetApprovers(), r.GetApprovers())
		d.value("quorum", fmt.Sprint(o.GetQuorum()), fmt.Sprint(r.GetQuorum()))
		if c, ok := d.change(SectionPolicies, r.GetName()); ok {
			if whenChanged {
				c.WhenDiff = lineDiff(o.GetWhen(), r.GetWhen())
			}
			out = append(out, c)
		}
	}
	for _, r := range cur {
		if !named[r.GetName()] {
			out = append(out, Change{Section: SectionPolicies, Name: r.GetName(), Op: OpRemoved, Summary: "was: " + describeRule(r)})
		}
	}
	// Rules of one action are tried in order: the first that matches names
	// the decision.
	var oldOrder, newOrder []string
	for _, r := range cur {
		if named[r.GetName()] {
			oldOrder = append(oldOrder, r.GetName())
		}
	}
	for _, r := range next {
		if _, ok := old[r.GetName()]; ok {
			newOrder = append(newOrder, r.GetName())
		}
	}
	if !slices.Equal(oldOrder, newOrder) {
		out = append(out, Change{Section: SectionPolicies, Name: "(order)", Op: OpChanged, Fields: []string{"order"}, Summary: "rules reordered"})
	}
	return out
}

func describeRule(r *controlv1.Rule) string {
	s := r.GetAction()
	if len(r.GetApprovers()) > 0 {
		s += " by " + strings.Join(r.GetApprovers(), ", ")
	}
	when := strings.Join(strings.Fields(r.GetWhen()), " ")
	if len(when) > 72 {
		when = when[:69] + "..."
	}
	return s + " when " + when
}

func diffMasks(cur, next []*controlv1.Rule) []Change {
	old := map[string]*controlv1.MaskRule{}
	for _, r := range cur {
		if r.GetMask() != nil {
			old[r.GetName()] = r.GetMask()
		}
	}
	var out []Change
	named := map[string]bool{}
	for _, r := range next {
		m := r.GetMask()
		if m == nil {
			continue
		}
		named[r.GetName()] = true
		o, ok := old[r.GetName()]
		if !ok {
			out = append(out, Change{Section: SectionMasking, Name: r.GetName(), Op: OpAdded, Summary: describeMask(m)})
			continue
		}
		var d fieldDiff
		d.list("columns", o.GetColumns(), m.GetColumns())
		d.list("detectors", o.GetDetectors(), m.GetDetectors())
		d.value("action", o.GetAction(), m.GetAction())
		d.value("keep", fmt.Sprint(o.GetKeep()), fmt.Sprint(m.GetKeep()))
		d.value("derived", o.GetDerived(), m.GetDerived())
		if c, ok := d.change(SectionMasking, r.GetName()); ok {
			out = append(out, c)
		}
	}
	for _, r := range cur {
		if r.GetMask() != nil && !named[r.GetName()] {
			out = append(out, Change{Section: SectionMasking, Name: r.GetName(), Op: OpRemoved, Summary: "was: " + describeMask(r.GetMask())})
		}
	}
	return out
}

func describeMask(m *controlv1.MaskRule) string {
	var parts []string
	if len(m.GetColumns()) > 0 {
		parts = append(parts, "columns "+strings.Join(m.GetColumns(), ", "))
	}
	if len(m.GetDetectors()) > 0 {
		parts = append(parts, "detectors "+strings.Join(m.GetDetectors(), ", "))
	}
	if m.GetAction() != "" {
		parts = append(parts, "action "+m.GetAction())
	}
	return strings.Join(parts, "; ")
}

// lineDiff is a compact unified diff of two texts, line by line.
func lineDiff(a, b string) []string {
	// A literal block's final line break is not part of the expression.
	x, y := strings.Split(strings.TrimRight(a, "\n"), "\n"), strings.Split(strings.TrimRight(b, "\n"), "\n")
	// Longest common subsequence; `when` expressions are a few lines.
	lcs := make([][]int, len(x)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(y)+1)
	}
	for i := len(x) - 1; i >= 0; i-- {
		for j := len(y) - 1; j >= 0; j-- {
			if x[i] == y[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var out []string
	i, j := 0, 0
	for i < len(x) || j < len(y) {
		switch {
		case i < len(x) && j < len(y) && x[i] == y[j]:
			out = append(out, " "+x[i])
			i, j = i+1, j+1
		case j < len(y) && (i == len(x) || lcs[i][j+1] >= lcs[i+1][j]):
			out = append(out, "+"+y[j])
			j++
		default:
			out = append(out, "-"+x[i])
			i++
		}
	}
	return compact(out)
}

// compact shows each changed run as its removals, then its additions, with
// at most one unchanged line around it.
func compact(lines []string) []string {
	near := func(k int) bool {
		for d := -1; d <= 1; d++ {
			if i := k + d; i >= 0 && i < len(lines) && lines[i][0] != ' ' {
				return true
			}
		}
		return false
	}
	var out []string
	for k := 0; k < len(lines); {
		if lines[k][0] == ' ' {
			switch {
			case near(k):
				out = append(out, lines[k])
			case len(out) == 0 || out[len(out)-1] != " ...":
				out = append(out, " ...")
			}
			k++
			continue
		}
		end := k
		for end < len(lines) && lines[end][0] != ' ' {
			end++
		}
		for _, op := range []byte{'-', '+'} {
			for _, l := range lines[k:end] {
				if l[0] == op {
					out = append(out, l)
				}
			}
		}
		k = end
	}
	return out
}

// --- approvers, identity, access

func diffApprovers(cur, next []*controlv1.ApproverGroup) []Change {
	old := map[string]*controlv1.ApproverGroup{}
	for _, g := range cur {
		old[g.GetName()] = g
	}
	var out []Change
	named := map[string]bool{}
	for _, g := range next {
		named[g.GetName()] = true
		o, ok := old[g.GetName()]
		if !ok {
			out = append(out, Change{Section: SectionApprovers, Name: g.GetName(), Op: OpAdded, Summary: describeGroup(g)})
			continue
		}
		var d fieldDiff
		d.list("groups", o.GetGroups(), g.GetGroups())
		d.list("subjects", o.GetSubjects(), g.GetSubjects())
		d.value("issuer", o.GetIssuer(), g.GetIssuer())
		if c, ok := d.change(SectionApprovers, g.GetName()); ok {
			out = append(out, c)
		}
	}
	for _, g := range cur {
		if !named[g.GetName()] {
			out = append(out, Change{Section: SectionApprovers, Name: g.GetName(), Op: OpRemoved, Summary: "was: " + describeGroup(g)})
		}
	}
	return out
}

func describeGroup(g *controlv1.ApproverGroup) string {
	var parts []string
	if len(g.GetGroups()) > 0 {
		parts = append(parts, "groups "+strings.Join(g.GetGroups(), ", "))
	}
	if len(g.GetSubjects()) > 0 {
		parts = append(parts, "subjects "+strings.Join(g.GetSubjects(), ", "))
	}
	if g.GetIssuer() != "" {
		parts = append(parts, "from "+g.GetIssuer())
	}
	return strings.Join(parts, "; ")
}

func providerName(p *controlv1.IdentityProvider) string {
	if p.GetName() != "" {
		return p.GetName()
	}
	return p.GetIssuer()
}

func diffProviders(cur, next []*controlv1.IdentityProvider) []Change {
	old := map[string]*controlv1.IdentityProvider{}
	for _, p := range cur {
		old[providerName(p)] = p
	}
	var out []Change
	named := map[string]bool{}
	var oldOrder, newOrder []string
	for _, p := range next {
		name := providerName(p)
		named[name] = true
		o, ok := old[name]
		if !ok {
			out = append(out, Change{Section: SectionIdentity, Name: name, Op: OpAdded, Summary: "issuer " + p.GetIssuer() + ", audience " + p.GetAudience()})
			continue
		}
		newOrder = append(newOrder, name)
		var d fieldDiff
		d.value("issuer", o.GetIssuer(), p.GetIssuer())
		d.value("audience", o.GetAudience(), p.GetAudience())
		d.value("groups_claim", o.GetGroupsClaim(), p.GetGroupsClaim())
		d.value("email_claim", o.GetEmailClaim(), p.GetEmailClaim())
		d.value("machine_claim", o.GetMachineClaim(), p.GetMachineClaim())
		d.list("algorithms", o.GetAlgorithms(), p.GetAlgorithms())
		d.value("require_access_token_type", fmt.Sprint(o.GetRequireAccessTokenType()), fmt.Sprint(p.GetRequireAccessTokenType()))
		d.value("jwks_refresh_interval", seconds(o.GetJwksRefreshIntervalSeconds()), seconds(p.GetJwksRefreshIntervalSeconds()))
		d.changed("subject_groups", !subjectGroupsEqual(o.GetSubjectGroups(), p.GetSubjectGroups()), "changed")
		d.changed("groups_expression", o.GetGroupsExpression() != p.GetGroupsExpression(), "changed")
		d.list("allowed_groups", o.GetAllowedGroups(), p.GetAllowedGroups())
		if c, ok := d.change(SectionIdentity, name); ok {
			out = append(out, c)
		}
	}
	for _, p := range cur {
		name := providerName(p)
		if !named[name] {
			out = append(out, Change{Section: SectionIdentity, Name: name, Op: OpRemoved, Summary: "was: issuer " + p.GetIssuer() + "; its tokens stop working"})
		} else {
			oldOrder = append(oldOrder, name)
		}
	}
	if !slices.Equal(oldOrder, newOrder) {
		out = append(out, Change{Section: SectionIdentity, Name: "(order)", Op: OpChanged, Fields: []string{"order"}, Summary: "providers reordered"})
	}
	return out
}

func seconds(s uint32) string {
	if s == 0 {
		return "default"
	}
	return fmt.Sprintf("%ds", s)
}

func subjectGroupsEqual(a, b map[string]*controlv1.GroupList) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		w, ok := b[k]
		if !ok || !slices.Equal(v.GetGroups(), w.GetGroups()) {
			return false
		}
	}
	return true
}

func diffAccess(cur, next *controlv1.AccessConfigured) []Change {
	if cur == nil {
		var parts []string
		parts = append(parts, "admins "+strings.Join(next.GetAdmins(), ", "))
		if len(next.GetAuditors()) > 0 {
			parts = append(parts, "auditors "+strings.Join(next.GetAuditors(), ", "))
		}
		if next.GetGrantApprovers() != "" {
			parts = append(parts, "grant_approvers "+next.GetGrantApprovers())
		}
		return []Change{{Section: SectionAccess, Name: SectionAccess, Op: OpAdded, Summary: strings.Join(parts, "; ")}}
	}
	var d fieldDiff
	d.list("admins", cur.GetAdmins(), next.GetAdmins())
	d.list("auditors", cur.GetAuditors(), next.GetAuditors())
	d.value("grant_approvers", cur.GetGrantApprovers(), next.GetGrantApprovers())
	if c, ok := d.change(SectionAccess, SectionAccess); ok {
		return []Change{c}
	}
	return nil
}

// Applied keeps the items of detail that the control service's answer
// says it changed (it compares the stored events; detail may have been
// computed from a view a moment behind), and adds an item with no detail
// for each change detail lacks. changes are the answer's kind, name and op
// per aggregate: target, policy, approvers, identity, access.
func Applied(detail []Change, changes []*controlv1.Change) []Change {
	type key struct{ kind, name string }
	ops := map[key]string{}
	for _, c := range changes {
		ops[key{c.GetKind(), c.GetName()}] = c.GetOp()
	}
	aggregate := func(c Change) key {
		switch c.Section {
		case SectionTargets:
			return key{"target", c.Name}
		case SectionPolicies, SectionMasking:
			return key{"policy", "default"}
		case SectionApprovers:
			return key{"approvers", "default"}
		case SectionIdentity:
			return key{"identity", "oidc"}
		}
		return key{"access", "default"}
	}
	var out []Change
	covered := map[key]bool{}
	for _, c := range detail {
		k := aggregate(c)
		if op, ok := ops[k]; ok && op != "unchanged" {
			out = append(out, c)
			covered[k] = true
		}
	}
	for _, c := range changes {
		k := key{c.GetKind(), c.GetName()}
		if c.GetOp() == "unchanged" || covered[k] {
			continue
		}
		item := Change{Op: OpChanged, Name: c.GetName()}
		switch c.GetOp() {
		case "created":
			item.Op = OpAdded
		case "removed":
			item.Op = OpRemoved
		}
		switch c.GetKind() {
		case "target":
			item.Section = SectionTargets
		case "policy":
			item.Section, item.Name = SectionPolicies, "(rules)"
		case "approvers":
			item.Section, item.Name = SectionApprovers, "(groups)"
		case "identity":
			item.Section = SectionIdentity
		case "access":
			item.Section, item.Name = SectionAccess, SectionAccess
		default:
			item.Section = c.GetKind()
		}
		out = append(out, item)
	}
	order := map[string]int{SectionTargets: 0, SectionPolicies: 1, SectionMasking: 2, SectionApprovers: 3, SectionIdentity: 4, SectionAccess: 5}
	slices.SortStableFunc(out, func(a, b Change) int { return order[a.Section] - order[b.Section] })
	return out
}
