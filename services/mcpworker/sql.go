package mcpworker

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"sluice.dev/sluice/libs/gateway"
	"sluice.dev/sluice/libs/pgmask"
	"sluice.dev/sluice/libs/sqlclass"
	"sluice.dev/sluice/libs/targets"
	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
	policyv1 "sluice.dev/sluice/proto/sluice/policy/v1"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
)

// Limits of run_sql.
const (
	defaultMaxRows = 100
	maxMaxRows     = 10000
	// maxResultBytes bounds the values one call returns (and holds in
	// memory): beyond it rows are counted, not kept, and marked truncated.
	maxResultBytes = 4 << 20
	// maxResults bounds the statement results one call returns.
	maxResults = 100
	// maxMessage bounds one message from the target (a row): a larger one
	// fails the call rather than fill the worker's memory.
	maxMessage = 16 << 20
)

// Rules of the denials the endpoint makes itself.
const (
	ruleMaskedCopy = "builtin:masked-data-copy"
	ruleCopy       = "builtin:mcp-copy"
)

type sqlResult struct {
	CommandTag string     `json:"command_tag" jsonschema:"what the statement did, as PostgreSQL says it (SELECT 3, UPDATE 1)"`
	Columns    []column   `json:"columns,omitempty"`
	Rows       [][]any    `json:"rows,omitempty" jsonschema:"the rows, each a list of values in column order (null for NULL)"`
	RowCount   int64      `json:"row_count" jsonschema:"how many rows the statement returned or affected"`
	Truncated  bool       `json:"truncated,omitempty" jsonschema:"true when more rows than max_rows were returned: only the first max_rows are here"`
	Error      *callError `json:"error,omitempty"`
}

type column struct {
	Name string `json:"name"`
	Type string `json:"type" jsonschema:"the PostgreSQL type"`
}

func fail(code, format string, a ...any) *callError {
	return &callError{Code: code, Message: fmt.Sprintf(format, a...)}
}

// target finds a target of the kind a tool needs.
func (w *Worker) target(ctx context.Context, name, kind, tool string) (*controlv1.TargetSpec, *callError) {
	if strings.TrimSpace(name) == "" {
		return nil, fail("invalid_arguments", "target is required (list_targets shows the targets you may use)")
	}
	// One answer for a target that does not exist and one of another
	// kind: the answer says nothing list_targets would not.
	tc, ok := w.k.View.LookupTarget(ctx, name)
	if !ok || tc.GetSpec().GetKind() != kind {
		return nil, fail("not_found", "there is no %s target %q for %s (list_targets shows the targets you may use, and the tool for each)", kind, name, tool)
	}
	return tc.GetSpec(), nil
}

// sqlCall prepares a run_sql call.
func (w *Worker) sqlCall(ctx context.Context, s *session, req *mcp.CallToolRequest, in runSQLIn) (*call, *callError) {
	spec, e := w.target(ctx, in.Target, "postgres", toolRunSQL)
	if e != nil {
		return nil, e
	}
	if strings.TrimSpace(in.SQL) == "" {
		return nil, fail("invalid_arguments", "sql is required")
	}
	if !utf8.ValidString(in.SQL) || strings.ContainsRune(in.SQL, 0) {
		return nil, fail("invalid_arguments", "sql must be UTF-8 text without NUL bytes")
	}
	maxRows := in.MaxRows
	switch {
	case maxRows == 0:
		maxRows = defaultMaxRows
	case maxRows < 0 || maxRows > maxMaxRows:
		return nil, fail("invalid_arguments", "max_rows must be between 1 and %d", maxMaxRows)
	}
	params, hash, err := sqlParams(req.Params.Arguments)
	if err != nil {
		return nil, fail("invalid_arguments", "params: %v", err)
	}
	ref := gateway.TargetRef(spec.GetName(), spec.GetKind(), spec.GetLabels())
	c := &call{
		tool: toolRunSQL, target: ref, text: in.SQL, paramsHash: hash, hashKind: "sql", shown: shownSQL(in.SQL, params),
		req: &policyv1.EvaluateRequest{Principal: s.principal, Target: ref, SessionId: s.id,
			Command: &policyv1.EvaluateRequest_Sql{Sql: &policyv1.SQLCommand{Text: in.SQL}},
			Mcp:     &policyv1.MCPInput{Tool: toolRunSQL, Arguments: args(req), Client: s.client}},
		key: cacheKey(toolRunSQL, s.client, req),
	}
	pg := spec.GetPostgres()
	c.check = func(ctx context.Context, d *policyv1.Decision) (*policyv1.Decision, *callError) {
		return w.checkSQL(ctx, pg, d)
	}
	c.run = func(ctx context.Context, id uint64, d *policyv1.Decision) callResult {
		return w.runSQL(ctx, s, c, pg, params, maxRows, id, d)
	}
	return c, nil
}

