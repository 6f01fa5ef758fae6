#!/usr/bin/env bash
# make bench: Sluice against direct PostgreSQL and PgBouncer, one run, one
# machine. Needs PostgreSQL server binaries, pgbench, psql and pgbouncer
# (scripts/install-deps.sh). Extra arguments go to the driver (-quick,
# -rounds N, -duration 5s, -json file).
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in pgbench psql; do command -v "$tool" >/dev/null || { echo "$tool is required: scripts/install-deps.sh" >&2; exit 1; }; done
command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ] || { echo "pgbouncer is required: scripts/install-deps.sh" >&2; exit 1; }
go run ./scripts/benchrun -sluice bin/sluice "$@"
