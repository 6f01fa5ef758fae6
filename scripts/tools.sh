#!/usr/bin/env bash
# Builds the third-party programs the tests run, from the Go module proxy,
# into a cache outside the clone keyed by version (default ~/.cache/sluice,
# or $SLUICE_TOOLS_CACHE), and prints each one's path. A fresh machine
# rebuilds them once (ORY Hydra: about 2-3 minutes on 2 cores); later runs
# find them. Usage: scripts/tools.sh [hydra kube-apiserver etcd ...]
# (default: all). kube-apiserver takes about 5 minutes on 2 cores, once;
# helm about 2.
set -euo pipefail
cache="${SLUICE_TOOLS_CACHE:-$HOME/.cache/sluice}"

HYDRA_VERSION=v2.3.0
# Hydra's own go.mod replaces pop with ORY's fork; a module that requires
# Hydra must repeat the replace (go install refuses modules with replaces).
HYDRA_POP=github.com/ory/pop/v6@v6.2.1-0.20241121111754-e5dfc0f3344b

build_hydra() {
  local dir="$cache/hydra-$HYDRA_VERSION"
  local bin="$dir/hydra"
  if [ -x "$bin" ]; then echo "$bin"; return; fi
  echo "building ORY Hydra $HYDRA_VERSION into $dir (once per machine)" >&2
  local work
  work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  (
    cd "$work"
    cat > go.mod <<MOD
module sluice.local/tools/hydra

go 1.26.0
MOD
    GOWORK=off go mod edit -replace "github.com/gobuffalo/pop/v6=$HYDRA_POP"
    GOWORK=off go get "github.com/ory/hydra/v2@$HYDRA_VERSION" 2>"$work/get.log" || { cat "$work/get.log" >&2; exit 1; }
    mkdir -p "$dir"
    GOWORK=off go build -tags sqlite -trimpath -o "$bin.tmp" github.com/ory/hydra/v2
    mv "$bin.tmp" "$bin"
  )
  echo "$bin"
}

# A real kube-apiserver for the Kubernetes worker's tests. k8s.io/kubernetes
# replaces its staging modules with local directories; a module that
# requires it pins each of them to the matching k8s.io/* release instead.
KUBE_VERSION=v1.37.2
KUBE_STAGING="api apiextensions-apiserver apimachinery apiserver cli-runtime client-go cloud-provider
cluster-bootstrap code-generator component-base component-helpers controller-manager cri-api cri-client
cri-streaming csi-translation-lib dynamic-resource-allocation endpointslice externaljwt kms kube-aggregator
kube-controller-manager kube-proxy kube-scheduler kubectl kubelet metrics mount-utils pod-security-admission
sample-apiserver sample-cli-plugin sample-controller streaming"

build_kube_apiserver() {
  local dir="$cache/kube-apiserver-$KUBE_VERSION"
  local bin="$dir/kube-apiserver"
  if [ -x "$bin" ]; then echo "$bin"; return; fi
  echo "building kube-apiserver $KUBE_VERSION into $dir (once per machine, about 5 minutes)" >&2
  local work staging="v0.${KUBE_VERSION#v1.}"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  (
    cd "$work"
    cat > go.mod <<MOD
module sluice.local/tools/kube

go 1.26.0
MOD
    for m in $KUBE_STAGING; do
      GOWORK=off go mod edit -replace "k8s.io/$m=k8s.io/$m@$staging"
    done
    GOWORK=off go get "k8s.io/kubernetes/cmd/kube-apiserver@$KUBE_VERSION" 2>"$work/get.log" || { cat "$work/get.log" >&2; exit 1; }
    mkdir -p "$dir"
    GOWORK=off go build -trimpath -ldflags "-X k8s.io/component-base/version.gitVersion=$KUBE_VERSION" \
      -o "$bin.tmp" k8s.io/kubernetes/cmd/kube-apiserver
    mv "$bin.tmp" "$bin"
  )
  echo "$bin"
}

# etcd for that apiserver: a small launcher on etcd's embed package.
ETCD_VERSION=v3.7.3

build_etcd() {
  local dir="$cache/etcd-$ETCD_VERSION"
  local bin="$dir/etcd"
  if [ -x "$bin" ]; then echo "$bin"; return; fi
  echo "building etcd $ETCD_VERSION into $dir (once per machine)" >&2
  local work
  work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  (
    cd "$work"
    cat > go.mod <<MOD
module sluice.local/tools/etcd

go 1.26.0
MOD
    cat > main.go <<'SRC'
// etcd runs one etcd member: etcd DATA_DIR CLIENT_URL PEER_URL. It is
// ready when it prints "ready".
package main

import (
	"fmt"
	"log"
	"net/url"
	"os"
	"os/signal"
	"syscall"

	"go.etcd.io/etcd/server/v3/embed"
)

func main() {
	if len(os.Args) != 4 {
		log.Fatal("usage: etcd DATA_DIR CLIENT_URL PEER_URL")
	}
	cfg := embed.NewConfig()
	cfg.Dir = os.Args[1]
	client, err := url.Parse(os.Args[2])
	if err != nil {
		log.Fatal(err)
	}
	peer, err := url.Parse(os.Args[3])
	if err != nil {
		log.Fatal(err)
	}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*client}, []url.URL{*client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*peer}, []url.URL{*peer}
	cfg.InitialCluster = cfg.Name + "=" + peer.String()
	cfg.LogLevel = "error"
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer e.Close()
	<-e.Server.ReadyNotify()
	fmt.Println("ready")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	select {
	case <-sig:
	case err := <-e.Err():
		log.Fatal(err)
	}
}
SRC
    GOWORK=off go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" 2>"$work/get.log" || { cat "$work/get.log" >&2; exit 1; }
    GOWORK=off go mod tidy 2>>"$work/get.log" || { cat "$work/get.log" >&2; exit 1; }
    mkdir -p "$dir"
    GOWORK=off go build -trimpath -o "$bin.tmp" .
    mv "$bin.tmp" "$bin"
  )
  echo "$bin"
}

# helm, for the chart's lint, template and server-side dry-run test.
HELM_VERSION=v3.22.0

build_helm() {
  local dir="$cache/helm-$HELM_VERSION"
  local bin="$dir/helm"
  if [ -x "$bin" ]; then echo "$bin"; return; fi
  echo "building helm $HELM_VERSION into $dir (once per machine)" >&2
  local work
  work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  (
    cd "$work"
    cat > go.mod <<MOD
module sluice.local/tools/helm

go 1.26.0
MOD
    GOWORK=off go get "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" 2>"$work/get.log" || { cat "$work/get.log" >&2; exit 1; }
    mkdir -p "$dir"
    GOWORK=off go build -trimpath -ldflags "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
      -o "$bin.tmp" helm.sh/helm/v3/cmd/helm
    mv "$bin.tmp" "$bin"
  )
  echo "$bin"
}

tools=("$@")
[ ${#tools[@]} -gt 0 ] || tools=(hydra kube-apiserver etcd helm)
for t in "${tools[@]}"; do
  case "$t" in
    hydra) build_hydra ;;
    kube-apiserver) build_kube_apiserver ;;
    etcd) build_etcd ;;
    helm) build_helm ;;
    *) echo "tools.sh: unknown tool $t (known: hydra, kube-apiserver, etcd, helm)" >&2; exit 2 ;;
  esac
done