// shownSQL is a statement with its parameters as an approver reads them
// (each is sent as text).
func shownSQL(text string, params [][]byte) string {
	lits := make([]string, len(params))
	for i, p := range params {
		if p == nil {
			lits[i] = "NULL"
		} else {
			lits[i] = sqlclass.Literal(string(p))
		}
	}
	return sqlclass.Shown(text, lits)
}

// sqlParams reads params from the arguments as sent (numbers keep every
// digit) as text values, and hashes them: the record keeps the hash, never
// the values.
func sqlParams(raw json.RawMessage) ([][]byte, string, error) {
	var a struct {
		Params []any `json:"params"`
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&a); err != nil {
		return nil, "", err
	}
	if len(a.Params) == 0 {
		return nil, "", nil
	}
	if len(a.Params) > 65535 {
		return nil, "", errors.New("at most 65535 values")
	}
	out := make([][]byte, len(a.Params))
	h := sha256.New()
	for i, p := range a.Params {
		switch v := p.(type) {
		case nil:
			out[i] = nil
		case string:
			out[i] = []byte(v)
		case json.Number:
			out[i] = []byte(v.String())
		case bool:
			out[i] = []byte(strconv.FormatBool(v))
		default:
			b, err := json.Marshal(v)
			if err != nil {
				return nil, "", err
			}
			out[i] = b
		}
		if out[i] == nil {
			h.Write([]byte{0xff, 0xff, 0xff, 0xff})
		} else {
			fmt.Fprintf(h, "%08x", len(out[i]))
			h.Write(out[i])
		}
	}
	return out, hex.EncodeToString(h.Sum(nil)), nil
}

// checkSQL refuses what the endpoint cannot serve as the policy allowed
// it: COPY (its data does not come back as rows), and statements that copy
// masked values where masking cannot follow them (as the PostgreSQL
// worker refuses them).
func (w *Worker) checkSQL(ctx context.Context, pg *controlv1.PostgresTarget, d *policyv1.Decision) (*policyv1.Decision, *callError) {
	deny := func(rule, reason string) *policyv1.Decision {
		return w.k.Count(&policyv1.Decision{Action: "deny", Rule: rule, Reason: reason, Revision: d.GetRevision(), Statements: d.GetStatements(), Grants: d.GetGrants()})
	}
	for _, st := range d.GetStatements() {
		if st.GetCommand() == "COPY" {
			return deny(ruleCopy, "COPY is not available through MCP (its data is not returned as rows): use SELECT"), nil
		}
	}
	if len(d.GetMasks()) == 0 {
		return d, nil
	}
	copies := false
	for _, st := range d.GetStatements() {
		copies = copies || len(st.GetCopies()) > 0
	}
	if !copies {
		return d, nil
	}
	plan, err := w.plan(ctx, pg, nil, d)
	var down *targetDown
	switch {
	case errors.As(err, &down):
		return nil, w.unreachable(down.err)
	case err != nil:
		return nil, fail("masking_unavailable", "the masking rules cannot be applied: %v", err)
	}
	for _, st := range d.GetStatements() {
		if plan.Derives(st.GetCopies()) {
			return deny(ruleMaskedCopy, "the statement copies masked values (into a table, a notification or a function whose effects are unknown), where masking could not follow them; ask someone who may see them to run it"), nil
		}
	}
	return d, nil
}

