#!/usr/bin/env bash
# Names everything `make test` (or, with "bench", `make bench`) needs and
# this machine lacks, with the Debian package that provides it, before
# anything else runs. scripts/install-deps.sh installs them.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/requirements.sh
scope="${1:-test}"
missing=0
for entry in "${REQUIREMENTS[@]}"; do
  IFS='|' read -r check pkgs needed what <<<"$entry"
  case "$scope" in
    test) [ "$needed" = test ] || continue ;;
    bench) ;;
    *) echo "preflight: unknown scope $scope (test or bench)" >&2; exit 2 ;;
  esac
  have "$check" && continue
  missing=1
  if [ -n "$pkgs" ]; then
    echo "missing: ${check#*:} - $what (Debian: apt-get install $pkgs)" >&2
  elif [ "${check%%:*}" = node ]; then
    echo "missing: ${check#*:} - $what (run: cd e2e/node && npm ci)" >&2
  else
    echo "missing: ${check#*:} - $what" >&2
  fi
done
if [ "$missing" -ne 0 ]; then
  echo "preflight: this machine lacks what make $scope needs; scripts/install-deps.sh installs it on Debian" >&2
  exit 1
fi
