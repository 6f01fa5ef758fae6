#!/usr/bin/env bash
# Regenerates the Go code for proto/ with no system protoc: scripts/protogen
# compiles the .proto files in Go (well-known types included) and runs
# protoc-gen-go, built from the Go module proxy at the version go.mod pins for
# google.golang.org/protobuf. With --check, fails if the committed code is
# stale instead of rewriting it. Nothing here depends on a Debian package.
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(go list -m -f '{{.Version}}' google.golang.org/protobuf)
plugin=".tools/protoc-gen-go-${version}"
if [ ! -x "$plugin" ]; then
  mkdir -p .tools
  go build -o "$plugin" google.golang.org/protobuf/cmd/protoc-gen-go
fi
check=()
[ "${1:-}" = "--check" ] && check=(-check)
go run ./scripts/protogen -dir proto -plugin "$plugin" "${check[@]}"
