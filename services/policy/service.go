package policy

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"

	"sluice.dev/sluice/libs/approvalstate"
	"sluice.dev/sluice/libs/authz"
	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/controlstate"
	"sluice.dev/sluice/libs/kubeclass"
	engine "sluice.dev/sluice/libs/policy"
	"sluice.dev/sluice/libs/shellclass"
	"sluice.dev/sluice/libs/sqlclass"
	"sluice.dev/sluice/libs/sqlshape"
	commonv1 "sluice.dev/sluice/proto/sluice/common/v1"
	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
	policyv1 "sluice.dev/sluice/proto/sluice/policy/v1"
)

// Built-in rule names (not written in any policy).
const (
	RuleNoPolicy    = "builtin:no-policy"
	RuleUnparseable = "builtin:unparseable-sql"
	// RuleLexerSetting refuses a statement that changes how the server
	// reads the next ones, whatever the rules say.
	RuleLexerSetting = "builtin:lexer-setting"
	RuleNoCommand    = "builtin:no-command"
	RuleGrantsBehind = "builtin:grants-view-behind"
	// RulePolicyBehind denies when the service has not loaded the policy
	// revision the asking worker already holds.
	RulePolicyBehind = "builtin:policy-behind"
	// RuleUnparseableCommand denies an SSH exec request whose command line
	// shellclass cannot classify (a syntax error, an incomplete line, a
	// limit exceeded) or that is empty.
	RuleUnparseableCommand = "builtin:unparseable-command"
	// RuleUnparseableRequest denies a Kubernetes request whose path or
	// query cannot be classified.
	RuleUnparseableRequest = "builtin:unparseable-request"
)

// grantsWait bounds how long a decision waits for the grants view to reach
// the revision the caller has seen.
const grantsWait = 2 * time.Second

// DefaultCacheTTL bounds how long a worker may reuse a decision.
const DefaultCacheTTL = 5 * time.Minute

// Config configures the policy service.
type Config struct {
	Conn *bus.Conn
	Log  zerolog.Logger
	// Ready, if set, is called once the service serves.
	Ready func()
}

// Grants gives the grants of a principal on a target in force for a
// command of a session (see approvalstate.GrantSet).
type Grants func(issuer, subject, target, session string, now time.Time) approvalstate.GrantSet

// Service is the policy service.
type Service struct {
	cfg    Config
	view   *controlstate.View
	grants *approvalstate.View
	guard  *authz.Guard
	set    atomic.Pointer[engine.Set]
}

// New returns the service.
func New(cfg Config) *Service {
	view := controlstate.NewView()
	return &Service{cfg: cfg, view: view, grants: approvalstate.NewView(), guard: authz.New(cfg.Conn.NC, view)}
}

// Run serves until ctx is done.
func (s *Service) Run(ctx context.Context) error {
	s.view.OnChange(func(key string) {
		if key == controlstate.KeyPolicy {
			s.recompile()
		}
	})
	errc := make(chan error, 2)
	go func() { errc <- s.view.Follow(ctx, s.cfg.Conn.JS) }()
	go func() { errc <- s.grants.Follow(ctx, s.cfg.Conn.JS) }()
	select {
	case <-s.view.Ready():
	case err := <-errc:
		return err
	case <-ctx.Done():
		return nil
	}
	newReq := func() *policyv1.EvaluateRequest { return &policyv1.EvaluateRequest{} }
	if _, err := bus.Serve(ctx, s.cfg.Conn.NC, bus.APIPolicyEvaluate, "policy", newReq, s.evaluate); err != nil {
		return err
	}
	if _, err := bus.Serve(ctx, s.cfg.Conn.NC, bus.APIPolicyTest, "policy", newReq, s.test); err != nil {
		return err
	}
	s.cfg.Log.Info().Uint64("revision", s.revision()).Msg("policy service ready")
	if s.cfg.Ready != nil {
		s.cfg.Ready()
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		return nil
	}
}

func (s *Service) revision() uint64 {
	if set := s.set.Load(); set != nil {
		return set.Revision
	}
	return 0
}

