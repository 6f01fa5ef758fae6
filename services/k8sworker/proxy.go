package k8sworker

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"sluice.dev/sluice/libs/authn"
	"sluice.dev/sluice/libs/gateway"
	"sluice.dev/sluice/libs/kubeclass"
	"sluice.dev/sluice/libs/kubemask"
	"sluice.dev/sluice/libs/recording"
	"sluice.dev/sluice/libs/targets"
	commonv1 "sluice.dev/sluice/proto/sluice/common/v1"
	policyv1 "sluice.dev/sluice/proto/sluice/policy/v1"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
)

// PathPrefix starts every path: /targets/NAME/... reaches target NAME.
const PathPrefix = "/targets/"

// Rules of the refusals the worker makes itself.
const (
	ruleMaskedStream    = "builtin:masked-stream"
	ruleUnclassifiable  = "builtin:unparseable-request"
	ruleBadUpgrade      = "builtin:not-a-stream"
	ruleImpersonation   = "builtin:impersonation-refused"
	ruleBodyTooLarge    = "builtin:request-body"
	ruleTooManyRequests = "builtin:too-many-requests"
)

type connKey struct{}

// clientConn is one client connection; its requests run in one session
// per target and principal (a token refreshed for the same principal
// stays in it).
type clientConn struct {
	w    *Worker
	conn net.Conn
	addr string

	mu       sync.Mutex
	sessions map[sessKey]*session
	closed   bool
}

type sessKey struct {
	target string
	pkey   [16]byte
}

func (w *Worker) connContext(ctx context.Context, c net.Conn) context.Context {
	cc := &clientConn{w: w, conn: c, addr: c.RemoteAddr().String(), sessions: map[sessKey]*session{}}
	w.conns.Store(c, cc)
	return context.WithValue(ctx, connKey{}, cc)
}

func (w *Worker) connState(c net.Conn, st http.ConnState) {
	if st != http.StateClosed {
		return
	}
	if v, ok := w.conns.LoadAndDelete(c); ok {
		v.(*clientConn).end("the client closed the connection")
	}
}

// end ends every session of the connection.
func (cc *clientConn) end(reason string) {
	cc.mu.Lock()
	cc.closed = true
	open := make([]*session, 0, len(cc.sessions))
	for _, s := range cc.sessions {
		open = append(open, s)
	}
	cc.mu.Unlock()
	for _, s := range open {
		s.finish(reason)
	}
}

// session is one principal's requests to one target over one connection,
// an audit session with protocol kubernetes.
type session struct {
	w         *Worker
	cc        *clientConn
	id        string
	principal *commonv1.Principal
	pkey      [16]byte
	target    *commonv1.Target
	rec       *recording.Session
	inflight  chan struct{}

	mu    sync.Mutex
	token string
	cmdID uint64

	commands, denied atomic.Int64
	endOnce          sync.Once
	ended            chan struct{}
	why              atomic.Value
}

func (s *session) ID() string             { return s.id }
func (s *session) PrincipalKey() [16]byte { return s.pkey }
func (s *session) CallerToken() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.token
}

// End ends the session at the kernel's request (kill, identity change,
// shutdown): the connection closes, so requests in flight stop.
func (s *session) End(_ gateway.EndCode, reason string) {
	s.finish(reason)
	_ = s.cc.conn.Close()
}

func (s *session) finish(reason string) {
	s.endOnce.Do(func() {
		s.why.Store(reason)
		close(s.ended)
		s.w.k.RecordEnd(s.rec, &sessionv1.Ended{Reason: reason, Commands: s.commands.Load(), Denied: s.denied.Load()})
		s.w.k.Unregister(s)
	})
}

func (s *session) isEnded() bool {
	select {
	case <-s.ended:
		return true
	default:
		return false
	}
}

