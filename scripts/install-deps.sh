#!/usr/bin/env bash
# Installs on Debian what Sluice's build, tests and benchmarks need and this
# machine lacks (the list is scripts/requirements.sh), then the npm modules
# of the end-to-end tests. CI runs it through .ci/run on a fresh machine.
# Every package is named; none is assumed to come as a recommendation.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/requirements.sh
need=()
for entry in "${REQUIREMENTS[@]}"; do
  IFS='|' read -r check pkgs _ _ <<<"$entry"
  have "$check" && continue
  for p in $pkgs; do need+=("$p"); done
done
if [ ${#need[@]} -gt 0 ]; then
  mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
  echo "installing: ${need[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  if [ -n "$SUDO" ] && ! command -v sudo >/dev/null; then
    echo "install-deps: not root and no sudo; install as root: apt-get install ${need[*]}" >&2
  elif ! command -v apt-get >/dev/null; then
    echo "install-deps: no apt-get on this machine; install the equivalents of: ${need[*]}" >&2
  else
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    # The Debian packages start their own servers; Sluice's tests start
    # their own on random ports, so stop the system ones.
    if command -v service >/dev/null; then
      $SUDO service postgresql stop >/dev/null 2>&1 || true
      $SUDO service pgbouncer stop >/dev/null 2>&1 || true
    fi
  fi
fi

# node-postgres and the MCP TypeScript SDK for the end-to-end tests (npm
# registry), whenever one named in package.json is missing.
if command -v npm >/dev/null && [ -f e2e/node/package-lock.json ] &&
  { [ ! -d e2e/node/node_modules/pg ] || [ ! -d e2e/node/node_modules/@modelcontextprotocol/sdk ]; }; then
  (cd e2e/node && npm ci --no-audit --no-fund --silent)
fi
# Whatever could not be installed is named here, with its package.
scripts/preflight.sh bench || true
