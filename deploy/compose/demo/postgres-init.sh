#!/bin/sh
# The demo database: a customers table and the role Sluice connects as
# (its password is DEMO_DB_PASSWORD, which the workers hold, never clients).
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<SQL
CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, email text NOT NULL);
INSERT INTO customers SELECT i, 'customer ' || i, 'c' || i || '@example.com' FROM generate_series(1, 100) i;
CREATE ROLE sluice_gateway LOGIN PASSWORD '${DEMO_DB_PASSWORD}';
GRANT SELECT, INSERT, UPDATE, DELETE ON customers TO sluice_gateway;
SQL
