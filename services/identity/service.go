package identity

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"golang.org/x/crypto/ssh"
	"google.golang.org/protobuf/proto"

	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/controlstate"
	"sluice.dev/sluice/libs/secrets"
	"sluice.dev/sluice/libs/sshca"
	commonv1 "sluice.dev/sluice/proto/sluice/common/v1"
	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
	identityv1 "sluice.dev/sluice/proto/sluice/identity/v1"
)

// Config configures the identity service.
type Config struct {
	// Conn is the NATS connection to serve on.
	Conn *bus.Conn
	// Provider is used until settings are applied with `sluice apply`
	// (the `oidc:` section), which then take precedence.
	Provider Provider
	// HTTPClient reaches the identity providers; nil uses a default.
	HTTPClient *http.Client
	Log        zerolog.Logger
	// SSHUserCA, if set, signs SSH user certificates for verified tokens
	// (sluice ssh login); without it the SSH subjects say so. SSHTokenKey
	// seals the token a certificate carries (the master key's subkey
	// sshca.TokenKeyPurpose, which the SSH workers open); it is required
	// with SSHUserCA.
	SSHUserCA   *sshca.CA
	SSHTokenKey *secrets.Key
	// Ready, if set, is called once the service serves.
	Ready func()
}

// Service answers verification requests.
type Service struct {
	cfg Config
	set atomic.Pointer[Set]
	// progress is how far the provider watch has read the control bucket.
	progress bus.Progress
}

// Set is the identity configuration in force: a verifier per trusted
// issuer, and the digest that names the configuration (empty for the
// bootstrap provider).
type Set struct {
	Digest   string
	byIssuer map[string]*Verifier
}

// NewSet builds the verifiers of providers.
func NewSet(digest string, providers []Provider, client *http.Client) *Set {
	s := &Set{Digest: digest, byIssuer: map[string]*Verifier{}}
	for _, p := range providers {
		if p.Issuer != "" {
			s.byIssuer[p.Issuer] = NewVerifier(p, client)
		}
	}
	return s
}

// Verify picks the verifier of the token's issuer. A token from an issuer
// that is not configured is refused as such, before any key lookup.
func (s *Set) Verify(ctx context.Context, raw string) (*commonv1.Principal, *Failure) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return nil, fail(CodeMissing, "no token was presented")
	}
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return nil, fail(CodeMalformed, "a token must be a signed JWT (three dot-separated parts)")
	}
	var claims struct {
		Iss any `json:"iss"`
	}
	if err := decodeSegment(parts[1], &claims); err != nil {
		return nil, fail(CodeMalformed, "the JWT payload is not valid base64url JSON")
	}
	iss, _ := claims.Iss.(string)
	v, ok := s.byIssuer[iss]
	if !ok {
		if len(s.byIssuer) == 0 {
			return nil, fail(CodeUnavailable, "no identity provider is configured")
		}
		return nil, fail(CodeUntrusted, "tokens issued by %q are not trusted here (trusted issuers: %s)", iss, strings.Join(s.Issuers(), ", "))
	}
	return v.Verify(ctx, raw)
}

// Issuers lists the trusted issuers.
func (s *Set) Issuers() []string {
	out := make([]string, 0, len(s.byIssuer))
	for iss := range s.byIssuer {
		out = append(out, iss)
	}
	sort.Strings(out)
	return out
}

// Verifier returns the verifier of an issuer.
func (s *Set) Verifier(issuer string) *Verifier { return s.byIssuer[issuer] }

// New returns a service using the bootstrap provider.
func New(cfg Config) *Service {
	s := &Service{cfg: cfg}
	s.set.Store(NewSet("", []Provider{cfg.Provider}, cfg.HTTPClient))
	return s
}

// Set returns the configuration in force.
func (s *Service) Set() *Set { return s.set.Load() }

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
	// Answer only once the applied configuration (if any) is loaded: a
	// token must never be judged under a configuration already replaced.
	ready := make(chan struct{})
	errc := make(chan error, 1)
	go func() { errc <- s.watchProvider(ctx, ready) }()
	select {
	case <-ready:
	case err := <-errc:
		return err
	case <-ctx.Done():
		return nil
	}
	sub, err := bus.Serve(ctx, s.cfg.Conn.NC, bus.APIIdentityVerify, "identity",
		func() *identityv1.VerifyTokenRequest { return &identityv1.VerifyTokenRequest{} },
		s.handle)
	if err != nil {
		return err
	}
	defer sub.Unsubscribe() //nolint:errcheck
	sign, err := bus.Serve(ctx, s.cfg.Conn.NC, bus.APIIdentitySSHSign, "identity",
		func() *identityv1.SignSSHRequest { return &identityv1.SignSSHRequest{} }, s.signSSH)
	if err != nil {
		return err
	}
	defer sign.Unsubscribe() //nolint:errcheck
	authority, err := bus.Serve(ctx, s.cfg.Conn.NC, bus.APIIdentitySSHAuthority, "identity",
		func() *identityv1.SSHAuthorityRequest { return &identityv1.SSHAuthorityRequest{} }, s.sshAuthority)
	if err != nil {
		return err
	}
	defer authority.Unsubscribe() //nolint:errcheck
	s.cfg.Log.Info().Strs("issuers", s.Set().Issuers()).Bool("ssh_ca", s.cfg.SSHUserCA != nil).Msg("identity service ready")
	if s.cfg.Ready != nil {
		s.cfg.Ready()
	}
	select {
	case err := <-errc:
		if ctx.Err() != nil {
			return nil
		}
		return err
	case <-ctx.Done():
		return nil
	}
}