// session returns the connection's session for target and principal,
// starting it (recorded) on its first request.
func (cc *clientConn) session(ctx context.Context, target *commonv1.Target, p *commonv1.Principal, token, agent string) (*session, error) {
	key := sessKey{target: target.GetName(), pkey: gateway.PrincipalKey(p)}
	cc.mu.Lock()
	if cc.closed {
		cc.mu.Unlock()
		return nil, errors.New("the connection is closing")
	}
	if s, ok := cc.sessions[key]; ok && !s.isEnded() {
		cc.mu.Unlock()
		s.mu.Lock()
		s.token = token
		s.mu.Unlock()
		return s, nil
	}
	if cc.w.k.Active() >= int64(cc.w.k.Config().MaxSessions) {
		cc.mu.Unlock()
		return nil, errors.New("too many sessions are open; try again later")
	}
	s := &session{w: cc.w, cc: cc, id: recording.NewSessionID(), principal: p, pkey: key.pkey, target: target, token: token,
		inflight: make(chan struct{}, cc.w.cfg.MaxInFlight), ended: make(chan struct{})}
	s.rec = cc.w.k.Rec.Open(s.id)
	cc.sessions[key] = s
	cc.mu.Unlock()
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err := s.rec.Record(rctx, &sessionv1.Event{Time: timestamppb.Now(), Body: &sessionv1.Event_Started{Started: &sessionv1.Started{
		Principal: p, Target: target, Protocol: "kubernetes", ClientAddr: cc.addr, ClientApplication: truncate(agent, 200), Worker: cc.w.cfg.Name,
	}}})
	if err != nil {
		cc.mu.Lock()
		delete(cc.sessions, key)
		cc.mu.Unlock()
		return nil, errors.New("the audit stream is not accepting records; nothing runs unrecorded")
	}
	cc.w.k.Register(s)
	return s, nil
}

// requestLine is a request as its record and approvers show it: the
// method, the path on the cluster and the query.
func requestLine(r *http.Request, rest string) string {
	text := r.Method + " " + rest
	if r.URL.RawQuery != "" {
		text += "?" + r.URL.RawQuery
	}
	return text
}

// refuse answers a request the worker turns down itself, before the
// policy rules on it. It is recorded like any other: a command denied by
// a builtin rule, and its result.
func (s *session) refuse(rw http.ResponseWriter, r *http.Request, rest string, code int, rule, reason string) {
	d := s.w.k.Count(&policyv1.Decision{Action: "deny", Rule: rule, Reason: reason})
	id := s.nextCommand()
	s.commands.Add(1)
	s.denied.Add(1)
	if _, err := s.emit(&sessionv1.Event{Body: &sessionv1.Event_Command{Command: &sessionv1.Command{CommandId: id,
		Text: truncate(requestLine(r, rest), maxExcerpt), Decision: gateway.Recorded(d)}}}); err == nil {
		s.result(id, code, 0, time.Now())
	}
	status(rw, code, strings.ReplaceAll(http.StatusText(code), " ", ""), "sluice: "+reason)
}

// result records a command's HTTP status (and a watch's events as rows).
func (s *session) result(id uint64, code int, rows int64, start time.Time) {
	_, _ = s.emit(&sessionv1.Event{Body: &sessionv1.Event_Result{Result: &sessionv1.Result{CommandId: id,
		CommandTag: fmt.Sprintf("HTTP %d", code), Rows: rows, DurationUs: time.Since(start).Microseconds()}}})
}

func (s *session) nextCommand() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cmdID++
	return s.cmdID
}

func (s *session) emit(ev *sessionv1.Event) (uint64, error) {
	if ev.Time == nil {
		ev.Time = timestamppb.Now()
	}
	return s.rec.Emit(ev)
}

