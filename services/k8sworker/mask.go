package k8sworker

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"sluice.dev/sluice/libs/gateway"
	"sluice.dev/sluice/libs/kubeclass"
	"sluice.dev/sluice/libs/kubemask"
	policyv1 "sluice.dev/sluice/proto/sluice/policy/v1"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
)

// responseMasker masks the responses of one request: Secret values are
// redacted, the value detectors run on every string; JSON is rewritten
// whole (or event by event for a watch), text (logs) as a stream. A
// response in any other form is refused: nothing passes unread.
type responseMasker struct {
	s    *session
	id   uint64
	info kubeclass.Request
	k    *kubemask.Masker
}

func (s *session) newMasker(d *policyv1.Decision, id uint64, info kubeclass.Request) (*responseMasker, error) {
	m, err := s.w.k.Masker(gateway.MaskRulesKey(d), d)
	if err != nil {
		return nil, err
	}
	return &responseMasker{s: s, id: id, info: info, k: kubemask.New(m, info.Resource)}, nil
}

func (rm *responseMasker) modify(resp *http.Response) error {
	if resp.StatusCode == http.StatusSwitchingProtocols {
		// Streams are refused before they start when masking applies.
		return fmt.Errorf("a stream cannot be masked")
	}
	// Warnings (kubectl prints them) can carry values too.
	for i, v := range resp.Header.Values("Warning") {
		resp.Header["Warning"][i] = rm.k.String(v)
	}
	if resp.Body == nil || resp.Body == http.NoBody || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	switch {
	case mt == "application/json" && rm.info.Verb == "watch":
		resp.Body = rm.pipe(resp.Body, rm.k.Watch)
	case mt == "application/json":
		data, err := io.ReadAll(io.LimitReader(resp.Body, rm.s.w.cfg.MaxMasked+1))
		resp.Body.Close()
		if err != nil {
			return err
		}
		if int64(len(data)) > rm.s.w.cfg.MaxMasked {
			refuse(resp, fmt.Sprintf("sluice: the response is larger than %d bytes and masking applies to you; narrow the request", rm.s.w.cfg.MaxMasked))
			return nil
		}
		out, err := rm.k.JSON(data)
		if err != nil {
			refuse(resp, "sluice: the cluster's answer could not be read for masking; it is withheld")
			return nil
		}
		resp.Body = io.NopCloser(bytes.NewReader(out))
		resp.ContentLength = int64(len(out))
		resp.Header.Set("Content-Length", strconv.Itoa(len(out)))
	case strings.HasPrefix(mt, "text/"):
		resp.Body = rm.pipe(resp.Body, rm.k.Text)
	default:
		resp.Body.Close()
		refuse(resp, fmt.Sprintf("sluice: the cluster answered in a form Sluice cannot mask (%s); masking applies to you, so it is withheld", mt))
		return nil
	}
	if resp.Body != nil {
		resp.ContentLength = -1
		resp.Header.Del("Content-Length")
	}
	resp.Header.Del("Content-Encoding")
	return nil
}

// refuse replaces a response with a Status.
func refuse(resp *http.Response, msg string) {
	b, _ := json.Marshal(map[string]any{"kind": "Status", "apiVersion": "v1", "metadata": map[string]any{},
		"status": "Failure", "message": msg, "reason": "InternalError", "code": http.StatusBadGateway})
	resp.StatusCode, resp.Status = http.StatusBadGateway, "502 Bad Gateway"
	resp.Header = http.Header{"Content-Type": {"application/json"}, "Content-Length": {strconv.Itoa(len(b))}}
	resp.Body = io.NopCloser(bytes.NewReader(b))
	resp.ContentLength = int64(len(b))
}

// pipe runs a masking copy of body.
func (rm *responseMasker) pipe(body io.ReadCloser, copyFn func(io.Writer, io.Reader) error) io.ReadCloser {
	pr, pw := io.Pipe()
	go func() {
		err := copyFn(pw, body)
		body.Close()
		pw.CloseWithError(err)
	}()
	return pr
}

// record records what was masked.
func (rm *responseMasker) record() {
	secrets, detectors := rm.k.Counts()
	var counts []*sessionv1.MaskCount
	if secrets > 0 {
		counts = append(counts, &sessionv1.MaskCount{Field: "secret.data", Count: secrets})
	}
	detectors.Each(func(name string, n int64) {
		if n > 0 {
			counts = append(counts, &sessionv1.MaskCount{Detector: name, Count: n, Field: "response"})
		}
	})
	if len(counts) > 0 {
		_, _ = rm.s.emit(&sessionv1.Event{Body: &sessionv1.Event_Masking{Masking: &sessionv1.Masking{CommandId: rm.id, Counts: counts}}})
	}
}
