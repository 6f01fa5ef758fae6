package api

import (
	"net/http"

	"sluice.dev/sluice/libs/bus"
	commonv1 "sluice.dev/sluice/proto/sluice/common/v1"
	identityv1 "sluice.dev/sluice/proto/sluice/identity/v1"
)

func (s *Server) sshRoutes() {
	s.handle("POST /api/v1/ssh/certificate", "ssh_certificate", anyone, s.sshCertificate)
	s.handle("GET /api/v1/ssh/config", "ssh_config", anyone, s.sshConfig)
}

// SSHCertificateRequestJSON asks for a certificate for a public key.
type SSHCertificateRequestJSON struct {
	PublicKey string `json:"public_key"`
}

// SSHCertificateJSON is a user certificate Sluice issued.
type SSHCertificateJSON struct {
	Certificate     string `json:"certificate"`
	ValidBeforeUnix int64  `json:"valid_before_unix"`
	Subject         string `json:"subject"`
}

// SSHConfigJSON says how to reach the SSH worker: its address and host
// keys (for known_hosts), as the deployment configured them.
type SSHConfigJSON struct {
	Address  string   `json:"address,omitempty"`
	HostKeys []string `json:"host_keys"`
}

// sshCertificate exchanges the caller's token for an SSH user certificate:
// the identity service verifies the token again and signs.
func (s *Server) sshCertificate(w http.ResponseWriter, r *http.Request, _ *commonv1.Principal) {
	var body SSHCertificateRequestJSON
	if !readJSON(w, r, &body) {
		return
	}
	var reply identityv1.SignSSHReply
	if !s.call(w, r, bus.APIIdentitySSHSign, &identityv1.SignSSHRequest{PublicKey: body.PublicKey}, &reply) {
		return
	}
	if e := reply.GetError(); e != nil {
		status := errorStatus(e.GetCode())
		if e.GetCode() == "not_configured" {
			status = http.StatusNotImplemented
		}
		writeError(w, status, e.GetCode(), e.GetMessage())
		return
	}
	writeJSON(w, http.StatusOK, SSHCertificateJSON{Certificate: reply.GetCertificate(), ValidBeforeUnix: reply.GetValidBeforeUnix(), Subject: reply.GetPrincipal().GetSubject()})
}

func (s *Server) sshConfig(w http.ResponseWriter, _ *http.Request, _ *commonv1.Principal) {
	if s.cfg.SSHAddress == "" && len(s.cfg.SSHHostKeys) == 0 {
		writeError(w, http.StatusNotImplemented, "not_configured", "this deployment does not say where its SSH worker is (serve api --ssh-address, --ssh-host-key)")
		return
	}
	writeJSON(w, http.StatusOK, SSHConfigJSON{Address: s.cfg.SSHAddress, HostKeys: append([]string{}, s.cfg.SSHHostKeys...)})
}
