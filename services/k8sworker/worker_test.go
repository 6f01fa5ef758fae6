package k8sworker

import (
	"encoding/base64"
	"testing"

	"github.com/gorilla/websocket"
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

// Output the maskers cannot read (a text message: the base64 protocols,
// which are not offered) is withheld, not passed on.
func TestStreamMasksWithholdWhatTheyCannotRead(t *testing.T) {
	assert.False(t, streamProtocols["base64.channel.k8s.io"] || streamProtocols["v4.base64.channel.k8s.io"])
	var m streamMasks
	out, flushed := m.mask(websocket.TextMessage, []byte("1"+base64.StdEncoding.EncodeToString([]byte("ssn 107-11-1037"))))
	assert.Nil(t, out)
	assert.Nil(t, flushed)
}
