#!/usr/bin/env bash
# Installs the system packages Sluice's build and tests need, if missing:
#   protobuf-compiler  - `make proto` and the staleness check of generated code
#   postgresql         - server binaries for the demo database and e2e tests
#   postgresql-client  - psql and pgbench, the real clients the e2e tests drive
#   openssh-server/client - the SSH worker's e2e tests
#   pgbouncer          - the baseline of `make bench`
# Node.js and npm (for the node-postgres e2e test) come with the base image.
set -euo pipefail
need=()
command -v protoc >/dev/null || need+=(protobuf-compiler)
command -v psql >/dev/null || need+=(postgresql-client)
command -v pgbench >/dev/null || need+=(postgresql-contrib)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v sshd >/dev/null || [ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null || need+=(openssh-client)
command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ] || need+=(pgbouncer)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # The Debian packages start their own servers; Sluice's tests start their
  # own on random ports, so stop the system ones.
  if command -v service >/dev/null; then
    $SUDO service postgresql stop >/dev/null 2>&1 || true
    $SUDO service pgbouncer stop >/dev/null 2>&1 || true
    $SUDO service ssh stop >/dev/null 2>&1 || true
  fi
fi

# node-postgres for the end-to-end tests (npm registry).
if command -v npm >/dev/null && [ -f e2e/node/package-lock.json ] && [ ! -d e2e/node/node_modules/pg ]; then
  (cd e2e/node && npm ci --no-audit --no-fund --silent)
fi
