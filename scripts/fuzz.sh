#!/usr/bin/env bash
# Fuzzes every parser for the given time each (default 1m):
#   sqlclass (SQL classification, and shapes from the same parse), shellclass (shell command lines),
#   config (sluice.yaml), sqlshape (statement shapes), masking
#   (value detectors), bus (subject tokens), the PostgreSQL worker, and the
#   recorder's event header reader.
set -euo pipefail
cd "$(dirname "$0")/.."
t="${1:-1m}"
run() { echo "== $1 $2"; go test "./$1" -run '^$' -fuzz "^$2\$" -fuzztime "$t" -parallel 1; }
run libs/sqlclass FuzzClassify
run libs/sqlclass FuzzShapeFromTheSameParse
run libs/shellclass FuzzClassify
run libs/config FuzzParse
run libs/sqlshape FuzzShape
run libs/masking FuzzAppendMasked
run libs/masking FuzzComposed
run libs/bus FuzzToken
run services/pgworker FuzzResultFormats
run services/pgworker FuzzMaskRow
run services/pgworker FuzzCopyMask
run services/recorder FuzzPeekEvent
