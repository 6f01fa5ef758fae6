// Package e2e holds Sluice's end-to-end tests: they start the real `sluice`
// binary (`sluice dev` with embedded NATS and a real PostgreSQL) and drive it
// with real clients - curl-like HTTP, the sluice CLI, psql, pgbench, pgx and
// node-postgres. With SLUICE_E2E_REQUIRED=1 (as `make test` sets) a missing
// prerequisite fails the suite instead of skipping it.
package e2e
