package api

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"

	"sluice.dev/sluice/libs/authz"
	"sluice.dev/sluice/libs/bus"
	commonv1 "sluice.dev/sluice/proto/sluice/common/v1"
	policyv1 "sluice.dev/sluice/proto/sluice/policy/v1"
)

func (s *Server) policyRoutes() {
	s.handle("POST /api/v1/policy/test", "policy_test", role(authz.PolicyReader), s.policyTest)
}

// PolicyTestRequest asks how the policy rules on a command for a principal.
type PolicyTestRequest struct {
	Subject string   `json:"subject"`
	Email   string   `json:"email,omitempty"`
	Groups  []string `json:"groups"`
	Machine bool     `json:"machine"`
	Target  string   `json:"target"`
	SQL     string   `json:"sql"`
}

// DecisionJSON is a decision as the API shows it.
type DecisionJSON struct {
	Action     string          `json:"action"`
	Rule       string          `json:"rule"`
	Reason     string          `json:"reason"`
	Revision   uint64          `json:"revision"`
	Approvers  []string        `json:"approvers,omitempty"`
	Quorum     uint32          `json:"quorum,omitempty"`
	Masks      []MaskJSON      `json:"masks,omitempty"`
	Statements []StatementJSON `json:"statements,omitempty"`
	Cacheable  bool            `json:"cacheable"`
}

// MaskJSON is a mask rule that applies.
type MaskJSON struct {
	Columns   []string `json:"columns,omitempty"`
	Detectors []string `json:"detectors,omitempty"`
	Action    string   `json:"action"`
}

// StatementJSON is what the classifier found in one statement.
type StatementJSON struct {
	Kind      string   `json:"kind"`
	Command   string   `json:"command"`
	Reads     []string `json:"reads,omitempty"`
	Writes    []string `json:"writes,omitempty"`
	Functions []string `json:"functions,omitempty"`
	Flags     []string `json:"flags,omitempty"`
}

// DecisionToJSON converts a decision.
func DecisionToJSON(d *policyv1.Decision) DecisionJSON {
	out := DecisionJSON{Action: d.GetAction(), Rule: d.GetRule(), Reason: d.GetReason(), Revision: d.GetRevision(), Cacheable: d.GetCache().GetCacheable()}
	if d.GetAction() == "review" {
		out.Approvers, out.Quorum = d.GetApprovers(), d.GetQuorum()
	}
	for _, m := range d.GetMasks() {
		out.Masks = append(out.Masks, MaskJSON{Columns: m.GetColumns(), Detectors: m.GetDetectors(), Action: m.GetAction()})
	}
	for _, st := range d.GetStatements() {
		out.Statements = append(out.Statements, StatementJSON{Kind: st.GetKind(), Command: st.GetCommand(), Reads: st.GetReads(), Writes: st.GetWrites(), Functions: st.GetFunctions(), Flags: st.GetFlags()})
	}
	return out
}

func (s *Server) policyTest(w http.ResponseWriter, r *http.Request, _ *commonv1.Principal) {
	var req PolicyTestRequest
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	if err == nil {
		err = json.Unmarshal(body, &req)
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", "send JSON {subject, groups, machine, target, sql}")
		return
	}
	if strings.TrimSpace(req.Subject) == "" || req.Target == "" {
		writeError(w, http.StatusBadRequest, "bad_request", "subject and target are required")
		return
	}
	ereq := &policyv1.EvaluateRequest{
		Principal: &commonv1.Principal{Subject: req.Subject, Email: req.Email, Groups: req.Groups, Machine: req.Machine},
		Target:    &commonv1.Target{Name: req.Target},
		Command:   &policyv1.EvaluateRequest_Sql{Sql: &policyv1.SQLCommand{Text: req.SQL}},
	}
	var d policyv1.Decision
	if !s.call(w, r, bus.APIPolicyTest, ereq, &d) {
		return
	}
	if e := d.GetError(); e != nil {
		writeError(w, errorStatus(e.GetCode()), e.GetCode(), e.GetMessage())
		return
	}
	writeJSON(w, http.StatusOK, DecisionToJSON(&d))
}
