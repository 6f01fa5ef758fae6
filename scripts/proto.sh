#!/usr/bin/env bash
# Regenerates the Go code for proto/ (protoc from Debian's protobuf-compiler,
# protoc-gen-go from the Go module proxy). With --check, fails if the committed
# code is stale instead of rewriting it.
set -euo pipefail
cd "$(dirname "$0")/.."
PROTOC_GEN_GO_VERSION=v1.36.12
if ! command -v protoc >/dev/null; then
  echo "protoc not found: apt-get install -y protobuf-compiler" >&2
  exit 1
fi
mkdir -p .tools
if [ ! -x .tools/protoc-gen-go ] || ! .tools/protoc-gen-go --version | grep -q "${PROTOC_GEN_GO_VERSION#v}"; then
  GOBIN="$PWD/.tools" go install "google.golang.org/protobuf/cmd/protoc-gen-go@${PROTOC_GEN_GO_VERSION}"
fi
out=proto
if [ "${1:-}" = "--check" ]; then
  out=$(mktemp -d)
  trap 'rm -rf "$out"' EXIT
fi
files=$(cd proto && find sluice -name '*.proto' | sort)
(cd proto && protoc --plugin=protoc-gen-go="$PWD/../.tools/protoc-gen-go" \
  --go_out="$( [ "$out" = proto ] && echo . || echo "$out")" --go_opt=paths=source_relative $files)
if [ "${1:-}" = "--check" ]; then
  stale=0
  for f in $files; do
    g="${f%.proto}.pb.go"
    if ! cmp -s "$out/$g" "proto/$g"; then
      echo "stale generated code: proto/$g (run make proto)" >&2
      stale=1
    fi
  done
  exit $stale
fi
