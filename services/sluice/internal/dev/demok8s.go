package dev

import (
	"context"
	"encoding/base64"
	"fmt"
	"path/filepath"

	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/kubelocal"
	"sluice.dev/sluice/libs/secrets"
)

// startDemoK8s starts a real kube-apiserver and etcd (built by
// scripts/tools.sh) and registers it as target demo-k8s, with a gateway
// token only Sluice holds (sealed). Nothing but the API server runs: no
// scheduler, no kubelet, so pods are stored but never run.
func startDemoK8s(ctx context.Context, cfg Config, dir string, conn *bus.Conn, master *secrets.Key) (*kubelocal.Server, error) {
	kube, err := kubelocal.Start(ctx, kubelocal.Config{Dir: filepath.Join(dir, "k8s")})
	if err != nil {
		return nil, fmt.Errorf("demo Kubernetes (--demo-k8s): %w", err)
	}
	target := fmt.Sprintf(`targets:
  - name: demo-k8s
    kind: kubernetes
    labels: {env: dev}
    kubernetes:
      server: %s
      ca_file: %s
      token: {sealed: %q}
`, kube.URL, kube.CAFile, base64.StdEncoding.EncodeToString(master.Seal([]byte(kube.AdminToken))))
	if err := apply(ctx, conn, []byte(target), "demo-k8s-target.yaml"); err != nil {
		kube.Stop()
		return nil, fmt.Errorf("register demo Kubernetes target: %w", err)
	}
	cfg.Log.Info().Str("server", kube.URL).Msg("demo Kubernetes API server ready (target demo-k8s)")
	return kube, nil
}
