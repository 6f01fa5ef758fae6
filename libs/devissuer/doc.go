// Package devissuer is the development OpenID Connect issuer built into
// `sluice dev`: discovery, JWKS, and a token endpoint with the client
// credentials and device authorization grants, so that `sluice login`,
// `sluice token` and agents work with no external identity provider.
//
// It is for development only: the device verification page lets whoever
// opens it choose the identity. Production deployments point Sluice at a real
// identity provider (Keycloak, Dex, Okta, Entra, Auth0, Hydra).
// Access tokens are ES256 JWTs with header typ "at+jwt" (RFC 9068).
package devissuer
