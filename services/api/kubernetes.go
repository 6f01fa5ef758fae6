package api

import (
	"net/http"

	commonv1 "sluice.dev/sluice/proto/sluice/common/v1"
)

func (s *Server) kubernetesRoutes() {
	s.handle("GET /api/v1/kubernetes/config", "kubernetes_config", anyone, s.kubernetesConfig)
}

// KubernetesConfigJSON says where the Kubernetes worker listens (its URL;
// a target's server is URL/targets/NAME) and the CA that verifies it, for
// sluice kubeconfig.
type KubernetesConfigJSON struct {
	URL   string `json:"url"`
	CAPEM string `json:"ca_pem,omitempty"`
}

func (s *Server) kubernetesConfig(w http.ResponseWriter, _ *http.Request, _ *commonv1.Principal) {
	if s.cfg.KubernetesURL == "" {
		writeError(w, http.StatusNotImplemented, "not_configured", "this deployment does not say where its Kubernetes worker is (serve api --k8s-public-url, --k8s-ca-file)")
		return
	}
	writeJSON(w, http.StatusOK, KubernetesConfigJSON{URL: s.cfg.KubernetesURL, CAPEM: s.cfg.KubernetesCAPEM})
}
