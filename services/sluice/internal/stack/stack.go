// Package stack wires Sluice's services: it is the one place that knows every
// service, used by `sluice serve <service>` to run one and by `sluice dev` to
// run them all in one process.
package stack

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/secrets"
	"sluice.dev/sluice/services/api"
	"sluice.dev/sluice/services/control"
	"sluice.dev/sluice/services/identity"
	"sluice.dev/sluice/services/policy"
)

// Options holds every service's settings. The zero value is not useful:
// Conn must be set.
type Options struct {
	Conn     *bus.Conn
	Log      zerolog.Logger
	Topology bus.Topology

	// Identity provider used until one is applied.
	Provider identity.Provider

	// API
	APIAddr     string
	APIListener net.Listener
	APIMounts   map[string]http.Handler
	CLIClientID string

	// MasterKey opens sealed target credentials (workers).
	MasterKey *secrets.Key
	// PGAddr is the PostgreSQL worker's listener; TLSDir holds its
	// generated development certificate when none is configured.
	PGAddr string
	TLSDir string
}

// Service is one runnable service.
type Service struct {
	Name        string
	Description string
	Run         func(ctx context.Context, o *Options) error
}

// Services lists every service in start order.
func Services() []Service {
	return []Service{
		{"identity", "verifies OIDC access tokens (sluice.api.identity.*)", runIdentity},
		{"control", "owns targets, policies, approver groups, IdP settings (sluice.api.control.*)", runControl},
		{"policy", "rules on every command with CEL (sluice.api.policy.*)", runPolicy},
		{"api", "the HTTP API on :8080", runAPI},
	}
}

// Names lists the service names.
func Names() []string {
	var out []string
	for _, s := range Services() {
		out = append(out, s.Name)
	}
	sort.Strings(out)
	return out
}

// Find returns a service by name.
func Find(name string) (Service, error) {
	for _, s := range Services() {
		if s.Name == name {
			return s, nil
		}
	}
	return Service{}, fmt.Errorf("unknown service %q (services: %s)", name, strings.Join(Names(), ", "))
}

// Provision creates the topology, retrying while a cluster forms.
func Provision(ctx context.Context, o *Options) error {
	var err error
	for i := 0; i < 60; i++ {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err = bus.Provision(pctx, o.Conn.JS, o.Topology)
		cancel()
		if err == nil || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	return fmt.Errorf("provision streams: %w", err)
}

// RunAll runs the named services (all when names is empty) until ctx is
// done or one fails.
func RunAll(ctx context.Context, o *Options, names ...string) error {
	g, ctx := errgroup.WithContext(ctx)
	for _, s := range Services() {
		if len(names) > 0 && !contains(names, s.Name) {
			continue
		}
		s := s
		g.Go(func() error {
			l := o.Log.With().Str("service", s.Name).Logger()
			so := *o
			so.Log = l
			if err := s.Run(ctx, &so); err != nil && ctx.Err() == nil {
				return fmt.Errorf("%s: %w", s.Name, err)
			}
			return nil
		})
	}
	return g.Wait()
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func runIdentity(ctx context.Context, o *Options) error {
	return identity.Run(ctx, identity.Config{Conn: o.Conn, Provider: o.Provider, Log: o.Log})
}

func runControl(ctx context.Context, o *Options) error {
	return control.New(control.Config{Conn: o.Conn, Log: o.Log}).Run(ctx)
}

func runAPI(ctx context.Context, o *Options) error {
	return api.New(api.Config{
		Addr: o.APIAddr, Listener: o.APIListener, Conn: o.Conn, Mounts: o.APIMounts,
		Issuer: o.Provider.Issuer, Audience: o.Provider.Audience, CLIClientID: o.CLIClientID, Log: o.Log,
	}).Run(ctx)
}

func runPolicy(ctx context.Context, o *Options) error {
	return policy.New(policy.Config{Conn: o.Conn, Log: o.Log}).Run(ctx)
}
