package authn

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestBearer(t *testing.T) {
	for h, want := range map[string]string{"Bearer abc": "abc", "bearer abc": "abc", "BEARER  abc ": "abc", "Basic abc": "", "Bearer ": "", "": "", "Bearerabc": ""} {
		r := &http.Request{Header: http.Header{}}
		if h != "" {
			r.Header.Set("Authorization", h)
		}
		got, ok := Bearer(r)
		assert.Equal(t, want, got, h)
		assert.Equal(t, want != "", ok, h)
	}
}
