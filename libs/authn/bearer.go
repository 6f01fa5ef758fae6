package authn

import (
	"net/http"
	"strings"
)

// Bearer is the access token an HTTP request carries (Authorization:
// Bearer TOKEN, the scheme in any case), and whether it carries one.
func Bearer(r *http.Request) (string, bool) {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}