func (s *Service) recompile() {
	p := s.view.Policy()
	if p == nil {
		s.set.Store(nil)
		policyRevision.Set(0)
		return
	}
	if cur := s.set.Load(); cur != nil && cur.Revision == p.GetRevision() {
		return
	}
	set, err := engine.Compile(p.GetRules(), p.GetRevision())
	if err != nil {
		// Applied policies were checked at apply time; this only happens
		// if the engine changed. Keep failing closed: no set means deny.
		s.cfg.Log.Error().Err(err).Uint64("revision", p.GetRevision()).Msg("applied policy does not compile; denying everything")
		s.set.Store(nil)
		policyRevision.Set(0)
		return
	}
	s.set.Store(set)
	policyRevision.Set(float64(set.Revision))
	s.cfg.Log.Info().Uint64("revision", set.Revision).Msg("policy compiled")
}

func deny(rule, reason string, revision uint64) *policyv1.Decision {
	return &policyv1.Decision{Action: engine.Deny, Rule: rule, Reason: reason, Revision: revision, Cache: &policyv1.Cache{}}
}

// evaluate answers a decision, counted (sluice_policy_evaluations_total).
func (s *Service) evaluate(ctx context.Context, req *policyv1.EvaluateRequest) (*policyv1.Decision, error) {
	d := s.decide(ctx, req)
	policyEvaluations.WithLabelValues(d.GetAction(), d.GetRule()).Inc()
	return d, nil
}