// connectPG logs in to the target with the credential Sluice holds.
func (w *Worker) connectPG(ctx context.Context, pg *controlv1.PostgresTarget) (*pgconn.PgConn, error) {
	cfg, err := targets.PostgresConfig(pg, w.cfg.MasterKey, map[string]string{
		"application_name": "sluice-mcp", "client_encoding": "UTF8", "standard_conforming_strings": "on",
		"statement_timeout": strconv.FormatInt(w.cfg.CallTimeout.Milliseconds(), 10),
	})
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, w.cfg.TargetTimeout)
	defer cancel()
	pc, err := pgconn.ConnectConfig(cctx, cfg)
	if err != nil {
		return nil, err
	}
	pc.Frontend().SetMaxBodyLen(maxMessage)
	return pc, nil
}

// unreachable is what the agent learns of a failed login: not the
// target's address, user or database (the log and the record have them).
func (w *Worker) unreachable(err error) *callError {
	w.cfg.Log.Warn().Err(err).Msg("cannot reach target")
	return fail("target_unreachable", "Sluice cannot reach the target right now; try again later or ask an administrator")
}

// targetDown is a login to the target that failed: the agent is told no
// more than unreachable says.
type targetDown struct{ err error }

func (e *targetDown) Error() string { return e.err.Error() }

// plan is the masking plan of a decision, on the target's masked columns
// as resolved no more than CatalogMaxAge ago (shared by the worker's
// calls; a view created outside is followed at most that much later).
// When they must be resolved again, that is done on pc, or on a connection
// of its own when pc is nil.
func (w *Worker) plan(ctx context.Context, pg *controlv1.PostgresTarget, pc *pgconn.PgConn, d *policyv1.Decision) (*pgmask.Plan, error) {
	m, err := w.k.Masker(gateway.MaskRulesKey(d), d)
	if err != nil {
		return nil, err
	}
	// The decision's columns too: it may come from a policy this
	// worker's view has not received yet.
	cols := pgmask.WithDecisionColumns(pgmask.MaskColumns(w.k.View.Policy().GetRules()), d)
	key := pgmask.CatalogKey(pg, cols)
	prev := w.catalogs.Last(key)
	cat, _, err := w.catalogs.Fresh(ctx, key, w.cfg.CatalogMaxAge, func(ctx context.Context) (*pgmask.Catalog, error) {
		if pc == nil {
			own, err := w.connectPG(ctx, pg)
			if err != nil {
				return nil, &targetDown{err}
			}
			defer own.Close(context.Background())
			return pgmask.ResolveCatalogAfter(ctx, own, cols, prev)
		}
		return pgmask.ResolveCatalogAfter(ctx, pc, cols, prev)
	})
	var down *targetDown
	switch {
	case errors.As(err, &down):
		return nil, err
	case err != nil:
		// What went wrong on the target (its address among it) is logged,
		// not told to the agent.
		w.cfg.Log.Warn().Err(err).Str("target", pg.GetHost()).Msg("masked columns could not be resolved")
		return nil, errors.New("the target's masked columns could not be resolved")
	}
	return pgmask.NewPlan(m, d, cat), nil
}

// lineage is where each statement's results come from. A fresh connection
// has no prepared statement or cursor of the caller's: EXECUTE and FETCH
// results have unknown lineage.
func lineage(st *policyv1.Statement) pgmask.Lineage {
	if slices.Contains(st.GetFlags(), "execute") || st.GetCommand() == "FETCH" {
		return pgmask.UnknownLineage
	}
	return pgmask.StatementLineage(st)
}

