package k8sworker

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestAcceptIsJSONOnly(t *testing.T) {
	assert.Equal(t, "application/json", jsonAccept("application/vnd.kubernetes.protobuf"))
	assert.Equal(t, "application/json;as=Table;v=v1;g=meta.k8s.io, application/json",
		jsonAccept("application/json;as=Table;v=v1;g=meta.k8s.io,application/vnd.kubernetes.protobuf,application/json"))
	assert.Equal(t, "application/json", jsonAccept(""))
}

func TestRoute(t *testing.T) {
	name, rest, ok := route("/targets/prod/api/v1/pods")
	assert.True(t, ok)
	assert.Equal(t, "prod", name)
	assert.Equal(t, "/api/v1/pods", rest)
	_, rest, ok = route("/targets/prod")
	assert.True(t, ok)
	assert.Equal(t, "/", rest)
	for _, p := range []string{"/api/v1/pods", "/targets/", "/targets//api"} {
		_, _, ok := route(p)
		assert.False(t, ok, p)
	}
}
