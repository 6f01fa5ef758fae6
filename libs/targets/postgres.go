package targets

import (
	"fmt"
	"net"
	"net/url"
	"strconv"

	"github.com/jackc/pgx/v5/pgconn"

	"sluice.dev/sluice/libs/secrets"
	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
)

// PostgresConfig is the pgconn configuration for logging in to a
// PostgreSQL target with the gateway-held credential (pgconn then does SCRAM
// and TLS as the target's sslmode and CA file say), connecting within 10
// seconds. runtime are the startup parameters the target gets, as given;
// there are no fallbacks, so that the sslmode asked for is the one used.
// masterKey opens a sealed password; it may be nil when the password is
// not sealed. An error says what is wrong, never the password.
func PostgresConfig(pg *controlv1.PostgresTarget, masterKey *secrets.Key, runtime map[string]string) (*pgconn.Config, error) {
	password, err := secrets.Resolve(pg.GetPassword(), masterKey)
	if err != nil {
		return nil, fmt.Errorf("the target's password: %w", err)
	}
	u := url.URL{Scheme: "postgres", User: url.UserPassword(pg.GetUser(), string(password)),
		Host: net.JoinHostPort(pg.GetHost(), strconv.Itoa(int(pg.GetPort()))), Path: "/" + pg.GetDatabase()}
	q := url.Values{"sslmode": {pg.GetSslmode()}, "connect_timeout": {"10"}}
	if pg.GetCaFile() != "" {
		q.Set("sslrootcert", pg.GetCaFile())
	}
	u.RawQuery = q.Encode()
	cfg, err := pgconn.ParseConfig(u.String())
	if err != nil {
		return nil, fmt.Errorf("target configuration: %w", err)
	}
	cfg.Fallbacks = nil
	cfg.RuntimeParams = runtime
	return cfg, nil
}
