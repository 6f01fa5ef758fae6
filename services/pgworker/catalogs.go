package pgworker

// A session's catalog (libs/pgmask) is what lineage masking follows: a
// view created after it was resolved is not in it. So no session plans a
// masked statement on one older than Config.CatalogMaxAge. A new session
// takes the worker's catalog of the target when it is that recent, or
// resolves it on its own connection and shares it (startup.go); an open
// one whose catalog ages past it takes a fresher one, resolved once for
// all of them on a connection of its own (freshCatalog).

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"sluice.dev/sluice/libs/pgmask"
	"sluice.dev/sluice/libs/targets"
	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
	policyv1 "sluice.dev/sluice/proto/sluice/policy/v1"
)

// resolveCatalog logs in to the target on a connection of its own and
// resolves the masked columns there. The connection takes none of a
// client's settings (a statement_timeout of 1 ms must not make it fail):
// the catalog queries name pg_catalog and depend on no setting.
func (w *Worker) resolveCatalog(ctx context.Context, pg *controlv1.PostgresTarget, cols []string, prev *pgmask.Catalog) (*pgmask.Catalog, error) {
	cfg, err := targets.PostgresConfig(pg, w.cfg.MasterKey, map[string]string{
		"client_encoding": "UTF8", "standard_conforming_strings": "on", "application_name": "sluice"})
	if err != nil {
		return nil, err
	}
	pc, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer pc.Close(context.Background())
	return pgmask.ResolveCatalogAfter(ctx, pc, cols, prev)
}

// catalogRefreshTimeout bounds how long a statement waits for a fresh
// catalog before its session is closed (masking must not guess).
const catalogRefreshTimeout = 10 * time.Second

// freshCatalog makes sure the session's catalog is no older than
// CatalogMaxAge and covers the masked columns of the policy in force and
// of d, taking a fresher one of the same target when there is one. The
// policy service may decide under a policy the worker's view has not
// received yet: its decision's columns are resolved too.
func (s *session) freshCatalog(d *policyv1.Decision) error {
	maxAge := s.w.cfg.CatalogMaxAge
	if maxAge < 0 || s.upstream == nil || s.upstream.pg == nil {
		return nil
	}
	policy := s.w.k.View.Policy()
	if policy == s.catalogPolicy && time.Since(s.catalogAt) <= maxAge && s.catalog.Covers(d) {
		return nil
	}
	cols := pgmask.WithDecisionColumns(pgmask.MaskColumns(policy.GetRules()), d)
	key := pgmask.CatalogKey(s.upstream.pg, cols)
	if key == s.catalogKey && time.Since(s.catalogAt) <= maxAge {
		s.catalogPolicy = policy
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), catalogRefreshTimeout)
	defer cancel()
	cat, at, err := s.w.catalogs.Fresh(ctx, key, maxAge, func(ctx context.Context) (*pgmask.Catalog, error) {
		return s.w.resolveCatalog(ctx, s.upstream.pg, cols, s.w.catalogs.Last(key))
	})
	if err != nil {
		return err
	}
	s.catalogPolicy = policy
	if key != s.catalogKey || at.After(s.catalogAt) {
		s.catalog, s.catalogAt, s.catalogKey = cat, at, key
		// Plans are built on the catalog.
		clear(s.plans)
		s.lastDecision, s.lastDecisionPlan = nil, nil
	}
	if !s.catalog.Covers(d) {
		// Never planned on a catalog that was not told of a masked column.
		return errors.New("the catalog does not cover the decision's masked columns")
	}
	return nil
}
