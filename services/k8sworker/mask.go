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
	"sync"

	"sluice.dev/sluice/libs/gateway"
	"sluice.dev/sluice/libs/kubeclass"
	"sluice.dev/sluice/libs/masking"
	policyv1 "sluice.dev/sluice/proto/sluice/policy/v1"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
)

// redactedData is what a Secret's data value becomes: "[redacted]",
// base64-encoded as the field is.
const redactedData = "W3JlZGFjdGVkXQ=="

// lastApplied is the annotation kubectl apply keeps the whole applied
// object in (a Secret's values included).
const lastApplied = "kubectl.kubernetes.io/last-applied-configuration"

// responseMasker masks the responses of one request: Secret values are
// redacted, the value detectors run on every string; JSON is rewritten
// whole (or event by event for a watch), text (logs) as a stream. A
// response in any other form is refused: nothing passes unread.
type responseMasker struct {
	s    *session
	id   uint64
	info kubeclass.Request
	m    *masking.Masker

	mu        sync.Mutex
	secrets   int64
	detectors masking.Counts
}

func (s *session) newMasker(d *policyv1.Decision, id uint64, info kubeclass.Request) (*responseMasker, error) {
	m, err := s.w.k.Masker(gateway.MaskRulesKey(d), d)
	if err != nil {
		return nil, err
	}
	return &responseMasker{s: s, id: id, info: info, m: m}, nil
}

func (rm *responseMasker) modify(resp *http.Response) error {
	if resp.StatusCode == http.StatusSwitchingProtocols {
		// Streams are refused before they start when masking applies.
		return fmt.Errorf("a stream cannot be masked")
	}
	if resp.Body == nil || resp.Body == http.NoBody || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	switch {
	case mt == "application/json" && rm.info.Verb == "watch":
		resp.Body = rm.pipe(resp.Body, rm.watch)
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
		out, err := rm.json(data)
		if err != nil {
			refuse(resp, "sluice: the cluster's answer could not be read for masking; it is withheld")
			return nil
		}
		resp.Body = io.NopCloser(bytes.NewReader(out))
		resp.ContentLength = int64(len(out))
		resp.Header.Set("Content-Length", strconv.Itoa(len(out)))
	case strings.HasPrefix(mt, "text/"):
		resp.Body = rm.pipe(resp.Body, rm.text)
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

// json masks one JSON document.
func (rm *responseMasker) json(data []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return json.Marshal(rm.walk(v, false))
}

// watch masks a watch stream, event by event.
func (rm *responseMasker) watch(dst io.Writer, src io.Reader) error {
	dec := json.NewDecoder(src)
	dec.UseNumber()
	for {
		var ev any
		if err := dec.Decode(&ev); err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
		b, err := json.Marshal(rm.walk(ev, false))
		if err != nil {
			return err
		}
		if _, err := dst.Write(append(b, '\n')); err != nil {
			return err
		}
	}
}

// text masks a text stream (logs).
func (rm *responseMasker) text(dst io.Writer, src io.Reader) error {
	st := rm.m.NewStream()
	buf := make([]byte, 32<<10)
	defer func() {
		rm.mu.Lock()
		rm.detectors.Add(&st.Counts)
		rm.mu.Unlock()
	}()
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if out := st.Write(buf[:n]); len(out) > 0 {
				if _, werr := dst.Write(out); werr != nil {
					return werr
				}
			}
		}
		if err == io.EOF {
			_, werr := dst.Write(st.Flush())
			return werr
		}
		if err != nil {
			return err
		}
	}
}

// walk masks a decoded value: Secrets' values redacted (secret says the
// value is a Secret even without its kind, as list items are), every
// string through the detectors.
func (rm *responseMasker) walk(v any, secret bool) any {
	switch x := v.(type) {
	case map[string]any:
		kind, _ := x["kind"].(string)
		isSecret := secret || kind == "Secret" || (rm.info.Resource == "secrets" && isObject(x))
		if isSecret && isObject(x) {
			rm.redactSecret(x)
		}
		for k, e := range x {
			// Items of a SecretList (and of a secrets list in any form)
			// are Secrets without their kind.
			itemsAreSecrets := k == "items" && (kind == "SecretList" || (rm.info.Resource == "secrets" && kind != "Table"))
			x[k] = rm.walk(e, itemsAreSecrets)
		}
		return x
	case []any:
		for i, e := range x {
			x[i] = rm.walk(e, secret)
		}
		return x
	case string:
		var c masking.Counts
		if !rm.m.Contains([]byte(x)) {
			return x
		}
		out := string(rm.m.AppendMasked(nil, []byte(x), &c))
		rm.mu.Lock()
		rm.detectors.Add(&c)
		rm.mu.Unlock()
		return out
	}
	return v
}

// isObject: a map with metadata is an API object.
func isObject(m map[string]any) bool {
	_, ok := m["metadata"].(map[string]any)
	return ok
}

func (rm *responseMasker) redactSecret(x map[string]any) {
	n := int64(0)
	if data, ok := x["data"].(map[string]any); ok {
		for k := range data {
			data[k] = redactedData
			n++
		}
	}
	if data, ok := x["stringData"].(map[string]any); ok {
		for k := range data {
			data[k] = "[redacted]"
			n++
		}
	}
	if md, ok := x["metadata"].(map[string]any); ok {
		if ann, ok := md["annotations"].(map[string]any); ok {
			if _, ok := ann[lastApplied]; ok {
				ann[lastApplied] = "[redacted]"
				n++
			}
		}
	}
	rm.mu.Lock()
	rm.secrets += n
	rm.mu.Unlock()
}

// record records what was masked.
func (rm *responseMasker) record() {
	rm.mu.Lock()
	defer rm.mu.Unlock()
	var counts []*sessionv1.MaskCount
	if rm.secrets > 0 {
		counts = append(counts, &sessionv1.MaskCount{Field: "secret.data", Count: rm.secrets})
	}
	rm.detectors.Each(func(name string, n int64) {
		if n > 0 {
			counts = append(counts, &sessionv1.MaskCount{Detector: name, Count: n, Field: "response"})
		}
	})
	if len(counts) > 0 {
		_, _ = rm.s.emit(&sessionv1.Event{Body: &sessionv1.Event_Masking{Masking: &sessionv1.Masking{CommandId: rm.id, Counts: counts}}})
	}
}
