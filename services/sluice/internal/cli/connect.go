package cli

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"sluice.dev/sluice/services/pgworker"
)

// sluice connect serves one PostgreSQL target on a local port, in the manner
// of `tsh proxy db`: local clients connect without a password and without
// TLS, and the helper carries each connection to the gateway over verified
// TLS with a fresh access token as the password. A session lives as long as
// its token; before that one expires the helper renews the session with a
// fresh token of the same principal (POST /api/v1/sessions/{id}/renew),
// which the gateway verifies and records, so a session lasts as long as the
// helper can get tokens.

func newConnectCmd(g *globals) *cobra.Command {
	o := connectOptions{}
	cmd := &cobra.Command{
		Use:   "connect TARGET [--listen 127.0.0.1:PORT] [--user NAME]",
		Short: "Serve a PostgreSQL target on a local port, keeping its sessions open with fresh tokens",
		Long: `Listen on a local port and carry every connection to the Sluice PostgreSQL gateway as you,
in the manner of 'tsh proxy db'. Local clients (psql, any driver, a GUI) connect without a
password and without TLS; the helper connects to the gateway over TLS, verifying its
certificate (--ca), and answers the password request with a fresh access token.

Tokens come from where 'sluice token' finds them: client credentials ($SLUICE_CLIENT_ID and
$SLUICE_CLIENT_SECRET), the token 'sluice login' cached (read again each time, so signing in
again in another terminal is picked up), or $SLUICE_TOKEN (a fixed token, which renews nothing).

A session ends when its token expires. At two thirds of the token's lifetime the helper
renews the session with a fresh token of the same principal, through the API
(POST /api/v1/sessions/{id}/renew); the gateway verifies that token itself, accepts only the
principal the session started with, and records the renewal in the session's audit log.
Renewals and refusals are logged here. A session whose principal changed (other groups, say)
is not renewed: it ends when its token expires, and the next connection starts as who you
are now.

Cancel requests (Ctrl-C in psql) are relayed to the gateway. Ctrl-C stops the helper and
closes its sessions.

Anyone who can reach the local port acts as you. The helper listens on loopback only, and on
another address only with --allow-remote.`,
		Example: `  sluice connect demo --ca .sluice/tls/cert.pem      # sluice dev's certificate
  psql "host=127.0.0.1 port=PORT dbname=demo"        # in another terminal, no password

  SLUICE_CLIENT_ID=agent SLUICE_CLIENT_SECRET=... sluice connect prod-db --listen 127.0.0.1:6432 --server sluice.example.com:15432`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := g.checkOutput(); err != nil {
				return err
			}
			o.target = args[0]
			return o.run(cmd.Context(), g)
		},
	}
	defServer := os.Getenv("SLUICE_PG_ADDR")
	if defServer == "" {
		defServer = "127.0.0.1:15432"
	}
	f := cmd.Flags()
	f.StringVar(&o.listen, "listen", "127.0.0.1:0", "local address to listen on (port 0: any free port)")
	f.StringVar(&o.server, "server", defServer, "the Sluice PostgreSQL gateway, host:port ($SLUICE_PG_ADDR)")
	f.StringVar(&o.ca, "ca", "", "PEM file of the certificate authority (or certificate) the gateway's TLS certificate is checked against (default $PGSSLROOTCERT, else the system's; sluice dev: .sluice/tls/cert.pem)")
	f.StringVar(&o.user, "user", "", "startup user sent to the gateway, which records it and never trusts it (default: the local client's)")
	f.BoolVar(&o.allowRemote, "allow-remote", false, "allow a --listen address other than loopback: whoever reaches it connects as you")
	f.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	return cmd
}

type connectOptions struct {
	target, listen, server, ca, user, logLevel string
	allowRemote                                bool
}

