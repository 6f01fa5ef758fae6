package cli

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// serverConfig is GET /api/v1/config.
type serverConfig struct {
	Issuer      string `json:"issuer"`
	Audience    string `json:"audience"`
	CLIClientID string `json:"cli_client_id"`
}

type discovery struct {
	Issuer        string `json:"issuer"`
	TokenEndpoint string `json:"token_endpoint"`
	DeviceAuth    string `json:"device_authorization_endpoint"`
}

func fetchJSON(ctx context.Context, url string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Timeout: 15 * time.Second}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: HTTP %d", url, resp.StatusCode)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// issuerInfo finds the issuer: $SLUICE_ISSUER, else what the API advertises.
func issuerInfo(ctx context.Context, api string) (serverConfig, discovery, error) {
	var sc serverConfig
	if iss := os.Getenv("SLUICE_ISSUER"); iss != "" {
		sc.Issuer = iss
		sc.Audience = os.Getenv("SLUICE_AUDIENCE")
	} else if err := fetchJSON(ctx, strings.TrimRight(api, "/")+"/api/v1/config", &sc); err != nil {
		return sc, discovery{}, fmt.Errorf("cannot learn the identity provider from %s (set SLUICE_ISSUER): %w", api, err)
	}
	if sc.Issuer == "" {
		return sc, discovery{}, fmt.Errorf("the API at %s advertises no identity provider; set SLUICE_ISSUER", api)
	}
	var d discovery
	if err := fetchJSON(ctx, strings.TrimRight(sc.Issuer, "/")+"/.well-known/openid-configuration", &d); err != nil {
		return sc, d, fmt.Errorf("identity provider discovery: %w", err)
	}
	return sc, d, nil
}

func clientCredentials(ctx context.Context, api string) (string, time.Time, error) {
	sc, d, err := issuerInfo(ctx, api)
	if err != nil {
		return "", time.Time{}, err
	}
	cfg := clientcredentials.Config{
		ClientID:     os.Getenv("SLUICE_CLIENT_ID"),
		ClientSecret: os.Getenv("SLUICE_CLIENT_SECRET"),
		TokenURL:     d.TokenEndpoint,
	}
	if scopes := os.Getenv("SLUICE_SCOPES"); scopes != "" {
		cfg.Scopes = strings.Fields(scopes)
	}
	if sc.Audience != "" {
		cfg.EndpointParams = map[string][]string{"audience": {sc.Audience}}
	}
	tok, err := cfg.Token(ctx)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("client credentials: %w", err)
	}
	return tok.AccessToken, tok.Expiry, nil
}

func newLoginCmd(g *globals) *cobra.Command {
	var clientID string
	cmd := &cobra.Command{
		Use:   "login",
		Short: "Sign in with the device flow and cache an access token",
		Long: `Sign in with the OAuth 2.0 device authorization grant against the identity provider the
Sluice API advertises (or $SLUICE_ISSUER). Open the URL shown, enter the code, and the
token is cached in ~/.config/sluice/token.json for the other commands.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			sc, d, err := issuerInfo(ctx, g.api)
			if err != nil {
				return err
			}
			if d.DeviceAuth == "" {
				return fmt.Errorf("the identity provider %s does not offer the device flow", sc.Issuer)
			}
			if clientID == "" {
				clientID = sc.CLIClientID
			}
			if clientID == "" {
				return fmt.Errorf("no client id: pass --client-id")
			}
			cfg := oauth2.Config{ClientID: clientID, Endpoint: oauth2.Endpoint{TokenURL: d.TokenEndpoint, DeviceAuthURL: d.DeviceAuth}, Scopes: []string{"openid"}}
			var opts []oauth2.AuthCodeOption
			if sc.Audience != "" {
				opts = append(opts, oauth2.SetAuthURLParam("audience", sc.Audience))
			}
			da, err := cfg.DeviceAuth(ctx, opts...)
			if err != nil {
				return fmt.Errorf("device authorization: %w", err)
			}
			uri := da.VerificationURIComplete
			if uri == "" {
				uri = da.VerificationURI
			}
			fmt.Fprintf(g.stderr, "Open %s\nand enter the code %s to sign in. Waiting...\n", uri, da.UserCode)
			tok, err := cfg.DeviceAccessToken(ctx, da)
			if err != nil {
				return fmt.Errorf("sign-in: %w", err)
			}
			path, err := saveCachedToken(&cachedToken{AccessToken: tok.AccessToken, ExpiresAt: tok.Expiry, Issuer: sc.Issuer, API: g.api})
			if err != nil {
				return fmt.Errorf("cache token: %w", err)
			}
			fmt.Fprintf(g.stderr, "Signed in; token cached in %s until %s.\n", path, tok.Expiry.Local().Format(time.RFC1123))
			return nil
		},
	}
	cmd.Flags().StringVar(&clientID, "client-id", "", "OAuth client id (default: what the API advertises)")
	return cmd
}

func newTokenCmd(g *globals) *cobra.Command {
	var execCredential bool
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Print a fresh access token",
		Long: `Print an access token for use as a PostgreSQL password or a bearer token.
$SLUICE_TOKEN, if set, is printed as is; with $SLUICE_CLIENT_ID and $SLUICE_CLIENT_SECRET
set it uses the client credentials grant (agents, CI); otherwise it prints the token
'sluice login' cached. With --exec-credential it prints a Kubernetes ExecCredential, as
kubectl's exec credential plugins do (sluice kubeconfig writes a kubeconfig that runs it).`,
		Example: `  PGPASSWORD="$(sluice token)" psql "host=127.0.0.1 port=15432 dbname=demo user=alice sslmode=require"`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			tok, err := resolveToken(cmd.Context(), g.api)
			if err != nil {
				return err
			}
			if execCredential {
				status := map[string]any{"token": tok}
				if exp := tokenExpiry(tok); !exp.IsZero() {
					status["expirationTimestamp"] = exp.UTC().Format(time.RFC3339)
				}
				return json.NewEncoder(g.stdout).Encode(map[string]any{
					"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential", "status": status})
			}
			fmt.Fprintln(g.stdout, tok)
			return nil
		},
	}
	cmd.Flags().BoolVar(&execCredential, "exec-credential", false, "print a Kubernetes ExecCredential (client.authentication.k8s.io/v1) for kubectl")
	return cmd
}

func newWhoamiCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "whoami",
		Short: "Show the principal your token proves",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := g.checkOutput(); err != nil {
				return err
			}
			c, err := g.newClient(cmd.Context())
			if err != nil {
				return err
			}
			var p struct {
				Subject   string    `json:"subject"`
				Email     string    `json:"email"`
				Groups    []string  `json:"groups"`
				Machine   bool      `json:"machine"`
				Issuer    string    `json:"issuer"`
				ExpiresAt time.Time `json:"expires_at"`
			}
			if err := c.do(cmd.Context(), http.MethodGet, "/api/v1/whoami", nil, &p); err != nil {
				return err
			}
			if g.json() {
				return g.printJSON(p)
			}
			kind := "human"
			if p.Machine {
				kind = "machine"
			}
			fmt.Fprintf(g.stdout, "subject:  %s (%s)\nemail:    %s\ngroups:   %s\nissuer:   %s\nexpires:  %s\n",
				p.Subject, kind, p.Email, strings.Join(p.Groups, ", "), p.Issuer, p.ExpiresAt.Local().Format(time.RFC1123))
			return nil
		},
	}
}

// freshToken is the token source of long-running commands (sluice connect):
// a token found as 'sluice token' finds one (resolveToken: $SLUICE_TOKEN,
// client credentials, or the token 'sluice login' cached, read again on
// every call so that signing in again elsewhere is picked up), with when it
// expires.
func freshToken(ctx context.Context, api string) (string, time.Time, error) {
	tok, err := resolveToken(ctx, api)
	if err != nil {
		return "", time.Time{}, err
	}
	return tok, tokenExpiry(tok), nil
}

// tokenSourceName says where freshToken gets its tokens, for messages about
// a token that could not be renewed.
func tokenSourceName() string {
	switch {
	case strings.TrimSpace(os.Getenv("SLUICE_TOKEN")) != "":
		return "$SLUICE_TOKEN, a fixed token (use client credentials, or unset it and run 'sluice login')"
	case os.Getenv("SLUICE_CLIENT_ID") != "":
		return "client credentials ($SLUICE_CLIENT_ID)"
	}
	return "the token 'sluice login' cached (run 'sluice login' again)"
}

// tokenExpiry reads the exp claim of a JWT without verifying it: enough to
// know when to ask for the next token, since the gateway verifies each one
// itself. Zero if the token has none.
func tokenExpiry(tok string) time.Time {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return time.Time{}
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return time.Time{}
	}
	var claims struct {
		Exp json.Number `json:"exp"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		return time.Time{}
	}
	exp, err := claims.Exp.Float64()
	if err != nil || exp <= 0 {
		return time.Time{}
	}
	return time.Unix(int64(exp), 0)
}
