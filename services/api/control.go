package api

import (
	"io"
	"net/http"

	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/config"
	"sluice.dev/sluice/libs/controlstate"
	commonv1 "sluice.dev/sluice/proto/sluice/common/v1"
	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
)

const maxConfigBytes = 4 << 20

func (s *Server) controlRoutes() {
	s.handle("POST /api/v1/apply", "apply", admins, s.apply)
	s.handle("GET /api/v1/targets", "targets", anyone, s.targets)
}

// ApplyResult is the JSON answer of POST /api/v1/apply.
type ApplyResult struct {
	// Changes say, per stored piece (a target, the policy, the approver
	// groups, the identity providers, the access section), whether the
	// apply created, updated, removed it or left it unchanged.
	Changes []Change `json:"changes"`
	// Diff says item by item what the apply adds, changes and removes.
	Diff           []DiffItem    `json:"diff"`
	DryRun         bool          `json:"dry_run,omitempty"`
	PolicyRevision uint64        `json:"policy_revision,omitempty"`
	Errors         []ConfigError `json:"errors,omitempty"`
	Error          string        `json:"error,omitempty"`
	Reason         string        `json:"reason,omitempty"`
}

// Change is one applied change.
type Change struct {
	Kind string `json:"kind"`
	Name string `json:"name"`
	Op   string `json:"op"`
}

// DiffItem is one item an apply adds, changes or removes: a target, a
// rule, a rule's masking, an approver group, an identity provider or the
// access section. It never holds a secret.
type DiffItem struct {
	// Section is targets, policies, masking, approvers, identity or access.
	Section string `json:"section"`
	Name    string `json:"name"`
	// Op is added, changed or removed.
	Op string `json:"op"`
	// Fields are the fields that differ, for a changed item.
	Fields  []string `json:"fields,omitempty"`
	Summary string   `json:"summary,omitempty"`
	// WhenDiff is a unified diff of a changed rule's `when`.
	WhenDiff []string `json:"when_diff,omitempty"`
}

// ConfigError locates a problem in the applied file.
type ConfigError struct {
	File    string `json:"file,omitempty"`
	Message string `json:"message"`
	Rule    string `json:"rule,omitempty"`
	Line    int32  `json:"line,omitempty"`
	Column  int32  `json:"column,omitempty"`
}

func (s *Server) apply(w http.ResponseWriter, r *http.Request, p *commonv1.Principal) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxConfigBytes))
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, "too_large", "the configuration is larger than 4 MiB")
		return
	}
	q := r.URL.Query()
	req := &controlv1.ApplyRequest{Config: body, FileName: q.Get("file"), DryRun: q.Get("dry_run") == "true", Prune: q.Get("prune") == "true"}
	// The item-by-item diff is taken against this server's view of the
	// applied configuration before the call; the control service's answer
	// says which pieces really changed (config.Applied).
	var detail []config.Change
	if f, err := config.Parse(body); err == nil {
		detail, _ = f.Diff(s.appliedState(), req.Prune)
	}
	var resp controlv1.ApplyResponse
	if !s.call(w, r, bus.APIControlApply, req, &resp) {
		return
	}
	out := ApplyResultFrom(&resp)
	out.DryRun = req.DryRun
	if resp.GetError() == nil {
		out.Diff = diffItems(config.Applied(detail, resp.GetChanges()))
	}
	for i := range out.Errors {
		out.Errors[i].File = req.GetFileName()
	}
	status := http.StatusOK
	if e := resp.GetError(); e != nil {
		switch e.GetCode() {
		case "apply_failed":
			status = http.StatusServiceUnavailable
		case "invalid_config", "invalid_policy":
			status = http.StatusUnprocessableEntity
		default:
			status = errorStatus(e.GetCode())
		}
	}
	writeJSON(w, status, out)
}

// appliedState is the configuration in force, as this server's view holds it.
func (s *Server) appliedState() config.State {
	st := config.State{Targets: s.view.Targets(), Approvers: s.view.Approvers().GetGroups(), Access: s.view.Access()}
	if p := s.view.Policy(); p != nil {
		st.Rules = p.GetRules()
	}
	if ev := s.view.IdentityProvider(); ev != nil {
		st.Providers = controlstate.Providers(ev)
	}
	return st
}

func diffItems(changes []config.Change) []DiffItem {
	out := make([]DiffItem, 0, len(changes))
	for _, c := range changes {
		out = append(out, DiffItem{Section: c.Section, Name: c.Name, Op: c.Op, Fields: c.Fields, Summary: c.Summary, WhenDiff: c.WhenDiff})
	}
	return out
}

// ApplyResultFrom converts the control service's answer. Its diff has an
// item per changed piece, without detail: only the HTTP API, which holds
// a view of the applied configuration, says what changed inside each.
func ApplyResultFrom(resp *controlv1.ApplyResponse) ApplyResult {
	out := ApplyResult{Changes: []Change{}, Diff: []DiffItem{}, PolicyRevision: resp.GetPolicyRevision()}
	for _, c := range resp.GetChanges() {
		out.Changes = append(out.Changes, Change{Kind: c.GetKind(), Name: c.GetName(), Op: c.GetOp()})
	}
	if resp.GetError() == nil {
		out.Diff = diffItems(config.Applied(nil, resp.GetChanges()))
	}
	for _, e := range resp.GetErrors() {
		out.Errors = append(out.Errors, ConfigError{Message: e.GetMessage(), Rule: e.GetRule(), Line: e.GetLine(), Column: e.GetColumn()})
	}
	if e := resp.GetError(); e != nil {
		out.Error, out.Reason = e.GetCode(), e.GetMessage()
	}
	return out
}

// TargetJSON is a target as the API shows it: never its credential.
type TargetJSON struct {
	Name       string            `json:"name"`
	Kind       string            `json:"kind"`
	Address    string            `json:"address"`
	Database   string            `json:"database,omitempty"`
	User       string            `json:"user,omitempty"`
	Credential string            `json:"credential"`
	Labels     map[string]string `json:"labels,omitempty"`
}

func (s *Server) targets(w http.ResponseWriter, r *http.Request, _ *commonv1.Principal) {
	var resp controlv1.ListTargetsResponse
	if !s.call(w, r, bus.APIControlTargets, &controlv1.ListTargetsRequest{}, &resp) {
		return
	}
	if e := resp.GetError(); e != nil {
		writeError(w, errorStatus(e.GetCode()), e.GetCode(), e.GetMessage())
		return
	}
	out := []TargetJSON{}
	for _, t := range resp.GetTargets() {
		out = append(out, TargetJSON{Name: t.GetName(), Kind: t.GetKind(), Address: t.GetAddress(), Database: t.GetDatabase(), User: t.GetUser(), Credential: t.GetCredential(), Labels: t.GetLabels()})
	}
	writeJSON(w, http.StatusOK, map[string]any{"targets": out})
}