func (o *connectOptions) run(ctx context.Context, g *globals) error {
	log, err := newLogger(g.stderr, "console", o.logLevel)
	if err != nil {
		return err
	}
	remote, err := checkListen(o.listen, o.allowRemote)
	if err != nil {
		return err
	}
	tlsCfg, err := gatewayTLS(o.server, o.ca)
	if err != nil {
		return err
	}
	c := &connector{target: o.target, server: o.server, user: o.user, tls: tlsCfg, api: strings.TrimRight(g.api, "/"), log: log,
		tokens: &tokenCache{source: func(ctx context.Context) (string, time.Time, error) { return freshToken(ctx, g.api) }}}
	// The first token says who the sessions will be, and whether the API
	// (which renewals go through) accepts it.
	tok, _, err := c.tokens.get(ctx, time.Now())
	if err != nil {
		return err
	}
	var who struct {
		Subject string   `json:"subject"`
		Groups  []string `json:"groups"`
		Machine bool     `json:"machine"`
	}
	api := &client{base: c.api, token: tok, http: &http.Client{Timeout: 20 * time.Second}}
	if err := api.do(ctx, http.MethodGet, "/api/v1/whoami", nil, &who); err != nil {
		return fmt.Errorf("the API does not accept the token (renewals go through it): %w", err)
	}
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	addr := ln.Addr().(*net.TCPAddr)
	host := addr.IP.String()
	if addr.IP.IsUnspecified() {
		host = "127.0.0.1"
	}
	psql := fmt.Sprintf(`psql "host=%s port=%d dbname=%s"`, host, addr.Port, o.target)
	if g.json() {
		err = g.printJSON(map[string]any{"listen": addr.String(), "host": host, "port": addr.Port, "target": o.target,
			"server": o.server, "principal": who.Subject, "groups": who.Groups, "psql": psql})
	} else {
		kind := ""
		if who.Machine {
			kind = ", machine"
		}
		_, err = fmt.Fprintf(g.stdout, "Serving target %s on %s as %s (groups %s%s), through the gateway at %s.\n"+
			"Connect without a password:\n  %s\n"+
			"Sessions are renewed with fresh tokens before theirs expire. Ctrl-C stops.\n",
			o.target, addr, who.Subject, joinOr(who.Groups, "none"), kind, o.server, psql)
	}
	if err != nil {
		ln.Close()
		return err
	}
	if remote {
		log.Warn().Str("listen", addr.String()).Msg("listening beyond loopback: whoever reaches this address connects as you, with no password")
	}
	err = c.serve(ctx, ln)
	log.Info().Msg("stopped")
	return err
}

func joinOr(xs []string, none string) string {
	if len(xs) == 0 {
		return none
	}
	return strings.Join(xs, ", ")
}

// checkListen refuses an address beyond loopback unless allowed, and says
// whether it is one.
func checkListen(addr string, allowRemote bool) (bool, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false, fmt.Errorf("--listen %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host == "localhost" || ip != nil && ip.IsLoopback() {
		return false, nil
	}
	if !allowRemote {
		return true, fmt.Errorf("--listen %s is not a loopback address: whoever reaches it would connect as you, with no password (add --allow-remote if you mean it)", addr)
	}
	return true, nil
}

// gatewayTLS is how the helper checks the gateway: its certificate must
// chain to --ca ($PGSSLROOTCERT; else the system's roots) and name the
// --server host. The token is the password: it never goes to a server the
// helper has not verified.
func gatewayTLS(server, ca string) (*tls.Config, error) {
	host, _, err := net.SplitHostPort(server)
	if err != nil {
		return nil, fmt.Errorf("--server %q: %w", server, err)
	}
	cfg := &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
	if ca == "" {
		ca = os.Getenv("PGSSLROOTCERT")
	}
	if ca != "" && ca != "system" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			return nil, fmt.Errorf("--ca: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ca %s holds no PEM certificate", ca)
		}
	}
	return cfg, nil
}

// connector serves local connections.
type connector struct {
	target, server, user, api string
	tls                       *tls.Config
	tokens                    *tokenCache
	log                       zerolog.Logger
}

func (c *connector) serve(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("accept: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.handle(ctx, conn)
		}()
	}
}

// Protocol codes of the packets a client may send first.
const (
	codeSSLRequest    = 80877103
	codeGSSENCRequest = 80877104
	codeCancelRequest = 80877102
)

