package mcpworker

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"sluice.dev/sluice/libs/approvalstate"
	"sluice.dev/sluice/libs/gateway"
	"sluice.dev/sluice/libs/kubeclass"
	"sluice.dev/sluice/libs/kubemask"
	"sluice.dev/sluice/libs/masking"
	"sluice.dev/sluice/libs/targets"
	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
	policyv1 "sluice.dev/sluice/proto/sluice/policy/v1"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
)

// Limits of kube_request.
const (
	maxKubeBody     = 3 << 20
	maxKubeResponse = 4 << 20
)

type kubeRequestIn struct {
	Target      string `json:"target" jsonschema:"the Kubernetes target's name (list_targets shows them)"`
	Method      string `json:"method,omitempty" jsonschema:"GET (the default), POST, PUT, PATCH or DELETE"`
	Path        string `json:"path" jsonschema:"the API path with its query, as kubectl get --raw takes it: /api/v1/namespaces/default/pods, /apis/apps/v1/namespaces/web/deployments/api, /api/v1/namespaces/default/pods/p/log?tailLines=50"`
	Body        any    `json:"body,omitempty" jsonschema:"the request body (a Kubernetes object or patch) for POST, PUT and PATCH"`
	ContentType string `json:"content_type,omitempty" jsonschema:"for PATCH: application/merge-patch+json (the default), application/strategic-merge-patch+json or application/json-patch+json"`
	WaitSeconds int    `json:"wait_seconds,omitempty" jsonschema:"if the call is held for approval, wait up to this many seconds (at most 120) before answering pending_approval (default 0: answer at once)"`
}

type kubeResponse struct {
	StatusCode int    `json:"status_code" jsonschema:"the API server's HTTP status"`
	Body       any    `json:"body,omitempty" jsonschema:"the API server's answer: a JSON object (masked), or text (logs)"`
	Truncated  bool   `json:"truncated,omitempty"`
	Error      string `json:"error,omitempty"`
}

func (w *Worker) kubeRequestTool(ctx context.Context, req *mcp.CallToolRequest, in kubeRequestIn) (*mcp.CallToolResult, callResult, error) {
	s, err := w.sessionFor(ctx, req)
	if err != nil {
		return nil, callResult{}, err
	}
	c, e := w.kubeCall(ctx, s, req, in)
	if e != nil {
		r := callResult{Status: statusError, Tool: toolKube, Target: in.Target, Error: e}
		return toolResult(r), r, nil
	}
	r := w.do(ctx, s, req, c, seconds(in.WaitSeconds))
	return toolResult(r), r, nil
}

