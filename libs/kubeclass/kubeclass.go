// Package kubeclass classifies a Kubernetes API request, the `k8s` input of
// policies: verb, API group, resource, subresource, namespace and name as
// the API server itself resolves them (the request-info rules of
// k8s.io/apiserver), and for exec and attach the command and container.
//
// Verbs: get, list and watch for reads (watch also from ?watch=true and the
// legacy /watch/ prefix), create, update, patch, delete, deletecollection.
// exec, attach and portforward are one class whatever the HTTP method (a
// websocket exec is a GET, an SPDY one a POST): the verb is "create" and
// the subresource names them. Paths outside /api and /apis (/version,
// /openapi/v2, /healthz) are non-resource requests: the verb is the lower
// case method and Path says which.
package kubeclass

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
)

// Request is a classified request.
type Request struct {
	Verb        string
	APIGroup    string
	APIVersion  string
	Namespace   string
	Resource    string
	Subresource string
	Name        string
	// Resource requests are under /api or /apis; the others have only a
	// verb and Path.
	IsResource bool
	Path       string
	// Command of an exec (or attach) request, and the container an exec,
	// attach or log request names.
	Command   []string
	Container string
}

// Errors for requests no API server would serve.
var (
	ErrPath = errors.New("kubeclass: not a Kubernetes API path")
)

// Streaming subresources: exec, attach and port forwarding open a stream
// into a container, whatever the method.
var streaming = map[string]bool{"exec": true, "attach": true, "portforward": true}

// Classify classifies a request by its method, path and query.
func Classify(method, path string, query url.Values) (Request, error) {
	r := Request{Path: path}
	if !strings.HasPrefix(path, "/") || strings.Contains(path, "//") || strings.Contains(path, "/../") || strings.HasSuffix(path, "/..") ||
		strings.Contains(path, "/./") || strings.HasSuffix(path, "/.") {
		return r, ErrPath
	}
	parts := splitPath(path)
	if len(parts) == 0 || (parts[0] != "api" && parts[0] != "apis") {
		r.Verb = strings.ToLower(method)
		return r, nil
	}
	// /api/v1/..., /apis/GROUP/VERSION/...
	if parts[0] == "api" {
		if len(parts) < 2 {
			r.Verb = strings.ToLower(method)
			return r, nil
		}
		r.APIVersion = parts[1]
		parts = parts[2:]
	} else {
		if len(parts) < 3 {
			// /apis, /apis/GROUP: discovery.
			r.Verb = strings.ToLower(method)
			return r, nil
		}
		r.APIGroup, r.APIVersion = parts[1], parts[2]
		parts = parts[3:]
	}
	r.IsResource = true
	if len(parts) > 0 && parts[0] == "proxy" {
		// The proxy prefix of old API servers: refused, never guessed.
		return r, ErrPath
	}
	watchPrefix := false
	if len(parts) > 0 && parts[0] == "watch" {
		watchPrefix = true
		parts = parts[1:]
	}
	switch method {
	case http.MethodGet, http.MethodHead:
		r.Verb = "get"
	case http.MethodPost:
		r.Verb = "create"
	case http.MethodPut:
		r.Verb = "update"
	case http.MethodPatch:
		r.Verb = "patch"
	case http.MethodDelete:
		r.Verb = "delete"
	default:
		r.Verb = strings.ToLower(method)
	}
	// namespaces/NS/RESOURCE/... (but namespaces/NS itself is the
	// namespace object, and namespaces/NS/status|finalize its
	// subresources).
	if len(parts) >= 2 && parts[0] == "namespaces" {
		r.Namespace = parts[1]
		if len(parts) >= 3 && parts[2] != "status" && parts[2] != "finalize" {
			parts = parts[2:]
		}
	}
	switch len(parts) {
	case 0:
		// /api/v1: discovery of the version.
		r.IsResource = false
		r.Verb = strings.ToLower(method)
		return r, nil
	case 1:
		r.Resource = parts[0]
	case 2:
		r.Resource, r.Name = parts[0], parts[1]
	default:
		r.Resource, r.Name, r.Subresource = parts[0], parts[1], parts[2]
		if len(parts) > 3 && r.Subresource != "proxy" {
			// Only proxy takes a path after its subresource.
			return r, ErrPath
		}
	}
	// The namespace object's namespace is itself.
	if r.Resource == "namespaces" && r.Name != "" {
		r.Namespace = r.Name
	}
	// As the API server resolves them (k8s.io/apiserver request info):
	// a GET without a name is a watch when the watch parameter is set to
	// anything but false or 0 (empty included), else a list, and takes its
	// name from a field selector on metadata.name; the /watch/ prefix
	// always watches.
	switch {
	case streaming[r.Subresource]:
		r.Verb = "create"
		r.Command = query["command"]
		r.Container = query.Get("container")
	case r.Verb == "get" && watchPrefix:
		r.Verb = "watch"
	case r.Verb == "get" && r.Name == "":
		r.Verb = "list"
		if v, ok := query["watch"]; ok && Bool(v) {
			r.Verb = "watch"
		}
		if name, ok := selectedName(query.Get("fieldSelector")); ok {
			r.Name = name
		}
	case r.Verb == "delete" && r.Name == "":
		r.Verb = "deletecollection"
	}
	if r.Subresource == "log" {
		r.Container = query.Get("container")
	}
	return r, nil
}

// Bool reads a boolean query parameter as the API server does: its first
// value is false when it is "false" (any case) or "0", else true (an
// empty value included).
func Bool(values []string) bool {
	if len(values) == 0 {
		return false
	}
	v := values[0]
	return !strings.EqualFold(v, "false") && v != "0"
}

// selectedName is the name a field selector requires (metadata.name=X or
// metadata.name==X among its terms).
func selectedName(selector string) (string, bool) {
	for _, term := range strings.Split(selector, ",") {
		term = strings.TrimSpace(term)
		for _, op := range []string{"==", "="} {
			if v, ok := strings.CutPrefix(term, "metadata.name"+op); ok && !strings.HasPrefix(v, "=") && v != "" {
				return v, true
			}
		}
	}
	return "", false
}

func splitPath(p string) []string {
	p = strings.Trim(p, "/")
	if p == "" {
		return nil
	}
	return strings.Split(p, "/")
}

// Mutating reports whether the verb changes state.
func (r Request) Mutating() bool {
	switch r.Verb {
	case "get", "list", "watch", "head", "options":
		return false
	}
	return true
}

// ForwardQuery is the query a request is sent to the cluster with. A write
// is validated strictly (fieldValidation=Strict, whatever the client
// asked): the cluster refuses a field it does not know, or one given
// twice, instead of dropping it with a warning, so that what it stores is
// what the policy read (a pod spec beside a field the cluster drops, a key
// repeated so that each reader takes another).
func ForwardQuery(method, rawQuery string) string {
	switch method {
	case http.MethodPost, http.MethodPut, http.MethodPatch:
		q, _ := url.ParseQuery(rawQuery)
		if q == nil {
			q = url.Values{}
		}
		q.Set("fieldValidation", "Strict")
		return q.Encode()
	}
	return rawQuery
}