// handle carries one local connection to the gateway, from startup to close.
func (c *connector) handle(ctx context.Context, local net.Conn) {
	defer local.Close()
	stopLocal := context.AfterFunc(ctx, func() { local.Close() })
	defer stopLocal()
	log := c.log.With().Str("client", local.RemoteAddr().String()).Logger()
	_ = local.SetDeadline(time.Now().Add(30 * time.Second))
	lr := bufio.NewReader(local)
	startup, err := c.localStartup(ctx, local, lr)
	if err != nil {
		log.Debug().Err(err).Msg("local connection refused")
		return
	}
	if startup == nil {
		return // a cancel, relayed
	}
	if db := startup.params["database"]; db != "" && db != c.target {
		// Two helpers on two ports: a mix-up must not reach the wrong
		// target.
		log.Warn().Str("database", db).Msg("a local client asked for another target; refused")
		refuseLocal(local, "3D000", fmt.Sprintf("sluice connect: this port serves target %q, not %q: connect with dbname=%s", c.target, db, c.target))
		return
	}
	startup.params["database"] = c.target
	if c.user != "" {
		startup.params["user"] = c.user
	}
	tok, exp, err := c.tokens.get(ctx, time.Now().Add(time.Second))
	if err != nil {
		log.Error().Err(err).Msg("no token for a new session")
		refuseLocal(local, "28000", "sluice connect: no access token: "+err.Error())
		return
	}
	gw, gr, err := c.dial(ctx)
	if err != nil {
		log.Error().Err(err).Msg("cannot reach the gateway")
		refuseLocal(local, "08001", "sluice connect: "+err.Error())
		return
	}
	defer gw.Close()
	stopGateway := context.AfterFunc(ctx, func() { gw.Close() })
	defer stopGateway()
	id, err := c.login(gw, gr, local, startup.encode(), tok)
	if err != nil {
		log.Warn().Err(err).Msg("the gateway refused the session")
		return
	}
	_ = local.SetDeadline(time.Time{})
	_ = gw.SetDeadline(time.Time{})
	log = log.With().Str("session", id).Logger()
	log.Info().Msg("session started")

	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if id == "" {
		log.Warn().Msg("the gateway did not say the session's id: the session ends when its token expires")
	} else {
		go c.keepAlive(sctx, log, id, time.Now(), exp)
	}
	// Bytes both ways until either side ends; then both close.
	done := make(chan struct{}, 2)
	go func() {
		_, _ = io.Copy(gw, lr)
		done <- struct{}{}
	}()
	go func() {
		_, _ = io.Copy(local, gr)
		done <- struct{}{}
	}()
	<-done
	local.Close()
	gw.Close()
	<-done
	log.Info().Msg("session ended")
}

// startupPacket is a client's StartupMessage.
type startupPacket struct {
	version uint32
	params  map[string]string
}

func (p *startupPacket) encode() []byte {
	keys := make([]string, 0, len(p.params))
	for k := range p.params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	b := make([]byte, 8, 256)
	binary.BigEndian.PutUint32(b[4:], p.version)
	for _, k := range keys {
		b = append(b, k...)
		b = append(b, 0)
		b = append(b, p.params[k]...)
		b = append(b, 0)
	}
	b = append(b, 0)
	binary.BigEndian.PutUint32(b, uint32(len(b)))
	return b
}

// localStartup reads what the local client sends first. The local side is
// plaintext (loopback): TLS and GSS encryption are declined, as a server
// without them does. A CancelRequest is relayed to the gateway, and nil
// returned.
func (c *connector) localStartup(ctx context.Context, local net.Conn, lr *bufio.Reader) (*startupPacket, error) {
	for range 4 {
		if b, err := lr.Peek(1); err != nil {
			return nil, err
		} else if b[0] == 0x16 {
			return nil, errors.New("direct TLS: the local side is plaintext; connect with sslmode=disable or prefer")
		}
		var n [4]byte
		if _, err := io.ReadFull(lr, n[:]); err != nil {
			return nil, err
		}
		size := binary.BigEndian.Uint32(n[:])
		if size < 8 || size > 10000 {
			return nil, fmt.Errorf("startup packet of %d bytes", size)
		}
		body := make([]byte, size-4)
		if _, err := io.ReadFull(lr, body); err != nil {
			return nil, err
		}
		switch code := binary.BigEndian.Uint32(body); code {
		case codeSSLRequest, codeGSSENCRequest:
			if _, err := local.Write([]byte{'N'}); err != nil {
				return nil, err
			}
		case codeCancelRequest:
			c.relayCancel(ctx, append(n[:], body...))
			return nil, nil
		default:
			if code>>16 != 3 {
				refuseLocal(local, "08P01", "sluice connect: unsupported protocol version")
				return nil, fmt.Errorf("protocol version %d", code)
			}
			p := &startupPacket{version: code, params: map[string]string{}}
			fields := strings.Split(string(body[4:]), "\x00")
			for i := 0; i+1 < len(fields) && fields[i] != ""; i += 2 {
				p.params[fields[i]] = fields[i+1]
			}
			return p, nil
		}
	}
	return nil, errors.New("too many startup negotiations")
}