// kubeCall prepares a kube_request call: a Kubernetes API request,
// classified and ruled on exactly as the Kubernetes worker rules on one.
func (w *Worker) kubeCall(ctx context.Context, s *session, req *mcp.CallToolRequest, in kubeRequestIn) (*call, *callError) {
	spec, e := w.target(ctx, in.Target, "kubernetes", toolKube)
	if e != nil {
		return nil, e
	}
	method := strings.ToUpper(strings.TrimSpace(in.Method))
	if method == "" {
		method = http.MethodGet
	}
	switch method {
	case http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
	default:
		return nil, fail("invalid_arguments", "method must be GET, POST, PUT, PATCH or DELETE")
	}
	u, err := url.Parse(in.Path)
	if err != nil || u.Scheme != "" || u.Host != "" || u.RawPath != "" || !strings.HasPrefix(u.Path, "/") {
		return nil, fail("invalid_arguments", "path must be an API path such as /api/v1/namespaces/default/pods (no host, no percent-encoding)")
	}
	info, err := kubeclass.Classify(method, u.Path, u.Query())
	if err != nil {
		return nil, fail("invalid_arguments", "%v", err)
	}
	switch {
	case info.Verb == "watch" || (info.Subresource == "log" && kubeclass.Bool(u.Query()["follow"])):
		return nil, fail("not_supported", "watches and followed logs stream without end; over MCP ask for a list or the last lines (tailLines)")
	case info.Subresource == "exec" || info.Subresource == "attach" || info.Subresource == "portforward" || info.Subresource == "proxy":
		return nil, fail("not_supported", "%s opens a stream, which MCP calls do not carry", info.Subresource)
	}
	var body []byte
	if in.Body != nil {
		if method == http.MethodGet {
			return nil, fail("invalid_arguments", "a GET takes no body")
		}
		if body, err = json.Marshal(in.Body); err != nil || len(body) > maxKubeBody {
			return nil, fail("invalid_arguments", "body must be a JSON object of at most %d bytes", maxKubeBody)
		}
	}
	contentType := "application/json"
	if method == http.MethodPatch {
		contentType = "application/merge-patch+json"
		switch in.ContentType {
		case "", "application/merge-patch+json":
		case "application/strategic-merge-patch+json", "application/json-patch+json", "application/apply-patch+yaml":
			contentType = in.ContentType
		default:
			return nil, fail("invalid_arguments", "content_type must be a Kubernetes patch type")
		}
	}
	var bodyHash string
	if len(body) > 0 {
		sum := sha256.Sum256(body)
		bodyHash = hex.EncodeToString(sum[:])
	}
	ref := gateway.TargetRef(spec.GetName(), spec.GetKind(), spec.GetLabels())
	cmd := &policyv1.K8SCommand{Method: method, Path: u.Path, Query: u.RawQuery}
	if kubeclass.Workload(info.Resource) && info.Mutating() {
		cmd.Body, cmd.ContentType = body[:min(len(body), kubeclass.MaxPodBody+1)], contentType
	}
	text := method + " " + u.Path
	if u.RawQuery != "" {
		text += "?" + u.RawQuery
	}
	c := &call{
		tool: toolKube, target: ref, text: text, paramsHash: bodyHash, hashKind: "k8s",
		req: &policyv1.EvaluateRequest{Principal: s.principal, Target: ref, SessionId: s.id,
			Command: &policyv1.EvaluateRequest_K8S{K8S: cmd},
			Mcp:     &policyv1.MCPInput{Tool: toolKube, Arguments: args(req), Client: s.client}},
		key: cacheKey(toolKube, s.client, req),
	}
	if len(body) > 0 {
		// An approver reads the body whole (but for Secrets' values) and
		// how it is to be read (a merge patch replaces lists whole).
		var cut bool
		c.shown, cut = kubemask.Shown(text, contentType, info.Resource, body, approvalstate.MaxCommandExcerpt)
		if cut {
			c.unshown = max(len(body), approvalstate.MaxCommandExcerpt+1)
		}
	}
	kspec := spec.GetKubernetes()
	c.run = func(ctx context.Context, id uint64, d *policyv1.Decision) callResult {
		return w.runKube(ctx, s, c, kspec, method, u, contentType, body, info, id, d)
	}
	return c, nil
}

