package api

import (
	"cmp"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"

	"sluice.dev/sluice/libs/authz"
	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/masking"
	commonv1 "sluice.dev/sluice/proto/sluice/common/v1"
	policyv1 "sluice.dev/sluice/proto/sluice/policy/v1"
)

func (s *Server) policyRoutes() {
	s.handle("POST /api/v1/policy/test", "policy_test", role(authz.PolicyReader), s.policyTest)
}

// PolicyTestRequest asks how the policy rules on a command for a principal.
type PolicyTestRequest struct {
	Subject string `json:"subject"`
	// Issuer defaults to the caller's own.
	Issuer  string   `json:"issuer,omitempty"`
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
	Masking    *MaskingJSON    `json:"masking,omitempty"`
	Statements []StatementJSON `json:"statements,omitempty"`
	Cacheable  bool            `json:"cacheable"`
}

// MaskingJSON says what the worker would mask in the results for this
// principal on this target: nil when no mask rule applies.
type MaskingJSON struct {
	// Columns are the table and view columns masked wherever a result
	// comes from them.
	Columns []string `json:"columns"`
	// Detectors run on every text value of every result.
	Detectors []string `json:"detectors"`
	Action    string   `json:"action"`
	// Derived says what happens to a value computed from a masked column:
	// mask (the default) or refuse the statement.
	Derived string `json:"derived"`
	// Results are the statements that return rows, with the masked
	// columns their results come from.
	Results []ResultMaskingJSON `json:"results,omitempty"`
}

// ResultMaskingJSON is the masking of one statement's results, by the
// lineage the classifier found. The worker also follows views and
// schema-qualified names through the database's catalog, which this does
// not see.
type ResultMaskingJSON struct {
	// Statement is the statement's 1-based position in the SQL string.
	Statement int `json:"statement"`
	// Columns are the result columns in order, when the classifier lines
	// them up with their sources.
	Columns []ResultColumnJSON `json:"columns,omitempty"`
	// MaskedSources are the masked columns the results read, when the
	// columns cannot be lined up (SELECT *).
	MaskedSources []string `json:"masked_sources,omitempty"`
}

// ResultColumnJSON is one result column.
type ResultColumnJSON struct {
	Position int      `json:"position"`
	Sources  []string `json:"sources"`
	// MaskedBy are the masked columns the value comes from; empty when
	// only the detectors apply to it.
	MaskedBy []string `json:"masked_by,omitempty"`
	// UnknownOrigin is set when some of the value's origin cannot be
	// followed: the worker masks it as derived.
	UnknownOrigin bool `json:"unknown_origin,omitempty"`
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
	// Columns are the column references as written.
	Columns []string `json:"columns,omitempty"`
	// Targets are, per result column, its sources ("rel.col", "rel.*",
	// "?" for an origin that cannot be followed).
	Targets [][]string `json:"targets,omitempty"`
	// Sources are every source of every result value.
	Sources []string `json:"sources,omitempty"`
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
		sj := StatementJSON{Kind: st.GetKind(), Command: st.GetCommand(), Reads: st.GetReads(), Writes: st.GetWrites(),
			Functions: st.GetFunctions(), Flags: st.GetFlags(), Columns: st.GetColumns(), Sources: st.GetSources()}
		for _, t := range st.GetTargets() {
			sj.Targets = append(sj.Targets, t.GetColumns())
		}
		out.Statements = append(out.Statements, sj)
	}
	out.Masking = maskingOf(d)
	return out
}

// maskingOf summarizes what the decision's mask rules mask, as the worker
// combines them: every rule's columns, every rule's detectors (all of them
// when no rule names any), the first rule's action.
func maskingOf(d *policyv1.Decision) *MaskingJSON {
	if len(d.GetMasks()) == 0 {
		return nil
	}
	m := &MaskingJSON{Columns: []string{}, Detectors: []string{}, Derived: "mask"}
	for i, r := range d.GetMasks() {
		if i == 0 {
			m.Action = r.GetAction()
		}
		if r.GetDerived() == "refuse" {
			m.Derived = "refuse"
		}
		for _, c := range r.GetColumns() {
			if c = strings.ToLower(c); !slices.Contains(m.Columns, c) {
				m.Columns = append(m.Columns, c)
			}
		}
		for _, det := range r.GetDetectors() {
			if !slices.Contains(m.Detectors, det) {
				m.Detectors = append(m.Detectors, det)
			}
		}
	}
	if len(m.Detectors) == 0 {
		m.Detectors = masking.Detectors()
	}
	for i, st := range d.GetStatements() {
		r := ResultMaskingJSON{Statement: i + 1}
		switch {
		case len(st.GetTargets()) > 0:
			for j, t := range st.GetTargets() {
				col := ResultColumnJSON{Position: j + 1, Sources: t.GetColumns()}
				if col.Sources == nil {
					col.Sources = []string{}
				}
				col.MaskedBy, col.UnknownOrigin = maskedBy(t.GetColumns(), m.Columns)
				r.Columns = append(r.Columns, col)
			}
		case len(st.GetSources()) > 0:
			r.MaskedSources, _ = maskedBy(st.GetSources(), m.Columns)
		default:
			continue
		}
		m.Results = append(m.Results, r)
	}
	return m
}

// maskedBy returns the masked columns that values with these lineage
// sources come from, and whether some origin cannot be followed. Names
// match with or without a schema: "public.customers.email" is
// "customers.email".
func maskedBy(sources, masked []string) ([]string, bool) {
	var by []string
	unknown := false
	add := func(c string) {
		if !slices.Contains(by, c) {
			by = append(by, c)
		}
	}
	for _, src := range sources {
		if src == "?" {
			unknown = true
			continue
		}
		src = strings.ToLower(src)
		rel, star := strings.CutSuffix(src, ".*")
		for _, c := range masked {
			cRel := c[:max(strings.LastIndexByte(c, '.'), 0)]
			switch {
			case star && sameName(rel, cRel):
				add(c)
			case !star && sameName(src, c):
				add(c)
			}
		}
	}
	return by, unknown
}

// sameName compares dotted names that may or may not carry a schema.
func sameName(a, b string) bool {
	return a == b || strings.HasSuffix(a, "."+b) || strings.HasSuffix(b, "."+a)
}

func (s *Server) policyTest(w http.ResponseWriter, r *http.Request, caller *commonv1.Principal) {
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
		Principal: &commonv1.Principal{Subject: req.Subject, Issuer: cmp.Or(req.Issuer, caller.GetIssuer()), Email: req.Email, Groups: req.Groups, Machine: req.Machine},
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