// refuseLocal answers the local client with a FATAL error and nothing more.
func refuseLocal(local net.Conn, code, msg string) {
	var body []byte
	for _, f := range []struct {
		t byte
		v string
	}{{'S', "FATAL"}, {'V', "FATAL"}, {'C', code}, {'M', msg}} {
		body = append(body, f.t)
		body = append(body, f.v...)
		body = append(body, 0)
	}
	body = append(body, 0)
	_, _ = local.Write(frame('E', body))
}

func frame(typ byte, body []byte) []byte {
	b := make([]byte, 5, 5+len(body))
	b[0] = typ
	binary.BigEndian.PutUint32(b[1:], uint32(4+len(body)))
	return append(b, body...)
}

// dial opens a connection to the gateway: SSLRequest, then TLS with the
// gateway's certificate verified.
func (c *connector) dial(ctx context.Context) (net.Conn, *bufio.Reader, error) {
	d := net.Dialer{Timeout: 10 * time.Second}
	raw, err := d.DialContext(ctx, "tcp", c.server)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot reach the gateway at %s: %w", c.server, err)
	}
	_ = raw.SetDeadline(time.Now().Add(30 * time.Second))
	var answer [1]byte
	if _, err := raw.Write([]byte{0, 0, 0, 8, 4, 210, 22, 47}); err != nil {
		raw.Close()
		return nil, nil, fmt.Errorf("gateway %s: %w", c.server, err)
	}
	if _, err := io.ReadFull(raw, answer[:]); err != nil || answer[0] != 'S' {
		raw.Close()
		return nil, nil, fmt.Errorf("the gateway at %s does not offer TLS", c.server)
	}
	tc := tls.Client(raw, c.tls)
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		var unknown x509.UnknownAuthorityError
		if errors.As(err, &unknown) {
			return nil, nil, fmt.Errorf("the gateway's certificate is not trusted (%w): pass --ca with the certificate that signs it (sluice dev: --ca .sluice/tls/cert.pem)", err)
		}
		return nil, nil, fmt.Errorf("TLS with the gateway at %s: %w", c.server, err)
	}
	return tc, bufio.NewReaderSize(tc, 32<<10), nil
}

// login sends the startup to the gateway, answers its password request with
// the token, and relays the rest to the local client up to ReadyForQuery.
// It returns the session id the gateway gave (pgworker.ParamSessionID).
func (c *connector) login(gw net.Conn, gr *bufio.Reader, local net.Conn, startup []byte, token string) (string, error) {
	if _, err := gw.Write(startup); err != nil {
		return "", err
	}
	id := ""
	for {
		typ, msg, err := readFrame(gr, 1<<20)
		if err != nil {
			return "", fmt.Errorf("gateway: %w", err)
		}
		body := msg[5:]
		switch typ {
		case 'R':
			if len(body) < 4 {
				return "", errors.New("malformed authentication request")
			}
			switch method := binary.BigEndian.Uint32(body); method {
			case 0: // AuthenticationOk: relayed below
			case 3: // cleartext password, inside TLS: the token
				if _, err := gw.Write(frame('p', append([]byte(token), 0))); err != nil {
					return "", err
				}
				continue
			default:
				refuseLocal(local, "28000", "sluice connect: the gateway asked for an authentication method other than a token")
				return "", fmt.Errorf("authentication method %d", method)
			}
		case 'S':
			if name, value, ok := strings.Cut(string(body), "\x00"); ok && name == pgworker.ParamSessionID {
				id = strings.TrimRight(value, "\x00")
			}
		}
		if _, err := local.Write(msg); err != nil {
			return "", err
		}
		switch typ {
		case 'E':
			return "", errors.New(errorMessage(body))
		case 'Z':
			return id, nil
		}
	}
}

// readFrame reads one backend message (type, length, body) whole.
func readFrame(r *bufio.Reader, max int) (byte, []byte, error) {
	var head [5]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return 0, nil, err
	}
	n := int(binary.BigEndian.Uint32(head[1:]))
	if n < 4 || n > max {
		return 0, nil, fmt.Errorf("message of %d bytes", n)
	}
	msg := make([]byte, 1+n)
	copy(msg, head[:])
	if _, err := io.ReadFull(r, msg[5:]); err != nil {
		return 0, nil, err
	}
	return head[0], msg, nil
}

// errorMessage is the message field of an ErrorResponse body.
func errorMessage(body []byte) string {
	for _, f := range strings.Split(string(body), "\x00") {
		if strings.HasPrefix(f, "M") {
			return f[1:]
		}
	}
	return "the gateway refused the session"
}