// ServeHTTP is one request: the target from the path, the caller from its
// token, a decision, a durable record, then the cluster.
func (w *Worker) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	cc, _ := r.Context().Value(connKey{}).(*clientConn)
	if cc == nil {
		status(rw, http.StatusInternalServerError, "InternalError", "sluice: no connection state")
		return
	}
	name, rest, ok := route(r.URL.Path)
	if !ok {
		status(rw, http.StatusNotFound, "NotFound", "sluice: use the server URL sluice kubeconfig writes: https://HOST/targets/NAME")
		return
	}
	// The caller first: which targets exist is for those with a token.
	token, ok := authn.Bearer(r)
	if !ok {
		status(rw, http.StatusUnauthorized, "Unauthorized", "sluice: send an access token (sluice kubeconfig writes a kubeconfig whose user runs sluice token)")
		return
	}
	p, e := w.k.Authn.Verify(r.Context(), token)
	if e != nil {
		code := http.StatusUnauthorized
		if e.GetCode() == "unavailable" {
			code = http.StatusServiceUnavailable
		}
		w.k.RecordAuthFailure(r.Context(), cc.addr, name, e.GetCode(), e.GetMessage())
		status(rw, code, http.StatusText(code), fmt.Sprintf("sluice: the token is refused: %s (%s)", e.GetMessage(), e.GetCode()))
		return
	}
	tc, ok := w.k.View.LookupTarget(r.Context(), name)
	if !ok || tc.GetSpec().GetKubernetes() == nil {
		status(rw, http.StatusNotFound, "NotFound", fmt.Sprintf("sluice: there is no Kubernetes target %q", name))
		return
	}
	spec := tc.GetSpec()
	s, err := cc.session(r.Context(), gateway.TargetRef(spec.GetName(), spec.GetKind(), spec.GetLabels()), p, token, r.UserAgent())
	if err != nil {
		status(rw, http.StatusServiceUnavailable, "ServiceUnavailable", "sluice: "+err.Error())
		return
	}
	select {
	case s.inflight <- struct{}{}:
		defer func() { <-s.inflight }()
	default:
		s.refuse(rw, r, rest, http.StatusTooManyRequests, ruleTooManyRequests, fmt.Sprintf("at most %d requests at once in one session", w.cfg.MaxInFlight))
		return
	}
	up, err := w.upstreamFor(name, tc)
	if err != nil {
		w.cfg.Log.Warn().Err(err).Str("target", name).Msg("target misconfigured")
		status(rw, http.StatusBadGateway, "ServiceUnavailable", "sluice: the target is misconfigured; ask an administrator")
		return
	}
	if s.handle(rw, r, rest, up) {
		// A connection that carried a stream serves nothing else (and,
		// taken over, reports no close).
		s.finish("the stream ended")
		w.conns.Delete(cc.conn)
	}
}

// route splits /targets/NAME/REST.
func route(p string) (name, rest string, ok bool) {
	after, found := strings.CutPrefix(p, PathPrefix)
	if !found {
		return "", "", false
	}
	name, rest, _ = strings.Cut(after, "/")
	if name == "" {
		return "", "", false
	}
	return name, "/" + rest, true
}

