package api

import (
	"errors"
	"net/http"
	"strings"

	"google.golang.org/protobuf/proto"

	"sluice.dev/sluice/libs/bus"
)

// call forwards a request to a service; on failure it answers 503 and
// reports false.
func (s *Server) call(w http.ResponseWriter, r *http.Request, subject string, req, resp proto.Message) bool {
	if err := bus.Request(r.Context(), s.cfg.Conn.NC, subject, req, resp); err != nil {
		reason := "the service did not answer"
		if errors.Is(err, bus.ErrNoResponders) {
			reason = "the service is not running"
		}
		s.cfg.Log.Warn().Err(err).Str("subject", subject).Msg("service call failed")
		writeError(w, http.StatusServiceUnavailable, "service_unavailable", reason)
		return false
	}
	return true
}

// errorStatus maps a service's error code to an HTTP status.
func errorStatus(code string) int {
	switch code {
	case "not_found":
		return http.StatusNotFound
	case "forbidden", "self_approval":
		return http.StatusForbidden
	case "bad_request":
		return http.StatusBadRequest
	case "unauthenticated":
		return http.StatusUnauthorized
	case "unavailable":
		return http.StatusServiceUnavailable
	}
	// The identity service's token codes.
	if strings.HasPrefix(code, "token_") || code == "untrusted_issuer" || code == "wrong_issuer" || code == "wrong_audience" ||
		code == "bad_signature" || code == "unknown_key" || code == "algorithm_not_allowed" || code == "claims_invalid" || code == "not_an_access_token" {
		return http.StatusUnauthorized
	}
	return http.StatusConflict
}