func (s *Service) handle(ctx context.Context, req *identityv1.VerifyTokenRequest) (*identityv1.VerifyTokenResponse, error) {
	set := s.set.Load()
	p, f := set.Verify(ctx, req.GetToken())
	if f != nil && f.Code == CodeUntrusted {
		// An issuer trusted by an apply that has returned may not have
		// reached this service's watch yet: ask again once it has.
		cctx, cancel := context.WithTimeout(ctx, catchUpWait)
		err := s.progress.CatchUp(cctx, s.cfg.Conn.JS, bus.BucketControl)
		cancel()
		if now := s.set.Load(); err == nil && now != set {
			set = now
			p, f = set.Verify(ctx, req.GetToken())
		}
	}
	if f != nil {
		verifications.WithLabelValues(f.Code).Inc()
		return &identityv1.VerifyTokenResponse{Error: f.Proto(), IdentityDigest: set.Digest}, nil
	}
	verifications.WithLabelValues("ok").Inc()
	return &identityv1.VerifyTokenResponse{Principal: p, IdentityDigest: set.Digest}, nil
}

// signSSH exchanges the caller's token (verified here, as any caller's) for
// an SSH user certificate that names the principal and carries the token,
// valid no longer than the token.
func (s *Service) signSSH(ctx context.Context, req *identityv1.SignSSHRequest) (*identityv1.SignSSHReply, error) {
	if s.cfg.SSHUserCA == nil || s.cfg.SSHTokenKey == nil {
		return &identityv1.SignSSHReply{Error: &commonv1.Error{Code: "not_configured", Message: "no SSH user authority is configured (--ssh-user-ca and the master key)"}}, nil
	}
	token := bus.CallerToken(ctx)
	p, f := s.set.Load().Verify(ctx, token)
	if f != nil {
		return &identityv1.SignSSHReply{Error: f.Proto()}, nil
	}
	pub, _, _, rest, err := ssh.ParseAuthorizedKey([]byte(req.GetPublicKey()))
	if err != nil || len(strings.TrimSpace(string(rest))) > 0 {
		return &identityv1.SignSSHReply{Error: &commonv1.Error{Code: "bad_request", Message: "public_key must be one public key in authorized_keys format"}}, nil
	}
	notAfter := time.Now().Add(sshca.MaxLifetime)
	if p.GetExpiresAt() != nil {
		notAfter = p.GetExpiresAt().AsTime()
	}
	cert, err := s.cfg.SSHUserCA.Issue(pub, p, sshca.SealToken(s.cfg.SSHTokenKey, token), notAfter, time.Now())
	if err != nil {
		return &identityv1.SignSSHReply{Error: &commonv1.Error{Code: "bad_request", Message: err.Error()}}, nil
	}
	s.cfg.Log.Info().Str("subject", p.GetSubject()).Uint64("serial", cert.Serial).Time("valid_before", sshca.ValidBefore(cert)).Msg("SSH certificate issued")
	return &identityv1.SignSSHReply{Certificate: string(ssh.MarshalAuthorizedKey(cert)), ValidBeforeUnix: int64(cert.ValidBefore), Principal: p}, nil
}

func (s *Service) sshAuthority(context.Context, *identityv1.SSHAuthorityRequest) (*identityv1.SSHAuthorityReply, error) {
	if s.cfg.SSHUserCA == nil {
		return &identityv1.SSHAuthorityReply{Error: &commonv1.Error{Code: "not_configured", Message: "no SSH user authority is configured (--ssh-user-ca)"}}, nil
	}
	return &identityv1.SSHAuthorityReply{PublicKeys: []string{strings.TrimSpace(string(ssh.MarshalAuthorizedKey(s.cfg.SSHUserCA.PublicKey())))}}, nil
}

// catchUpWait bounds how long a refusal waits for the provider watch to
// catch up with the control bucket.
const catchUpWait = 2 * time.Second

// watchProvider follows the applied identity provider settings.
func (s *Service) watchProvider(ctx context.Context, ready chan struct{}) error {
	err := bus.FollowKV(ctx, s.cfg.Conn.JS, bus.BucketControl, ready, func(e jetstream.KeyValueEntry) error {
		defer s.progress.Applied(e.Revision())
		if e.Key() != controlstate.KeyIdentityProvider {
			return nil
		}
		if e.Operation() != jetstream.KeyValuePut {
			s.set.Store(NewSet("", []Provider{s.cfg.Provider}, s.cfg.HTTPClient))
			s.cfg.Log.Warn().Msg("applied identity settings removed; back to the bootstrap provider")
			return nil
		}
		var ev controlv1.IdentityProviderConfigured
		if err := proto.Unmarshal(e.Value(), &ev); err != nil {
			// Fail closed: no token verifies under an unreadable
			// configuration, rather than under the one it replaced.
			s.set.Store(NewSet(e.Key()+"-unreadable", nil, s.cfg.HTTPClient))
			s.cfg.Log.Error().Err(err).Msg("applied identity provider is unreadable; refusing every token")
			return nil
		}
		var ps []Provider
		for _, p := range controlstate.Providers(&ev) {
			ps = append(ps, ProviderFromProto(p))
		}
		set := NewSet(ev.GetDigest(), ps, s.cfg.HTTPClient)
		s.set.Store(set)
		s.cfg.Log.Info().Strs("issuers", set.Issuers()).Str("applied_by", ev.GetAppliedBy()).Msg("identity configuration applied")
		return nil
	})
	if err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	return nil
}
