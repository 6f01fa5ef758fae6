package identity

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"

	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/controlstate"
	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
	identityv1 "sluice.dev/sluice/proto/sluice/identity/v1"
)

// Subject is where tokens are verified.
const Subject = "sluice.api.identity.token.verify"

// Config configures the identity service.
type Config struct {
	// Conn is the NATS connection to serve on.
	Conn *bus.Conn
	// Provider is used until settings are applied with `sluice apply`
	// (the `oidc:` section), which then take precedence.
	Provider Provider
	// HTTPClient reaches the identity provider; nil uses a default.
	HTTPClient *http.Client
	Log        zerolog.Logger
}

// Service answers verification requests.
type Service struct {
	cfg      Config
	verifier atomic.Pointer[Verifier]
}

// New returns a service using the bootstrap provider.
func New(cfg Config) *Service {
	s := &Service{cfg: cfg}
	s.verifier.Store(NewVerifier(cfg.Provider, cfg.HTTPClient))
	return s
}

// Verifier returns the verifier in force.
func (s *Service) Verifier() *Verifier { return s.verifier.Load() }

// Run serves until ctx is done.
func Run(ctx context.Context, cfg Config) error {
	return New(cfg).Run(ctx)
}

// Run serves until ctx is done.
func (s *Service) Run(ctx context.Context) error {
	if s.cfg.Conn == nil {
		return errors.New("identity: no NATS connection")
	}
	if s.cfg.Provider.Issuer == "" {
		s.cfg.Log.Warn().Msg("no bootstrap identity provider; waiting for one to be applied")
	}
	sub, err := bus.Serve(ctx, s.cfg.Conn.NC, Subject, "identity",
		func() *identityv1.VerifyTokenRequest { return &identityv1.VerifyTokenRequest{} },
		s.handle)
	if err != nil {
		return err
	}
	defer sub.Unsubscribe() //nolint:errcheck
	s.cfg.Log.Info().Str("issuer", s.cfg.Provider.Issuer).Msg("identity service ready")
	err = s.watchProvider(ctx)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func (s *Service) handle(ctx context.Context, req *identityv1.VerifyTokenRequest) (*identityv1.VerifyTokenResponse, error) {
	p, f := s.verifier.Load().Verify(ctx, req.GetToken())
	if f != nil {
		return &identityv1.VerifyTokenResponse{Error: f.Proto()}, nil
	}
	return &identityv1.VerifyTokenResponse{Principal: p}, nil
}

// watchProvider follows the applied identity provider settings.
func (s *Service) watchProvider(ctx context.Context) error {
	err := bus.FollowKV(ctx, s.cfg.Conn.JS, bus.BucketControl, make(chan struct{}), func(e jetstream.KeyValueEntry) error {
		if e.Key() != controlstate.KeyIdentityProvider || e.Operation() != jetstream.KeyValuePut {
			return nil
		}
		var ev controlv1.IdentityProviderConfigured
		if err := proto.Unmarshal(e.Value(), &ev); err != nil {
			s.cfg.Log.Error().Err(err).Msg("applied identity provider is unreadable; keeping the current one")
			return nil
		}
		p := ProviderFromProto(ev.GetProvider())
		s.verifier.Store(NewVerifier(p, s.cfg.HTTPClient))
		s.cfg.Log.Info().Str("issuer", p.Issuer).Str("audience", p.Audience).Msg("identity provider applied")
		return nil
	})
	if err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	return nil
}
