package targets

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"sluice.dev/sluice/libs/secrets"
	commonv1 "sluice.dev/sluice/proto/sluice/common/v1"
	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
)

// Kubernetes is how a worker reaches a Kubernetes target: the API server's
// URL, a transport that trusts the target's CA (HTTP/1.1: upgrades such as
// exec need it), and the gateway's own token (sent as the bearer).
type Kubernetes struct {
	Server    *url.URL
	Transport *http.Transport
	Token     string
}

// KubernetesClient prepares requests to a Kubernetes target with the
// credential Sluice holds.
func KubernetesClient(t *controlv1.KubernetesTarget, masterKey *secrets.Key) (*Kubernetes, error) {
	server, err := url.Parse(t.GetServer())
	if err != nil || server.Host == "" || server.Scheme != "https" {
		return nil, fmt.Errorf("the target's server %q is not an https URL", t.GetServer())
	}
	token, err := secrets.Resolve(t.GetToken(), masterKey)
	if err != nil {
		return nil, fmt.Errorf("the target's token: %w", err)
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}}
	if f := t.GetCaFile(); f != "" {
		pem, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("the target's CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("the target's CA file %s holds no certificate", f)
		}
		tlsCfg.RootCAs = pool
	}
	return &Kubernetes{Server: server, Token: string(token), Transport: &http.Transport{
		TLSClientConfig: tlsCfg, ForceAttemptHTTP2: false, MaxIdleConnsPerHost: 32, IdleConnTimeout: 90 * time.Second,
		DialContext: (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
	}}, nil
}

// Impersonate sets the headers that impersonate a principal into a
// cluster's RBAC: its subject and groups as the identity provider names
// them, except that no principal becomes a Kubernetes system identity (a
// subject or group starting with "system:" would be one of the cluster's
// own: the subject is refused, such groups are dropped).
func Impersonate(h http.Header, p *commonv1.Principal) error {
	if strings.HasPrefix(p.GetSubject(), "system:") {
		return fmt.Errorf("the principal %q would be a Kubernetes system identity; it is not impersonated", p.GetSubject())
	}
	h.Set("Impersonate-User", p.GetSubject())
	for _, g := range p.GetGroups() {
		if !strings.HasPrefix(g, "system:") {
			h.Add("Impersonate-Group", g)
		}
	}
	return nil
}