// relayCancel carries a local CancelRequest to the gateway unchanged: the
// keys in it are the gateway's own, relayed to the client at startup.
func (c *connector) relayCancel(ctx context.Context, packet []byte) {
	gw, _, err := c.dial(ctx)
	if err != nil {
		c.log.Warn().Err(err).Msg("cancel request not relayed")
		return
	}
	defer gw.Close()
	if _, err := gw.Write(packet); err != nil {
		c.log.Warn().Err(err).Msg("cancel request not relayed")
		return
	}
	// The gateway closes the connection once it has the request.
	_ = gw.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _ = io.Copy(io.Discard, gw)
	c.log.Debug().Msg("cancel request relayed")
}

// keepAlive renews a session at two thirds of its token's lifetime, with a
// fresh token, until the session ends or cannot be renewed any more.
func (c *connector) keepAlive(ctx context.Context, log zerolog.Logger, id string, since, expires time.Time) {
	next := renewalTime(since, expires)
	for !expires.IsZero() {
		t := time.NewTimer(time.Until(next))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if !time.Now().Before(expires) {
			log.Warn().Msg("the session's token expired before the session could be renewed; the gateway closes it")
			return
		}
		until, err := c.renew(ctx, id, expires)
		if err == nil {
			log.Info().Time("until", until.Local()).Msg("session renewed")
			since, expires = time.Now(), until
			next = renewalTime(since, expires)
			continue
		}
		if ctx.Err() != nil {
			return
		}
		if final(err) {
			log.Error().Err(err).Time("ends", expires.Local()).Msg("the session cannot be renewed; it ends when its token expires")
			return
		}
		retry := min(30*time.Second, max(time.Second, time.Until(expires)/4))
		log.Warn().Err(err).Dur("retry_in", retry).Time("ends", expires.Local()).Msg("session not renewed yet")
		next = time.Now().Add(retry)
	}
}

func renewalTime(since, expires time.Time) time.Time {
	return since.Add(expires.Sub(since) * 2 / 3)
}

// renew extends session id with a token that expires after the session's.
func (c *connector) renew(ctx context.Context, id string, expires time.Time) (time.Time, error) {
	tok, _, err := c.tokens.get(ctx, expires)
	if err != nil {
		return time.Time{}, err
	}
	api := &client{base: c.api, token: tok, http: &http.Client{Timeout: 20 * time.Second}}
	var out struct {
		ExpiresAt time.Time `json:"expires_at"`
	}
	if err := api.do(ctx, http.MethodPost, "/api/v1/sessions/"+id+"/renew", nil, &out); err != nil {
		return time.Time{}, err
	}
	return out.ExpiresAt, nil
}

// final says a renewal will not succeed however often it is tried: the
// session is gone, or another principal (or the same one with other groups)
// holds the tokens now.
func final(err error) bool {
	var ae *apiError
	if !errors.As(err, &ae) {
		return false
	}
	switch ae.Status {
	case http.StatusForbidden, http.StatusNotFound, http.StatusGone:
		return true
	case http.StatusConflict:
		return ae.Code != "not_later"
	}
	return false
}

// tokenCache hands out tokens shared by the helper's sessions: the one it
// holds while that is in the first third of its lifetime, else a new one
// from the source. So sessions started together share a token, and a
// renewal always moves a session's end well ahead.
type tokenCache struct {
	source func(context.Context) (string, time.Time, error)

	mu           sync.Mutex
	token        string
	got, expires time.Time
}

// get returns a token that expires after after (or never).
func (t *tokenCache) get(ctx context.Context, after time.Time) (string, time.Time, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	later := func(exp time.Time) bool { return exp.IsZero() || exp.After(after) }
	if t.token != "" && later(t.expires) && (t.expires.IsZero() || now.Before(t.got.Add(t.expires.Sub(t.got)/3))) {
		return t.token, t.expires, nil
	}
	tok, exp, err := t.source(ctx)
	if err != nil {
		return "", time.Time{}, err
	}
	if !later(exp) {
		return "", time.Time{}, fmt.Errorf("the newest token, from %s, expires at %s: no later than needed (%s)",
			tokenSourceName(), exp.Local().Format(time.TimeOnly), after.Local().Format(time.TimeOnly))
	}
	t.token, t.got, t.expires = tok, now, exp
	return tok, exp, nil
}
