package api

import (
	"io"
	"net/http"

	"sluice.dev/sluice/libs/bus"
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
	Changes        []Change      `json:"changes"`
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

// ConfigError locates a problem in the applied file.
type ConfigError struct {
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
	var resp controlv1.ApplyResponse
	if !s.call(w, r, bus.APIControlApply, req, &resp) {
		return
	}
	out := ApplyResultFrom(&resp)
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

// ApplyResultFrom converts the control service's answer.
func ApplyResultFrom(resp *controlv1.ApplyResponse) ApplyResult {
	out := ApplyResult{Changes: []Change{}, PolicyRevision: resp.GetPolicyRevision()}
	for _, c := range resp.GetChanges() {
		out.Changes = append(out.Changes, Change{Kind: c.GetKind(), Name: c.GetName(), Op: c.GetOp()})
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