func isUpgrade(r *http.Request) bool {
	return r.Header.Get("Upgrade") != "" || strings.Contains(strings.ToLower(r.Header.Get("Connection")), "upgrade")
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// handle rules on one request and, when it may run, forwards it. It
// reports whether the connection was taken over by a stream.
func (s *session) handle(rw http.ResponseWriter, r *http.Request, rest string, up *upstream) (upgraded bool) {
	w := s.w
	ctx := r.Context()
	start := time.Now()
	if r.URL.RawPath != "" {
		s.refuse(rw, r, rest, http.StatusBadRequest, ruleUnclassifiable, "percent-encoded paths are refused")
		return
	}
	info, err := kubeclass.Classify(r.Method, rest, r.URL.Query())
	if err != nil {
		s.refuse(rw, r, rest, http.StatusBadRequest, ruleUnclassifiable, err.Error())
		return
	}
	if isUpgrade(r) && (!streamingSubresource(info.Subresource) || (r.Method != http.MethodGet && strings.EqualFold(r.Header.Get("Upgrade"), "websocket"))) {
		// Only exec, attach and port-forward are streams (a websocket is a
		// GET): any other upgrade would run as something else than it was
		// ruled on.
		s.refuse(rw, r, rest, http.StatusBadRequest, ruleBadUpgrade, "only exec, attach and port-forward open streams (a websocket GET)")
		return
	}
	if up.spec.GetImpersonate() {
		if err := targets.Impersonate(http.Header{}, s.principal); err != nil {
			s.refuse(rw, r, rest, http.StatusForbidden, ruleImpersonation, err.Error())
			return
		}
	}
	var body []byte
	if r.Body != nil && r.Method != http.MethodGet && r.Method != http.MethodHead {
		body, err = io.ReadAll(io.LimitReader(r.Body, w.cfg.MaxBody+1))
		if err != nil {
			s.refuse(rw, r, rest, http.StatusBadRequest, ruleBodyTooLarge, "the request body could not be read")
			return
		}
		if int64(len(body)) > w.cfg.MaxBody {
			s.refuse(rw, r, rest, http.StatusRequestEntityTooLarge, ruleBodyTooLarge, fmt.Sprintf("the request body is larger than %d bytes", w.cfg.MaxBody))
			return
		}
	}
	// The policy service classifies the request itself, from what the
	// client sent.
	cmd := &policyv1.K8SCommand{Method: r.Method, Path: rest, Query: r.URL.RawQuery}
	if kubeclass.Workload(info.Resource) && info.Mutating() {
		// The policy reads the pod spec a workload write asks for.
		cmd.Body, cmd.ContentType = body[:min(len(body), kubeclass.MaxPodBody+1)], r.Header.Get("Content-Type")
	}
	req := &policyv1.EvaluateRequest{Principal: s.principal, Target: s.target, SessionId: s.id, Command: &policyv1.EvaluateRequest_K8S{K8S: cmd}}
	d, cached := w.k.Decide(ctx, req, s.pkey, cacheKey(cmd), nil)
	if d.GetAction() != "deny" && len(d.GetMasks()) > 0 && info.Subresource == "portforward" {
		// exec and attach output is masked; forwarded bytes cannot be.
		d = w.k.Count(&policyv1.Decision{Action: "deny", Rule: ruleMaskedStream, Revision: d.GetRevision(), K8S: d.GetK8S(), Grants: d.GetGrants(),
			Reason: "masking applies to you on this target, and a port-forward carries data Sluice cannot mask"})
	}
	text := requestLine(r, rest)
	bodyCut := false
	if len(body) > 0 {
		// What a write sends is what an approver approves and the record
		// keeps: masked (Secret values, the detectors), at most 4 KiB.
		var excerpt string
		excerpt, bodyCut = w.bodyExcerpt(body, info.Resource)
		text += "\n" + excerpt
	}
	var bodyHash string
	if len(body) > 0 {
		sum := sha256.Sum256(body)
		bodyHash = hex.EncodeToString(sum[:])
	}
	id := s.nextCommand()
	s.commands.Add(1)
	seq, err := s.emit(&sessionv1.Event{Body: &sessionv1.Event_Command{Command: &sessionv1.Command{CommandId: id, Text: text, Via: info.Verb,
		ParametersHash: bodyHash, Decision: gateway.Recorded(d), Cached: cached}}})
	if err != nil {
		status(rw, http.StatusServiceUnavailable, "ServiceUnavailable", "sluice: the audit stream is not accepting records; nothing runs unrecorded")
		return
	}
	result := func(code int, rows int64) { s.result(id, code, rows, start) }
	switch d.GetAction() {
	case "allow":
	case "review":
		// The approver reads the body whole but for Secrets' values, and
		// how it is to be read (a merge patch replaces lists whole).
		shown, shownCut := kubemask.Shown(requestLine(r, rest), r.Header.Get("Content-Type"), info.Resource, body, maxExcerpt)
		if bodyCut || shownCut {
			// An approver is shown the body cut: what they approve would
			// not be all that runs.
			msg := fmt.Sprintf("sluice: %s; it needs approval, but its body (%d bytes) is longer than an approver is shown (%d bytes): it cannot be approved as one request", d.GetReason(), len(body), maxExcerpt)
			status(rw, http.StatusForbidden, "Forbidden", msg)
			result(http.StatusForbidden, 0)
			return
		}
		if msg, ok := s.review(ctx, d, id, text, shown, gateway.CommandHash(text, bodyHash+"\x00"+r.Header.Get("Content-Type"))); !ok {
			status(rw, http.StatusForbidden, "Forbidden", msg)
			result(http.StatusForbidden, 0)
			return
		}
	default:
		s.denied.Add(1)
		status(rw, http.StatusForbidden, "Forbidden", fmt.Sprintf("sluice: denied by rule %q: %s", d.GetRule(), d.GetReason()))
		result(http.StatusForbidden, 0)
		return
	}
	if isUpgrade(r) && !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		// After the decision: a stream the policy denies says so, whichever
		// protocol the client tried. kubectl tries SPDY when its websocket
		// attempt failed: it gets the cluster's answer to that attempt.
		if code, body, ok := s.upgradeFailure(rest); ok {
			rw.Header().Set("Content-Type", "application/json")
			rw.WriteHeader(code)
			_, _ = rw.Write(body)
			result(code, 0)
			return
		}
		status(rw, http.StatusBadRequest, "BadRequest", "sluice: only websocket streams are supported (SPDY is refused); kubectl 1.30 or later uses websockets")
		result(http.StatusBadRequest, 0)
		return
	}
	// The record is durable before the cluster sees the request, and so
	// before any response is released.
	if err := s.rec.WaitFor(ctx, seq); err != nil {
		if errors.Is(err, recording.ErrNotRecording) {
			status(rw, http.StatusServiceUnavailable, "ServiceUnavailable", "sluice: the request could not be recorded; it did not run")
		} // else the client gave up the request: it did not run, and the session records on
		return
	}
	if s.isEnded() {
		status(rw, http.StatusForbidden, "Forbidden", "sluice: the session has ended")
		return
	}
	if info.Verb == "watch" || (info.Subresource == "log" && kubeclass.Bool(r.URL.Query()["follow"])) {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, w.cfg.MaxWatch)
		defer cancel()
		r = r.WithContext(ctx)
	}
	if isUpgrade(r) {
		// A stream is relayed here, every message recorded.
		release, ok := w.takeStream(s.pkey)
		if !ok {
			msg := fmt.Sprintf("sluice: at most %d streams (exec, attach, port-forward) at once per principal", w.cfg.MaxStreams)
			status(rw, http.StatusTooManyRequests, "TooManyRequests", msg)
			result(http.StatusTooManyRequests, 0)
			return
		}
		defer release()
		var code int
		upgraded, code = s.relayStream(rw, r, rest, up, info, start, d, id)
		result(code, 0)
		return upgraded
	}
	cw := &countingWriter{ResponseWriter: rw, status: http.StatusOK}
	s.forward(cw, r, rest, body, up, d, id, info)
	result(cw.status, cw.lines(info))
	return false
}

