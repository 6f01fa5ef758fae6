package kubeclass

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestPodSummary(t *testing.T) {
	plain := PodSummary([]byte(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web"},"spec":{"containers":[{"name":"web","image":"nginx"}]}}`), "application/json")
	assert.True(t, plain.GetPresent())
	assert.Equal(t, []string{"nginx"}, plain.GetImages())
	assert.Empty(t, plain.GetSecrets())
	assert.False(t, plain.GetPrivileged())

	// Everything that reaches past the rules, in a Deployment's template.
	dep := PodSummary([]byte(`{"kind":"Deployment","spec":{"template":{"spec":{
		"serviceAccountName":"admin","hostPID":true,
		"volumes":[{"name":"s","secret":{"secretName":"db"}},{"name":"h","hostPath":{"path":"/"}},
		           {"name":"p","projected":{"sources":[{"secret":{"name":"tls"}}]}}],
		"containers":[{"image":"busybox","securityContext":{"privileged":true,"capabilities":{"add":["SYS_ADMIN"]}},
		  "env":[{"name":"P","valueFrom":{"secretKeyRef":{"name":"api","key":"k"}}}],"envFrom":[{"secretRef":{"name":"all"}}]}]}}}}`), "application/json")
	assert.True(t, dep.GetPrivileged())
	assert.True(t, dep.GetHostPid())
	assert.Equal(t, "admin", dep.GetServiceAccount())
	assert.Equal(t, []string{"/"}, dep.GetHostPaths())
	assert.Equal(t, []string{"all", "api", "db", "tls"}, dep.GetSecrets())
	assert.Equal(t, []string{"SYS_ADMIN"}, dep.GetCapabilities())

	// A CronJob's job template; a merge patch naming no kind.
	cj := PodSummary([]byte(`{"kind":"CronJob","spec":{"jobTemplate":{"spec":{"template":{"spec":{"hostNetwork":true,"containers":[{"image":"x"}]}}}}}}`), "application/json")
	assert.True(t, cj.GetHostNetwork())
	patch := PodSummary([]byte(`{"spec":{"template":{"spec":{"volumes":[{"name":"s","secret":{"secretName":"db"}}]}}}}`), "application/strategic-merge-patch+json")
	assert.Equal(t, []string{"db"}, patch.GetSecrets())

	// A pod spec is read wherever it is, whatever sits beside it: a Pod
	// whose spec carries a template (which the cluster drops, or refuses
	// under strict validation) is still a privileged pod.
	for _, body := range []string{
		`{"kind":"Pod","spec":{"template":null,"hostPID":true,"containers":[{"image":"x","securityContext":{"privileged":true}}]}}`,
		`{"kind":"Pod","spec":{"jobTemplate":{},"hostNetwork":true,"volumes":[{"hostPath":{"path":"/"}}],"containers":[{"image":"x"}]}}`,
		`{"kind":"Deployment","spec":{"hostPID":true,"template":{"spec":{"containers":[{"image":"x"}]}}}}`,
	} {
		pod := PodSummary([]byte(body), "application/json")
		assert.True(t, pod.GetPresent(), body)
		assert.True(t, pod.GetHostPid() || pod.GetHostNetwork(), body)
	}

	// What cannot be read is unknown.
	for _, ct := range []string{"application/json-patch+json", "application/apply-patch+yaml"} {
		assert.True(t, PodSummary([]byte(`[{"op":"add"}]`), ct).GetParseError(), ct)
	}
	assert.True(t, PodSummary([]byte(`{not json`), "application/json").GetParseError())
	assert.False(t, PodSummary(nil, "").GetPresent())
}
