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

# Write-ahead designs, CPU per recorded statement against the shipped one
# (services/recorder BenchmarkWriteAhead).
echo
echo "## Write-ahead designs (8 sessions, CPU per recorded statement, ratio to shipped)"
go test -count=1 -run - -bench 'WriteAhead$' -benchtime 3s ./services/recorder | awk '
  /^BenchmarkWriteAhead\// {
    name = $1; sub(/^BenchmarkWriteAhead\//, "", name); sub(/-[0-9]+$/, "", name)
    for (i = 1; i <= NF; i++) { if ($i == "cpu-µs/op") cpu = $(i-1); if ($i == "events/batch") per = $(i-1) }
    if (name == "shipped") base = cpu
    printf "%-14s %8.1f cpu-µs/statement  %5.2f events/batch  %s\n", name, cpu, per, (base ? sprintf("%.2f× shipped", cpu / base) : "")
  }'

# One session's wait for each record: the least the write-ahead contract
# adds to one client's latency (services/recorder BenchmarkWriteAheadLatency).
echo
echo "## Write-ahead wait, one session (time per durable record; ratio to shipped)"
go test -count=1 -run - -bench 'WriteAheadLatency' -benchtime 3s ./services/recorder | awk '
  /^BenchmarkWriteAheadLatency\// {
    name = $1; sub(/^BenchmarkWriteAheadLatency\//, "", name); sub(/-[0-9]+$/, "", name)
    for (i = 1; i <= NF; i++) { if ($i == "ns/op") ns = $(i-1); if ($i == "cpu-µs/op") cpu = $(i-1) }
    if (name == "shipped") base = ns
    printf "%-14s %8.1f µs/record  %8.1f cpu-µs/record  %s\n", name, ns / 1000, cpu, (base ? sprintf("%.2f× shipped", ns / base) : "")
  }'

# Reading a stream's history (audit verify, replay, export, a projection's
# rebuild) through bus.ReadStream against an ordered consumer, which is made
# again for every pull (libs/bus BenchmarkReadStream).
echo
echo "## Reading 20,000 messages (ratio to an ordered consumer)"
go test -count=1 -run - -bench 'ReadStream' -benchtime 10x ./libs/bus | awk '
  /^BenchmarkReadStream\// {
    name = $1; sub(/^BenchmarkReadStream\//, "", name); sub(/-[0-9]+$/, "", name)
    for (i = 1; i <= NF; i++) if ($i == "ns/op") ns[name] = $(i-1)
  }
  END {
    printf "%-18s %8.1f ms\n%-18s %8.1f ms  %.2f× the ordered consumer\n", "ordered-consumer", ns["ordered-consumer"] / 1e6,
      "ReadStream", ns["ReadStream"] / 1e6, ns["ReadStream"] / ns["ordered-consumer"]
  }'