// runSQL runs an allowed (or approved) run_sql call on a connection of its
// own, masks the results and records what happened.
func (w *Worker) runSQL(ctx context.Context, s *session, c *call, pg *controlv1.PostgresTarget, params [][]byte, maxRows int, id uint64, d *policyv1.Decision) callResult {
	res := callResult{Tool: c.tool, Target: c.target.GetName()}
	ctx, cancel := context.WithTimeout(ctx, w.cfg.CallTimeout+5*time.Second)
	defer cancel()
	start := time.Now()
	pc, err := w.connectPG(ctx, pg)
	if err != nil {
		res.Status, res.Error = statusError, w.unreachable(err)
		w.recordFailure(s, id, start, "08006", err.Error())
		return res
	}
	defer pc.Close(context.Background())
	var plan *pgmask.Plan
	if len(d.GetMasks()) > 0 {
		if plan, err = w.plan(ctx, pg, pc, d); err != nil {
			res.Status, res.Error = statusError, fail("masking_unavailable", "the masking rules cannot be applied: %v", err)
			w.recordFailure(s, id, start, "XX000", res.Error.Message)
			return res
		}
	}
	stmts := d.GetStatements()
	lin := func(i int) pgmask.Lineage {
		if i < len(stmts) && len(stmts) > 0 {
			return lineage(stmts[i])
		}
		return pgmask.UnknownLineage
	}
	var stats pgmask.Stats
	r := reader{w: w, plan: plan, stats: &stats, maxRows: maxRows}
	if len(params) > 0 {
		rr := pc.ExecParams(ctx, c.text, params, nil, nil, nil)
		r.read(rr, lin(0))
	} else {
		mrr := pc.Exec(ctx, c.text)
		for i := 0; mrr.NextResult(); i++ {
			r.read(mrr.ResultReader(), lin(i))
		}
		if err := mrr.Close(); err != nil && r.err == nil {
			r.err = err
		}
	}
	if r.err != nil {
		var pe *pgconn.PgError
		ce := &callError{Code: "08006", Message: "the target connection failed: " + r.err.Error()}
		if errors.As(r.err, &pe) {
			// Errors can echo values (a failed cast shows its input):
			// withheld or masked before the agent or the record sees them.
			fields := []*string{&pe.Message, &pe.Detail, &pe.Hint}
			if plan != nil {
				var inputs []string
				for _, st := range stmts {
					inputs = append(inputs, lineage(st).Inputs...)
				}
				if len(stmts) == 0 {
					inputs = pgmask.UnknownLineage.Inputs
				}
				plan.WithholdValues(inputs, &pe.Message, &pe.Detail, &pe.Hint, &pe.Where, &pe.InternalQuery)
				plan.MaskFields(fields, &stats)
			}
			ce = &callError{Code: pe.Code, Message: pe.Message, Detail: pe.Detail, Hint: pe.Hint}
		} else if r.refused != "" {
			ce = &callError{Code: "42501", Message: r.refused}
		}
		res.Error = ce
	}
	// What the target did, and what was masked: recorded, never the values.
	for _, sr := range r.results {
		ev := &sessionv1.Result{CommandId: id, CommandTag: sr.CommandTag, Rows: sr.RowCount, DurationUs: time.Since(start).Microseconds()}
		_, _ = s.emit(&sessionv1.Event{Body: &sessionv1.Event_Result{Result: ev}})
	}
	if res.Error != nil {
		_, _ = s.emit(&sessionv1.Event{Body: &sessionv1.Event_Result{Result: &sessionv1.Result{CommandId: id,
			DurationUs: time.Since(start).Microseconds(), ErrorCode: res.Error.Code, ErrorMessage: res.Error.Message}}})
	}
	if ev := stats.Event(id); ev != nil {
		_, _ = s.emit(ev)
		for _, mc := range ev.GetMasking().GetCounts() {
			res.Masked = append(res.Masked, maskedCount{Column: mc.GetColumn(), Detector: mc.GetDetector(), Count: mc.GetCount()})
		}
	}
	res.Results, res.ResultsTruncated = r.results, r.truncated
	res.Status = statusOK
	if res.Error != nil {
		res.Status = statusError
	}
	return res
}

func (w *Worker) recordFailure(s *session, id uint64, start time.Time, code, msg string) {
	_, _ = s.emit(&sessionv1.Event{Body: &sessionv1.Event_Result{Result: &sessionv1.Result{CommandId: id,
		DurationUs: time.Since(start).Microseconds(), ErrorCode: code, ErrorMessage: msg}}})
}

// reader collects a call's results, masked.
type reader struct {
	w       *Worker
	plan    *pgmask.Plan
	stats   *pgmask.Stats
	maxRows int
	results []sqlResult
	// bytes is what the kept values weigh; truncated: results were left
	// out.
	bytes     int
	truncated bool
	err       error
	refused   string
	buf       []byte
}