// runKube sends an allowed (or approved) request to the cluster as the
// gateway, and returns its answer masked.
func (w *Worker) runKube(ctx context.Context, s *session, c *call, t *controlv1.KubernetesTarget, method string, u *url.URL,
	contentType string, body []byte, info kubeclass.Request, id uint64, d *policyv1.Decision) callResult {
	res := callResult{Tool: c.tool, Target: c.target.GetName()}
	start := time.Now()
	k, err := targets.KubernetesClient(t, w.cfg.MasterKey)
	if err != nil {
		w.cfg.Log.Warn().Err(err).Str("target", c.target.GetName()).Msg("target misconfigured")
		res.Status, res.Error = statusError, fail("target_unreachable", "the target is misconfigured; ask an administrator")
		w.recordFailure(s, id, start, "target_misconfigured", err.Error())
		return res
	}
	defer k.Transport.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(ctx, w.cfg.CallTimeout)
	defer cancel()
	target := *k.Server
	target.Path = strings.TrimSuffix(k.Server.Path, "/") + u.Path
	target.RawQuery = kubeclass.ForwardQuery(method, u.RawQuery)
	hreq, err := http.NewRequestWithContext(ctx, method, target.String(), bytes.NewReader(body))
	if err != nil {
		res.Status, res.Error = statusError, fail("invalid_arguments", "the request cannot be made: %v", err)
		return res
	}
	hreq.Header.Set("Authorization", "Bearer "+k.Token)
	hreq.Header.Set("Accept", "application/json, */*")
	if len(body) > 0 {
		hreq.Header.Set("Content-Type", contentType)
	}
	if t.GetImpersonate() {
		if err := targets.Impersonate(hreq.Header, s.principal); err != nil {
			res.Status, res.Error = statusError, fail("forbidden", "%v", err)
			w.recordFailure(s, id, start, "forbidden", err.Error())
			return res
		}
	}
	// A redirect would take the gateway's token to a path nobody ruled on.
	client := &http.Client{Transport: k.Transport, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(hreq)
	if err != nil {
		w.cfg.Log.Warn().Err(err).Str("target", c.target.GetName()).Msg("cluster request failed")
		res.Status, res.Error = statusError, fail("target_unreachable", "the cluster did not answer")
		w.recordFailure(s, id, start, "target_unreachable", err.Error())
		return res
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxKubeResponse+1))
	out := &kubeResponse{StatusCode: resp.StatusCode}
	record := func(errCode, errMsg string) {
		_, _ = s.emit(&sessionv1.Event{Body: &sessionv1.Event_Result{Result: &sessionv1.Result{CommandId: id,
			CommandTag: fmt.Sprintf("HTTP %d", resp.StatusCode), DurationUs: time.Since(start).Microseconds(), ErrorCode: errCode, ErrorMessage: errMsg}}})
	}
	switch {
	case err != nil:
		res.Status, res.Error = statusError, fail("target_unreachable", "the cluster's answer could not be read")
		record("read_failed", err.Error())
		return res
	case len(data) > maxKubeResponse:
		res.Status, res.Error = statusError, fail("too_large", "the answer is larger than %d bytes; narrow the request (a labelSelector, limit, tailLines)", maxKubeResponse)
		record("too_large", "")
		return res
	}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	var km *kubemask.Masker
	if len(d.GetMasks()) > 0 {
		m, err := w.k.Masker(gateway.MaskRulesKey(d), d)
		if err != nil {
			res.Status, res.Error = statusError, fail("masking_unavailable", "the masking rules cannot be applied")
			record("masking_unavailable", "")
			return res
		}
		km = kubemask.New(m, info.Resource)
	} else if info.Resource == "secrets" && info.Mutating() {
		// A write answers with the Secret it changed: what a policy lets
		// write is not what it lets read, so its values are redacted
		// whoever asked.
		km = kubemask.New(writeAnswers, info.Resource)
	}
	switch {
	case mt == "application/json":
		if km != nil {
			if data, err = km.JSON(data); err != nil {
				res.Status, res.Error = statusError, fail("masking_unavailable", "the cluster's answer could not be read for masking; it is withheld")
				record("masking_unavailable", "")
				return res
			}
		}
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		var v any
		if err := dec.Decode(&v); err == nil {
			out.Body = v
		}
	case strings.HasPrefix(mt, "text/") || mt == "":
		if km != nil {
			var b bytes.Buffer
			if err := km.Text(&b, bytes.NewReader(data)); err != nil {
				res.Status, res.Error = statusError, fail("masking_unavailable", "the cluster's answer could not be masked; it is withheld")
				record("masking_unavailable", "")
				return res
			}
			data = b.Bytes()
		}
		out.Body = strings.ToValidUTF8(string(data), "\uFFFD")
	default:
		res.Status, res.Error = statusError, fail("not_supported", "the cluster answered in a form Sluice does not return (%s)", mt)
		record("not_supported", mt)
		return res
	}
	if km != nil {
		secrets, detectors := km.Counts()
		var counts []*sessionv1.MaskCount
		if secrets > 0 {
			counts = append(counts, &sessionv1.MaskCount{Field: "secret.data", Count: secrets})
			res.Masked = append(res.Masked, maskedCount{Field: "secret.data", Count: secrets})
		}
		detectors.Each(func(name string, n int64) {
			if n > 0 {
				counts = append(counts, &sessionv1.MaskCount{Detector: name, Count: n, Field: "response"})
				res.Masked = append(res.Masked, maskedCount{Detector: name, Field: "response", Count: n})
			}
		})
		if len(counts) > 0 {
			_, _ = s.emit(&sessionv1.Event{Body: &sessionv1.Event_Masking{Masking: &sessionv1.Masking{CommandId: id, Counts: counts}}})
		}
	}
	record("", "")
	res.Kube = out
	res.Status = statusOK
	if resp.StatusCode >= 400 {
		res.Status = statusError
		msg := http.StatusText(resp.StatusCode)
		if m, ok := out.Body.(map[string]any); ok {
			if s, ok := m["message"].(string); ok {
				msg = s
			}
		}
		res.Error = &callError{Code: fmt.Sprint(resp.StatusCode), Message: msg}
	}
	return res
}

// writeAnswers masks a write's answer when no mask rule applies: every
// detector, redacting.
var writeAnswers = func() *masking.Masker {
	m, err := masking.New(masking.Config{Action: masking.Action{Kind: masking.Redact}})
	if err != nil {
		panic(err)
	}
	return m
}()
