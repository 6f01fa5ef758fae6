package kubeclass

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		method, target string
		want           Request
	}{
		{"GET", "/api/v1/namespaces/default/pods", Request{Verb: "list", APIVersion: "v1", Namespace: "default", Resource: "pods", IsResource: true}},
		{"GET", "/api/v1/namespaces/default/pods/web", Request{Verb: "get", APIVersion: "v1", Namespace: "default", Resource: "pods", Name: "web", IsResource: true}},
		{"GET", "/api/v1/pods?watch=true", Request{Verb: "watch", APIVersion: "v1", Resource: "pods", IsResource: true}},
		{"GET", "/api/v1/watch/namespaces/a/secrets", Request{Verb: "watch", APIVersion: "v1", Namespace: "a", Resource: "secrets", IsResource: true}},
		{"POST", "/apis/apps/v1/namespaces/a/deployments", Request{Verb: "create", APIGroup: "apps", APIVersion: "v1", Namespace: "a", Resource: "deployments", IsResource: true}},
		{"PATCH", "/apis/apps/v1/namespaces/a/deployments/web/scale", Request{Verb: "patch", APIGroup: "apps", APIVersion: "v1", Namespace: "a", Resource: "deployments", Name: "web", Subresource: "scale", IsResource: true}},
		{"DELETE", "/api/v1/namespaces/a/pods", Request{Verb: "deletecollection", APIVersion: "v1", Namespace: "a", Resource: "pods", IsResource: true}},
		{"DELETE", "/api/v1/namespaces/a", Request{Verb: "delete", APIVersion: "v1", Namespace: "a", Resource: "namespaces", Name: "a", IsResource: true}},
		{"GET", "/api/v1/namespaces", Request{Verb: "list", APIVersion: "v1", Resource: "namespaces", IsResource: true}},
		{"PUT", "/api/v1/namespaces/a/finalize", Request{Verb: "update", APIVersion: "v1", Namespace: "a", Resource: "namespaces", Name: "a", Subresource: "finalize", IsResource: true}},
		// exec is one class whatever the method (websocket GET, SPDY POST).
		{"GET", "/api/v1/namespaces/a/pods/web/exec?command=sh&command=-c&command=id&container=app", Request{Verb: "create", APIVersion: "v1",
			Namespace: "a", Resource: "pods", Name: "web", Subresource: "exec", IsResource: true, Command: []string{"sh", "-c", "id"}, Container: "app"}},
		{"GET", "/api/v1/namespaces/a/pods/web/log?container=sidecar&follow=true", Request{Verb: "get", APIVersion: "v1", Namespace: "a", Resource: "pods", Name: "web", Subresource: "log", IsResource: true, Container: "sidecar"}},
		{"POST", "/api/v1/namespaces/a/pods/web/portforward", Request{Verb: "create", APIVersion: "v1", Namespace: "a", Resource: "pods", Name: "web", Subresource: "portforward", IsResource: true}},
		{"GET", "/api/v1/nodes/n1/proxy/configz", Request{Verb: "get", APIVersion: "v1", Resource: "nodes", Name: "n1", Subresource: "proxy", IsResource: true}},
		// watch as the API server reads it: any value but false or 0.
		{"GET", "/api/v1/namespaces/a/secrets?watch=yes", Request{Verb: "watch", APIVersion: "v1", Namespace: "a", Resource: "secrets", IsResource: true}},
		{"GET", "/api/v1/namespaces/a/secrets?watch=", Request{Verb: "watch", APIVersion: "v1", Namespace: "a", Resource: "secrets", IsResource: true}},
		{"GET", "/api/v1/namespaces/a/secrets?watch=0", Request{Verb: "list", APIVersion: "v1", Namespace: "a", Resource: "secrets", IsResource: true}},
		{"GET", "/api/v1/namespaces/a/secrets?watch=FALSE", Request{Verb: "list", APIVersion: "v1", Namespace: "a", Resource: "secrets", IsResource: true}},
		// A named GET ignores watch; a list takes its name from a field selector.
		{"GET", "/api/v1/namespaces/a/secrets/db?watch=true", Request{Verb: "get", APIVersion: "v1", Namespace: "a", Resource: "secrets", Name: "db", IsResource: true}},
		{"GET", "/api/v1/namespaces/a/secrets?fieldSelector=metadata.name%3Ddb", Request{Verb: "list", APIVersion: "v1", Namespace: "a", Resource: "secrets", Name: "db", IsResource: true}},
		{"GET", "/api/v1/watch/namespaces/a/secrets/db", Request{Verb: "watch", APIVersion: "v1", Namespace: "a", Resource: "secrets", Name: "db", IsResource: true}},
		{"GET", "/version", Request{Verb: "get"}},
		{"GET", "/apis", Request{Verb: "get"}},
		{"GET", "/api/v1", Request{Verb: "get", APIVersion: "v1"}},
		{"GET", "/apis/rbac.authorization.k8s.io/v1", Request{Verb: "get", APIGroup: "rbac.authorization.k8s.io", APIVersion: "v1"}},
	} {
		u, err := url.Parse(tc.target)
		require.NoError(t, err)
		got, err := Classify(tc.method, u.Path, u.Query())
		require.NoError(t, err, tc.target)
		tc.want.Path = u.Path
		assert.Equal(t, tc.want, got, "%s %s", tc.method, tc.target)
	}
}

func TestClassifyRefusesPathsTheServerWouldResolveOtherwise(t *testing.T) {
	for _, p := range []string{"/api/v1/namespaces/a/pods/../secrets", "/api//v1/secrets", "/api/v1/./secrets", "api/v1/pods", "/api/v1/proxy/nodes/n1",
		"/api/v1/namespaces/a/pods/web/exec/extra"} {
		_, err := Classify("GET", p, nil)
		assert.ErrorIs(t, err, ErrPath, p)
	}
}

func TestForwardQueryValidatesWritesStrictly(t *testing.T) {
	for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodPatch} {
		assert.Equal(t, "dryRun=All&fieldValidation=Strict", ForwardQuery(m, "fieldValidation=Ignore&dryRun=All"), m)
		assert.Equal(t, "fieldValidation=Strict", ForwardQuery(m, ""), m)
	}
	assert.Equal(t, "watch=1&fieldValidation=Ignore", ForwardQuery(http.MethodGet, "watch=1&fieldValidation=Ignore"), "reads are sent as asked")
}
