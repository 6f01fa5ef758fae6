// Package kubemask masks what a Kubernetes API server answers, for every
// worker that reads a cluster: Secret values (data, stringData and
// kubectl's last-applied annotation, which holds them too) are redacted,
// and the value detectors run on every string. JSON is rewritten whole or
// event by event (a watch); text (logs) as a stream.
package kubemask

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"

	"sluice.dev/sluice/libs/masking"
)

// RedactedData is what a Secret's data value becomes: "[redacted]",
// base64-encoded as the field is.
const RedactedData = "W3JlZGFjdGVkXQ=="

// lastApplied is the annotation kubectl apply keeps the whole applied
// object in (a Secret's values included).
const lastApplied = "kubectl.kubernetes.io/last-applied-configuration"

// Masker masks the responses of one request. Resource is the request's
// resource: the items of a secrets list carry no kind, so they are known
// by it. Safe for one response at a time; counts are safe to read while a
// stream is being masked.
type Masker struct {
	m        *masking.Masker
	resource string

	mu        sync.Mutex
	secrets   int64
	detectors masking.Counts
}

// New returns a masker for responses to a request on resource. With m nil
// it redacts Secrets' values only.
func New(m *masking.Masker, resource string) *Masker {
	return &Masker{m: m, resource: resource}
}

// Counts returns how many Secret values were redacted and what the
// detectors found.
func (k *Masker) Counts() (secrets int64, detectors masking.Counts) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.secrets, k.detectors
}

// JSON masks one JSON document.
func (k *Masker) JSON(data []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return json.Marshal(k.walk(v, false))
}

// Watch masks a watch stream, event by event.
func (k *Masker) Watch(dst io.Writer, src io.Reader) error {
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
		b, err := json.Marshal(k.walk(ev, false))
		if err != nil {
			return err
		}
		if _, err := dst.Write(append(b, '\n')); err != nil {
			return err
		}
	}
}

// Text masks a text stream (logs).
func (k *Masker) Text(dst io.Writer, src io.Reader) error {
	st := k.m.NewStream()
	buf := make([]byte, 32<<10)
	defer func() {
		k.mu.Lock()
		k.detectors.Add(&st.Counts)
		k.mu.Unlock()
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
func (k *Masker) walk(v any, secret bool) any {
	switch x := v.(type) {
	case map[string]any:
		kind, _ := x["kind"].(string)
		isSecret := secret || kind == "Secret" || (k.resource == "secrets" && isObject(x))
		if isSecret && isObject(x) {
			k.redactSecret(x)
		}
		var renamed map[string]any
		for key, e := range x {
			// Items of a SecretList (and of a secrets list in any form)
			// are Secrets without their kind.
			itemsAreSecrets := key == "items" && (kind == "SecretList" || (k.resource == "secrets" && kind != "Table"))
			v := k.walk(e, itemsAreSecrets)
			// Keys are data too (a ConfigMap's keys can be anything).
			if mk := k.String(key); mk != key {
				if renamed == nil {
					renamed = map[string]any{}
				}
				renamed[mk] = v
				delete(x, key)
				continue
			}
			x[key] = v
		}
		for key, v := range renamed {
			x[key] = v
		}
		return x
	case []any:
		for i, e := range x {
			x[i] = k.walk(e, secret)
		}
		return x
	case string:
		return k.String(x)
	}
	return v
}

// isObject: a map with metadata is an API object.
func isObject(m map[string]any) bool {
	_, ok := m["metadata"].(map[string]any)
	return ok
}

func (k *Masker) redactSecret(x map[string]any) {
	n := int64(0)
	if data, ok := x["data"].(map[string]any); ok {
		for key := range data {
			data[key] = RedactedData
			n++
		}
	}
	if data, ok := x["stringData"].(map[string]any); ok {
		for key := range data {
			data[key] = "[redacted]"
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
	k.mu.Lock()
	k.secrets += n
	k.mu.Unlock()
}

// String masks one string with the detectors (a header value, a key).
func (k *Masker) String(v string) string {
	if k.m == nil || !k.m.Contains([]byte(v)) {
		return v
	}
	var c masking.Counts
	out := string(k.m.AppendMasked(nil, []byte(v), &c))
	k.mu.Lock()
	k.detectors.Add(&c)
	k.mu.Unlock()
	return out
}

// RequestExcerpt is a request body as a record keeps it: masked as a
// response would be for a masked principal (Secret values, m's
// detectors), cut to limit bytes; cut says it was longer.
func RequestExcerpt(m *masking.Masker, resource string, body []byte, limit int) (string, bool) {
	out, err := New(m, resource).JSON(body)
	if err != nil {
		var c masking.Counts
		out = m.AppendMasked(nil, body, &c)
	}
	return cutAt(out, limit)
}

// Shown is a held request as its approver reads it: the request line, the
// body's content type, and the body whole but for Secrets' values. The
// detectors that mask records do not apply: a value they would hide (an
// email in a RoleBinding, a script that looks like a key) is what the
// approver approves. A body that is not JSON is shown as sent, except a
// Secret's, which is not shown at all. cut says the body was longer than
// limit bytes.
func Shown(line, contentType, resource string, body []byte, limit int) (shown string, cut bool) {
	if len(body) == 0 {
		return line, false
	}
	out, err := New(nil, resource).JSON(body)
	switch {
	case err == nil:
	case resource == "secrets":
		out = fmt.Appendf(nil, "(a Secret's body of %d bytes that is not JSON: its values are not shown)", len(body))
	default:
		out = body
	}
	b, cut := cutAt(out, limit)
	return line + "\nContent-Type: " + contentType + "\n" + b, cut
}

// cutAt is out as text, cut to limit bytes (cut says it was longer).
func cutAt(out []byte, limit int) (string, bool) {
	cut := false
	if len(out) > limit {
		out, cut = append(out[:limit:limit], "…"...), true
	}
	return strings.ToValidUTF8(string(out), "\uFFFD"), cut
}