func (r *reader) read(rr *pgconn.ResultReader, lin pgmask.Lineage) {
	if r.err != nil {
		_, _ = rr.Close()
		return
	}
	fds := rr.FieldDescriptions()
	sr := sqlResult{}
	var cols []pgmask.Column
	if len(fds) > 0 {
		fields := make([]pgproto3.FieldDescription, len(fds))
		for i, f := range fds {
			fields[i] = pgproto3.FieldDescription{Name: []byte(f.Name), TableOID: f.TableOID, TableAttributeNumber: f.TableAttributeNumber,
				DataTypeOID: f.DataTypeOID, DataTypeSize: f.DataTypeSize, TypeModifier: f.TypeModifier, Format: f.Format}
			sr.Columns = append(sr.Columns, column{Name: f.Name, Type: r.w.typeName(f.DataTypeOID)})
		}
		if r.plan != nil {
			cols = r.plan.Columns(fields, nil, lin)
			if r.plan.Refuse() && pgmask.HasDerived(cols) {
				_, _ = rr.Close()
				r.refused = "the result would show values computed from masked columns"
				r.err = errors.New(r.refused)
				return
			}
		}
		sr.Rows = [][]any{}
	}
	for rr.NextRow() {
		// A rule can make one result carry a second row description:
		// rows are masked only under the description they were planned
		// for.
		if cur := rr.FieldDescriptions(); !sameFields(cur, fds) {
			_, _ = rr.Close()
			r.refused = "the result changed its columns midway (a rule on the table?); it cannot be masked reliably and is refused"
			r.err = errors.New(r.refused)
			return
		}
		sr.RowCount++
		if sr.RowCount > int64(r.maxRows) || r.bytes > maxResultBytes || len(r.results) >= maxResults {
			sr.Truncated = true
			continue
		}
		vals := rr.Values()
		if len(vals) != len(fds) {
			_, _ = rr.Close()
			r.err = pgmask.ErrUndecodable
			return
		}
		row := make([]any, len(vals))
		for i, v := range vals {
			if v == nil {
				continue
			}
			if r.plan != nil {
				var null bool
				r.buf, null = r.plan.MaskValue(r.buf[:0], v, cols[i], r.stats)
				if null {
					continue
				}
				v = r.buf
			}
			r.bytes += len(v)
			row[i] = jsonValue(fds[i].DataTypeOID, v)
		}
		sr.Rows = append(sr.Rows, row)
	}
	tag, err := rr.Close()
	if err != nil {
		r.err = err
		return
	}
	sr.CommandTag = tag.String()
	if len(fds) == 0 {
		sr.RowCount = tag.RowsAffected()
	}
	if len(r.results) >= maxResults {
		r.truncated = true
		return
	}
	r.results = append(r.results, sr)
}

func sameFields(a, b []pgconn.FieldDescription) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// jsonValue is a value as JSON: numbers and booleans as such, everything
// else (and anything masking changed) as its text.
func jsonValue(oid uint32, v []byte) any {
	switch oid {
	case pgtype.Int2OID, pgtype.Int4OID, pgtype.Int8OID, pgtype.OIDOID:
		if _, err := strconv.ParseInt(string(v), 10, 64); err == nil {
			return json.Number(v)
		}
	case pgtype.Float4OID, pgtype.Float8OID, pgtype.NumericOID:
		if f, err := strconv.ParseFloat(string(v), 64); err == nil && !math.IsInf(f, 0) && !math.IsNaN(f) {
			return json.Number(v)
		}
	case pgtype.BoolOID:
		switch string(v) {
		case "t":
			return true
		case "f":
			return false
		}
	}
	return string(v)
}

var typeNames = struct {
	sync.Mutex
	m *pgtype.Map
}{m: pgtype.NewMap()}

func (w *Worker) typeName(oid uint32) string {
	typeNames.Lock()
	defer typeNames.Unlock()
	if t, ok := typeNames.m.TypeForOID(oid); ok {
		return t.Name
	}
	return strconv.FormatUint(uint64(oid), 10)
}
