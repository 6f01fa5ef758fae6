package api

import (
	"errors"
	"net/http"

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