func streamingSubresource(sub string) bool {
	return sub == "exec" || sub == "attach" || sub == "portforward"
}

// cacheKey is a decision's cache key: everything the policy classifies
// (method, path and query), besides who and where.
func cacheKey(c *policyv1.K8SCommand) string {
	key := c.GetMethod() + "\x00" + c.GetPath() + "\x00" + c.GetQuery()
	if len(c.GetBody()) > 0 {
		sum := sha256.Sum256(c.GetBody())
		key += "\x00" + c.GetContentType() + "\x00" + hex.EncodeToString(sum[:])
	}
	return key
}

// forward sends the request to the cluster as the gateway, and the
// response back, masked when the policy masks.
func (s *session) forward(rw http.ResponseWriter, r *http.Request, rest string, body []byte, up *upstream, d *policyv1.Decision, id uint64, info kubeclass.Request) {
	server := up.Server
	masked := len(d.GetMasks()) > 0
	var m *responseMasker
	switch {
	case masked:
		var err error
		if m, err = s.newMasker(d, id, info); err != nil {
			status(rw, http.StatusInternalServerError, "InternalError", "sluice: the masking rules cannot be applied")
			return
		}
	case info.Resource == "secrets" && info.Mutating():
		// A write answers with the Secret it changed (a patch, a delete, a
		// dry run): what a policy lets write is not what it lets read, so
		// its values are redacted whoever asked.
		masked, m = true, &responseMasker{s: s, id: id, info: info, k: kubemask.New(s.w.bodyMasker, info.Resource)}
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			out := pr.Out
			out.URL.Scheme, out.URL.Host = server.Scheme, server.Host
			out.URL.Path = strings.TrimSuffix(server.Path, "/") + rest
			out.URL.RawPath = ""
			out.URL.RawQuery = kubeclass.ForwardQuery(r.Method, r.URL.RawQuery)
			out.Host = server.Host
			// The client says nothing about who it is to the cluster.
			for h := range out.Header {
				if l := strings.ToLower(h); l == "authorization" || strings.HasPrefix(l, "impersonate-") || strings.HasPrefix(l, "x-remote-") || l == "cookie" {
					out.Header.Del(h)
				}
			}
			out.Header.Set("Authorization", "Bearer "+up.Token)
			if up.spec.GetImpersonate() {
				// Refused before forwarding (handle) when it cannot be.
				_ = targets.Impersonate(out.Header, s.principal)
			}
			if masked {
				// JSON only (never protobuf), uncompressed: masking reads
				// every byte.
				out.Header.Set("Accept", jsonAccept(out.Header.Get("Accept")))
				out.Header.Del("Accept-Encoding")
			}
			if body != nil {
				out.Body = io.NopCloser(bytes.NewReader(body))
				out.ContentLength = int64(len(body))
			}
		},
		Transport:     up.Transport,
		FlushInterval: -1,
		ErrorHandler: func(rw http.ResponseWriter, _ *http.Request, err error) {
			if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
				return
			}
			s.w.cfg.Log.Warn().Err(err).Str("target", s.target.GetName()).Msg("cluster request failed")
			status(rw, http.StatusBadGateway, "ServiceUnavailable", "sluice: the cluster did not answer")
		},
	}
	if m != nil {
		rp.ModifyResponse = m.modify
	}
	rp.ServeHTTP(rw, r)
	if m != nil {
		m.record()
	}
}

