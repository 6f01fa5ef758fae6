// Package identity is the identity service: it verifies OIDC access tokens
// and maps their claims to a Principal, answering
// sluice.api.identity.token.verify as the queue group "identity".
//
// Verification uses go-oidc with a key set of our own that refreshes the
// issuer's JWKS on an unknown key id at most once per interval, so tokens
// with random key ids cannot make Sluice hammer the identity provider.
// Algorithms come from an allow-list that never contains "none" or an HMAC
// algorithm; ID tokens are refused where an access token is required.
// Invariant: a token is never logged, stored or echoed; errors carry a
// stable code and a reason that holds no secret.
package identity
