#!/usr/bin/env bash
# Builds the third-party programs the tests run, from the Go module proxy,
# into a cache outside the clone keyed by version (default ~/.cache/sluice,
# or $SLUICE_TOOLS_CACHE), and prints each one's path. A fresh machine
# rebuilds them once (ORY Hydra: about 2-3 minutes on 2 cores); later runs
# find them. Usage: scripts/tools.sh [hydra ...] (default: all).
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

tools=("$@")
[ ${#tools[@]} -gt 0 ] || tools=(hydra)
for t in "${tools[@]}"; do
  case "$t" in
    hydra) build_hydra ;;
    *) echo "tools.sh: unknown tool $t (known: hydra)" >&2; exit 2 ;;
  esac
done