func (s *Service) decide(ctx context.Context, req *policyv1.EvaluateRequest) *policyv1.Decision {
	// A worker that has seen a grant change (a revocation) is not answered
	// from a view that has not: the decision waits for it, briefly.
	if min := req.GetMinGrantsRevision(); min > 0 && s.grants.GrantRevision() < min {
		deadline := time.Now().Add(grantsWait)
		for s.grants.GrantRevision() < min {
			if time.Now().After(deadline) || ctx.Err() != nil {
				var rev uint64
				if set := s.set.Load(); set != nil {
					rev = set.Revision
				}
				return deny(RuleGrantsBehind, "the policy service has not yet seen the latest grant change; nothing runs until it has", rev)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	// Nor is one that holds a newer policy (a rule applied a moment ago)
	// answered with an older one.
	if min := req.GetMinPolicyRevision(); min > 0 && s.revision() < min {
		wctx, cancel := context.WithTimeout(ctx, grantsWait)
		err := s.view.CatchUp(wctx, s.cfg.Conn.JS)
		cancel()
		if rev := s.revision(); rev < min {
			s.cfg.Log.Warn().Err(err).Uint64("revision", rev).Uint64("wanted", min).Msg("the policy in force is not loaded; denying")
			return deny(RulePolicyBehind, "the policy service has not yet loaded the policy in force; nothing runs until it has", rev)
		}
	}
	start := time.Now()
	d := EvaluateWithGrants(ctx, s.set.Load(), s.target(req.GetTarget()), req, start, s.grants.Grants)
	policyEvaluationSeconds.Observe(time.Since(start).Seconds())
	return d
}

// test is `sluice policy test`: how the policy rules on a command for the
// principal described in the request, asked by a verified caller allowed to
// read the policy. Only workers may ask evaluate (NATS permissions); a
// decision grants nothing by itself, the worker enforces it.
func (s *Service) test(ctx context.Context, req *policyv1.EvaluateRequest) (*policyv1.Decision, error) {
	if _, e := s.guard.Require(ctx, authz.PolicyReader); e != nil {
		return &policyv1.Decision{Action: engine.Deny, Error: e, Cache: &policyv1.Cache{}}, nil
	}
	if _, ok := s.view.LookupTarget(ctx, req.GetTarget().GetName()); !ok {
		return &policyv1.Decision{Action: engine.Deny, Cache: &policyv1.Cache{},
			Error: &commonv1.Error{Code: "not_found", Message: fmt.Sprintf("there is no target %q", req.GetTarget().GetName())}}, nil
	}
	return s.evaluate(ctx, req)
}

// target completes the target with its registered kind and labels.
func (s *Service) target(t *commonv1.Target) *commonv1.Target {
	if tc, ok := s.view.Target(t.GetName()); ok {
		spec := tc.GetSpec()
		return &commonv1.Target{Name: spec.GetName(), Kind: spec.GetKind(), Labels: spec.GetLabels()}
	}
	return t
}

// Evaluate rules on one request with a compiled set (nil means no policy)
// and no grants.
func Evaluate(ctx context.Context, set *engine.Set, target *commonv1.Target, req *policyv1.EvaluateRequest, now time.Time) *policyv1.Decision {
	return EvaluateWithGrants(ctx, set, target, req, now, nil)
}

// EvaluateWithGrants rules on one request, giving policies the principal's
// active grants on the target. A decision that depends on grants may be
// cached only until the grants next change.
func EvaluateWithGrants(ctx context.Context, set *engine.Set, target *commonv1.Target, req *policyv1.EvaluateRequest, now time.Time, grants Grants) *policyv1.Decision {
	if set == nil {
		return deny(RuleNoPolicy, "no policy is applied", 0)
	}
	in := engine.Input{Principal: req.GetPrincipal(), Target: target, Now: now, MCP: req.GetMcp()}
	var gs approvalstate.GrantSet
	if grants != nil && set.UsesGrants {
		gs = grants(req.GetPrincipal().GetIssuer(), req.GetPrincipal().GetSubject(), target.GetName(), req.GetSessionId(), now)
		in.Grants = gs.Grants
	}
	d := evaluateCommand(ctx, set, in, req)
	for _, g := range in.Grants {
		d.Grants = append(d.Grants, g.GetId())
	}
	if d.Cache != nil {
		d.Cache.GrantsRevision = gs.Revision
		if gs.Scoped {
			// Workers share decisions between a principal's sessions; one
			// that a session's own grant may change is not shared.
			d.Cache.Cacheable, d.Cache.TtlMs = false, 0
		}
		if !gs.Next.IsZero() && d.Cache.GetCacheable() {
			if ttl := gs.Next.Sub(now).Milliseconds(); ttl < d.Cache.GetTtlMs() {
				d.Cache.TtlMs = max(ttl, 0)
			}
		}
	}
	return d
}

func evaluateCommand(ctx context.Context, set *engine.Set, in engine.Input, req *policyv1.EvaluateRequest) *policyv1.Decision {
	switch cmd := req.GetCommand().(type) {
	case *policyv1.EvaluateRequest_Sql:
		return evaluateSQL(ctx, set, in, cmd.Sql.GetText())
	case *policyv1.EvaluateRequest_Ssh:
		return evaluateSSH(ctx, set, in, cmd.Ssh)
	case *policyv1.EvaluateRequest_K8S:
		return evaluateK8s(ctx, set, in, cmd.K8S)
	case nil:
		if req.GetMcp().GetTool() != "" {
			return evaluateMCP(ctx, set, in, req.GetMcp())
		}
	}
	return deny(RuleNoCommand, "the request carries no command", set.Revision)
}

// evaluateK8s rules on one Kubernetes request, classified by the worker
// (libs/kubeclass: the path and method say everything a rule sees). The
// decision depends on that classification alone, so the worker may reuse
// it for the same classification unless a rule reads the time.
func evaluateK8s(ctx context.Context, set *engine.Set, in engine.Input, c *policyv1.K8SCommand) *policyv1.Decision {
	in.Protocol = "kubernetes"
	// Classified here, from what the client sent: the worker's own
	// classification is not trusted.
	query, qerr := url.ParseQuery(c.GetQuery())
	info, err := kubeclass.Classify(c.GetMethod(), c.GetPath(), query)
	if c.GetMethod() == "" || qerr != nil || err != nil {
		return deny(RuleUnparseableRequest, "the request's path or query cannot be classified; it is refused", set.Revision)
	}
	nc := &policyv1.K8SCommand{Verb: info.Verb, ApiGroup: info.APIGroup, Resource: info.Resource, Subresource: info.Subresource,
		Namespace: info.Namespace, Name: info.Name, Command: info.Command, Container: info.Container, Path: info.Path, IsResource: info.IsResource}
	if kubeclass.Workload(info.Resource) && info.Verb != "get" && info.Verb != "list" && info.Verb != "watch" && info.Verb != "delete" &&
		info.Verb != "deletecollection" && (info.Subresource == "" || info.Subresource == "ephemeralcontainers") {
		// What the write asks a pod to be; without a body to read, unknown.
		nc.Pod = kubeclass.PodSummary(c.GetBody(), c.GetContentType())
		if len(c.GetBody()) == 0 {
			nc.Pod.Present, nc.Pod.ParseError = true, true
		}
	}
	c = nc
	in.K8s = c
	d := decision(set.Evaluate(ctx, in), set.Revision)
	d.Masks = set.Masks(ctx, in)
	d.K8S = c
	d.Cache = &policyv1.Cache{PolicyRevision: set.Revision, Cacheable: !set.UsesNow}
	if d.Cache.Cacheable {
		d.Cache.TtlMs = DefaultCacheTTL.Milliseconds()
	}
	return d
}

// evaluateMCP rules on an MCP call that runs nothing on a target (which
// targets a caller may see). A decision depends on the principal, the
// target and the call, so the worker may reuse it for that call unless a
// rule reads the time.
func evaluateMCP(ctx context.Context, set *engine.Set, in engine.Input, m *policyv1.MCPInput) *policyv1.Decision {
	in.Protocol = "mcp"
	d := decision(set.Evaluate(ctx, in), set.Revision)
	d.Mcp = &policyv1.MCPInput{Tool: m.GetTool(), Client: m.GetClient()}
	d.Cache = &policyv1.Cache{PolicyRevision: set.Revision, Cacheable: !set.UsesNow}
	if d.Cache.Cacheable {
		d.Cache.TtlMs = DefaultCacheTTL.Milliseconds()
	}
	return d
}

// evaluateSSH rules on one SSH request. An exec command line is classified
// by shellclass (the shell grammar), and policies see the whole
// classification; a line it cannot classify is denied before any rule runs,
// as unparseable SQL is. Other requests carry only their type and argument.
//
// The worker caches a decision by principal, target and request type plus
// command, exactly; classification is a function of the command, so the
// decision holds for that key unless a rule reads the time. A set that
// reads sql.text is treated as reading raw text here too.
func evaluateSSH(ctx context.Context, set *engine.Set, in engine.Input, c *policyv1.SSHCommand) *policyv1.Decision {
	in.Protocol = "ssh"
	if c.GetRequestType() == "exec" {
		res, err := shellclass.Classify(c.GetCommand())
		if err != nil {
			return deny(RuleUnparseableCommand, unparseableReason(err), set.Revision)
		}
		in.SSH = shellclass.Input(res)
	} else {
		in.SSH = sshInput(c)
	}
	d := decision(set.Evaluate(ctx, in), set.Revision)
	d.Masks = set.Masks(ctx, in)
	// The classification goes with the decision into the audit record.
	d.Ssh = in.SSH
	cacheable := !set.UsesNow && !set.UsesText
	d.Cache = &policyv1.Cache{PolicyRevision: set.Revision, Cacheable: cacheable}
	if cacheable {
		d.Cache.TtlMs = DefaultCacheTTL.Milliseconds()
	}
	return d
}

// sshInput is the `ssh` variable of a request other than exec: its type and
// argument, and what the argument names. subsystem names the subsystem
// (sftp); env's argument is NAME=value, and the name is in env, the name and
// the value in argv.
func sshInput(c *policyv1.SSHCommand) *policyv1.SSHInput {
	in := &policyv1.SSHInput{RequestType: c.GetRequestType(), Command: c.GetCommand()}
	switch c.GetRequestType() {
	case "subsystem":
		in.Subsystem = c.GetCommand()
	case "env":
		name, value, _ := strings.Cut(c.GetCommand(), "=")
		in.Env = []string{name}
		in.Argv = []string{name, value}
	}
	return in
}

// unparseableReason says why an exec command was refused: the parser's
// message names the syntax problem and carries nothing beyond the client's
// own text; an internal failure is not described.
func unparseableReason(err error) string {
	if errors.Is(err, shellclass.ErrEmpty) {
		return "the command is empty; an exec request needs a command line"
	}
	msg, ok := strings.CutPrefix(err.Error(), shellclass.ErrParse.Error()+": ")
	if !ok || msg == "" || strings.HasPrefix(msg, "internal error") {
		return "the command line cannot be parsed; unparseable commands are refused"
	}
	return fmt.Sprintf("the command line cannot be parsed (%s); unparseable commands are refused", msg)
}

func decision(v engine.Verdict, revision uint64) *policyv1.Decision {
	return &policyv1.Decision{Action: v.Action, Rule: v.Rule, Reason: v.Reason, Revision: revision, Approvers: v.Approvers, Quorum: v.Quorum}
}

func evaluateSQL(ctx context.Context, set *engine.Set, in engine.Input, text string) *policyv1.Decision {
	in.Protocol = "postgres"
	parts := sqlclass.Lineage // masking follows it
	if set.UsesFingerprint {
		parts |= sqlclass.Fingerprints
	}
	// The classifier's fingerprint determines the classification, so a
	// decision can be reused for every statement with that fingerprint
	// unless a rule reads the raw text or the time.
	cacheable := !set.UsesNow && !set.UsesText
	var (
		res, shapeRes *sqlclass.Result
		shape         string
		shaped        bool
		err           error
	)
	if cacheable {
		// The shape's classes come from the statement's own parse when
		// its literals are constants a parameter could stand for.
		var lits sqlshape.Literals
		shape, lits, shaped = sqlshape.ShapeLiterals(text)
		res, shapeRes, err = sqlclass.ClassifyWithShape(text, parts, lits.Offsets, lits.From)
	} else {
		res, err = sqlclass.ClassifyParts(text, parts)
	}
	if err != nil {
		reason := "the statement cannot be parsed; unparseable SQL is refused"
		if errors.Is(err, sqlclass.ErrEmpty) {
			reason = "the statement is empty"
		} else if msg, ok := parseMessage(err); ok {
			reason = fmt.Sprintf("the statement cannot be parsed (%s); unparseable SQL is refused", msg)
		}
		return deny(RuleUnparseable, reason, set.Revision)
	}
	var worst *policyv1.Decision
	var masks []*controlv1.MaskRule
	stmts := make([]*policyv1.Statement, 0, len(res.Statements))
	for _, st := range res.Statements {
		flags := make([]string, len(st.Flags))
		for i, f := range st.Flags {
			flags[i] = string(f)
		}
		tables := append(slices.Clone(st.Reads), st.Writes...)
		slices.Sort(tables)
		in.SQL = &policyv1.SQLInput{
			Text: st.Text, Kind: string(st.Kind), Command: st.Command, Reads: st.Reads, Writes: st.Writes,
			Tables: slices.Compact(tables), Functions: st.Functions, Flags: flags, Setting: st.Setting,
			Statements: int32(len(res.Statements)), Fingerprint: res.Fingerprint, Columns: st.Columns,
		}
		var targets []*policyv1.Target
		for _, t := range st.Targets {
			targets = append(targets, &policyv1.Target{Columns: t})
		}
		stmts = append(stmts, &policyv1.Statement{Kind: string(st.Kind), Command: st.Command, Reads: st.Reads, Writes: st.Writes,
			Functions: st.Functions, Flags: flags, PreparedName: st.PreparedName, Columns: st.Columns, Targets: targets,
			Sources: st.Sources, Copies: st.Copies, Cursor: st.Cursor, Inputs: st.Inputs})
		// The rules read the classification, not the text (unless a rule
		// reads sql.text): a classification seen before is ruled on from
		// the set's memo.
		v, ms, remembered := set.Rule(ctx, in)
		policyRuleMemo.WithLabelValues(strconv.FormatBool(remembered)).Inc()
		d := decision(v, set.Revision)
		if d.Action != engine.Deny && changesLexer(st) {
			// Whatever the rules say: a statement read one way by the
			// classifier and another by the server would run unseen.
			d = deny(RuleLexerSetting, "changing how statements are read (standard_conforming_strings, client_encoding, backslash_quote) is not allowed: "+
				"the statements after it would run as something other than what was ruled on", set.Revision)
		}
		if worst == nil || engine.Severity(d.Action) > engine.Severity(worst.Action) {
			worst = d
		}
		for _, m := range ms {
			if !slices.ContainsFunc(masks, func(x *controlv1.MaskRule) bool { return proto.Equal(x, m) }) {
				masks = append(masks, m)
			}
		}
	}
	worst.Statements = stmts
	worst.Masks = masks
	worst.Cache = &policyv1.Cache{PolicyRevision: set.Revision, Fingerprint: res.Fingerprint, Cacheable: cacheable}
	if cacheable {
		worst.Cache.TtlMs = DefaultCacheTTL.Milliseconds()
		worst.Cache.Shape = shape
		worst.Cache.ShapeCacheable = shaped && shapeHolds(text, shape, res, shapeRes)
	}
	return worst
}

// changesLexer reports whether a statement sets a lexer setting (SET,
// set_config). RESET and DISCARD ALL return them to the session's start,
// which the PostgreSQL worker fixes (standard_conforming_strings on,
// client_encoding UTF8), and are left to the rules.
func changesLexer(st sqlclass.Statement) bool {
	return slices.Contains(st.Flags, sqlclass.FlagLexerSetting) && st.Command != "RESET" && st.Command != "DISCARD"
}

// parseMessage extracts the parser's message for the client (it names the
// syntax problem and never carries a secret beyond the client's own text).
func parseMessage(err error) (string, bool) {
	msg := err.Error()
	const prefix = "sqlclass: cannot parse: "
	if len(msg) > len(prefix) && msg[:len(prefix)] == prefix {
		return msg[len(prefix):], true
	}
	return "", false
}

// shapeHolds reports whether a decision may be reused for every statement
// of the shape: only when classifying the shape (with parameters in place
// of the literals) gives exactly the classification of the statement, so
// that no literal value influenced it. tres is the shape's classification
// from the statement's own parse, or nil when that parse could not give it
// (the shape's text is classified then).
func shapeHolds(text, shape string, res, tres *sqlclass.Result) bool {
	if shape == text {
		return true
	}
	if tres == nil {
		// The classes are compared, which needs neither lineage nor
		// fingerprint.
		var err error
		if tres, err = sqlclass.ClassifyParts(shape, 0); err != nil {
			return false
		}
	}
	if len(tres.Statements) != len(res.Statements) {
		return false
	}
	for i := range res.Statements {
		if !sameClass(res.Statements[i], tres.Statements[i]) {
			return false
		}
	}
	return true
}

func sameClass(a, b sqlclass.Statement) bool {
	return a.Kind == b.Kind && a.Command == b.Command && a.Setting == b.Setting && a.PreparedName == b.PreparedName &&
		a.Cursor == b.Cursor && slices.Equal(a.Reads, b.Reads) && slices.Equal(a.Writes, b.Writes) &&
		slices.Equal(a.Functions, b.Functions) && slices.Equal(withoutLiteralFlag(a.Flags), withoutLiteralFlag(b.Flags))
}

// withoutLiteralFlag drops literal_sensitive, which marks the classifier's
// own fingerprint blind spots, not a difference in classification.
func withoutLiteralFlag(f []sqlclass.Flag) []sqlclass.Flag {
	return slices.DeleteFunc(slices.Clone(f), func(x sqlclass.Flag) bool { return x == sqlclass.FlagLiteralSensitive })
}