// jsonAccept keeps the JSON forms a client asked for (Table included) and
// drops protobuf; without any, plain JSON.
func jsonAccept(accept string) string {
	var keep []string
	for _, part := range strings.Split(accept, ",") {
		p := strings.TrimSpace(part)
		mt, _, _ := strings.Cut(p, ";")
		if strings.TrimSpace(mt) == "application/json" {
			keep = append(keep, p)
		}
	}
	if len(keep) == 0 {
		return "application/json"
	}
	return strings.Join(keep, ", ")
}

// status answers with a Kubernetes Status, which kubectl prints.
func status(rw http.ResponseWriter, code int, reason, msg string) {
	rw.Header().Set("Content-Type", "application/json")
	rw.WriteHeader(code)
	_ = json.NewEncoder(rw).Encode(map[string]any{"kind": "Status", "apiVersion": "v1", "metadata": map[string]any{},
		"status": "Failure", "message": msg, "reason": reason, "code": code})
}

// countingWriter remembers the status and counts a watch's events.
type countingWriter struct {
	http.ResponseWriter
	status  int
	wrote   bool
	newline int64
}

func (c *countingWriter) WriteHeader(code int) {
	if !c.wrote {
		c.status, c.wrote = code, true
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *countingWriter) Write(b []byte) (int, error) {
	c.wrote = true
	c.newline += int64(bytes.Count(b, []byte{'\n'}))
	return c.ResponseWriter.Write(b)
}

func (c *countingWriter) Flush() {
	if f, ok := c.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets the proxy reach the connection (upgrades).
func (c *countingWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// lines is what the result records: a watch's events (one per line).
func (c *countingWriter) lines(info kubeclass.Request) int64 {
	if info.Verb == "watch" {
		return c.newline
	}
	return 0
}

// upgradeFailures keeps the cluster's refusals of websocket streams, by
// principal, target and path, for ten seconds: kubectl then tries SPDY
// (on another connection), which is refused, and gets that answer.
type upgradeFailures struct {
	mu sync.Mutex
	m  map[string]upgradeFailure
}

type upgradeFailure struct {
	code int
	body []byte
	at   time.Time
}

func (s *session) upgradeKey(path string) string {
	return string(s.pkey[:]) + "\x00" + s.target.GetName() + "\x00" + path
}

func (s *session) noteUpgradeFailure(path string, resp *http.Response) {
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	if err != nil {
		return
	}
	u := &s.w.upgrades
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.m == nil || len(u.m) > 1000 {
		u.m = map[string]upgradeFailure{}
	}
	u.m[s.upgradeKey(path)] = upgradeFailure{code: resp.StatusCode, body: body, at: time.Now()}
}

func (s *session) upgradeFailure(path string) (int, []byte, bool) {
	u := &s.w.upgrades
	u.mu.Lock()
	defer u.mu.Unlock()
	f, ok := u.m[s.upgradeKey(path)]
	if !ok || time.Since(f.at) > 10*time.Second {
		return 0, nil, false
	}
	delete(u.m, s.upgradeKey(path))
	return f.code, f.body, true
}

// maxExcerpt bounds the part of a request body a record and an approval
// show; a request held for approval whose body is longer is refused.
const maxExcerpt = 12 << 10

// bodyExcerpt is a request body as a record shows it: masked as a response
// would be for a masked principal, cut to maxExcerpt.
func (w *Worker) bodyExcerpt(body []byte, resource string) (excerpt string, cut bool) {
	return kubemask.RequestExcerpt(w.bodyMasker, resource, body, maxExcerpt)
}
