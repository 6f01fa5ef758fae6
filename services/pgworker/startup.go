package pgworker

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"net"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"sluice.dev/sluice/libs/gateway"
	"sluice.dev/sluice/libs/pgmask"
	"sluice.dev/sluice/libs/recording"
	"sluice.dev/sluice/libs/targets"
	commonv1 "sluice.dev/sluice/proto/sluice/common/v1"
	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
)

const (
	codeSSLRequest    = 80877103
	codeGSSENCRequest = 80877104
	codeCancelRequest = 80877102
	tlsHandshakeByte  = 0x16
)

// peekConn lets bytes already read into a bufio.Reader be read again (for
// the TLS handshake after peeking at a direct-TLS ClientHello).
type peekConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// allowedParams are the startup parameters passed to the target; every
// other one is refused or dropped. Never options, replication or
// search_path, which would change what statements mean without a policy
// decision.
var allowedParams = map[string]bool{
	"application_name": true, "DateStyle": true, "TimeZone": true, "IntervalStyle": true,
	"extra_float_digits": true, "statement_timeout": true, "lock_timeout": true,
	"idle_in_transaction_session_timeout": true, "bytea_output": true,
}

// startupWriter writes startup-phase answers directly to the connection.
type startupWriter struct {
	w       *writer
	scratch []byte
}

func (sw *startupWriter) send(msgs ...encoder) error {
	for _, m := range msgs {
		if err := writeMsg(sw.w, &sw.scratch, m); err != nil {
			return err
		}
	}
	return sw.w.Flush()
}

// serve handles one client connection from accept to close (the kernel
// accepts it, holds its slot and contains a panic). When every slot is
// taken (full), it negotiates as usual, bounded by the startup timeout, and
// then refuses with an error the client can show.
func (w *Worker) serve(ctx context.Context, raw net.Conn, full bool) {
	_ = raw.SetDeadline(time.Now().Add(w.cfg.StartupTimeout))
	s, err := w.startup(ctx, raw, full)
	if err != nil {
		w.cfg.Log.Debug().Err(err).Str("client", raw.RemoteAddr().String()).Msg("startup refused")
		return
	}
	if s == nil {
		return // a CancelRequest, handled
	}
	_ = raw.SetDeadline(time.Time{})
	gateway.Started(ctx)
	s.run(ctx)
}

// startup negotiates TLS, reads the startup message, authenticates and
// connects upstream. It returns nil, nil for a handled CancelRequest.
func (w *Worker) startup(ctx context.Context, raw net.Conn, full bool) (*session, error) {
	br := bufio.NewReaderSize(raw, 4096)
	var conn net.Conn = raw
	var tlsConn *tls.Conn
	// PostgreSQL 17 direct TLS: the ClientHello comes first.
	if b, err := br.Peek(1); err == nil && b[0] == tlsHandshakeByte {
		tlsConn = tls.Server(&peekConn{Conn: raw, r: br}, w.tls)
		if err := tlsConn.HandshakeContext(ctx); err != nil {
			return nil, fmt.Errorf("direct TLS handshake: %w", err)
		}
		if tlsConn.ConnectionState().NegotiatedProtocol != "postgresql" {
			return nil, errors.New("direct TLS without ALPN postgresql")
		}
		conn = tlsConn
	} else if err != nil {
		return nil, err
	}
	rd := &reader{r: br, max: 10000}
	if tlsConn != nil {
		rd = newReader(tlsConn, clientReaders, 10000)
	}
	sw := &startupWriter{w: newWriter(conn, clientWriters)}
	for attempt := 0; attempt < 4; attempt++ {
		body, err := rd.startup()
		if err != nil {
			return nil, err
		}
		code := binary.BigEndian.Uint32(body)
		switch code {
		case codeSSLRequest:
			if tlsConn != nil {
				return nil, errors.New("SSLRequest inside TLS")
			}
			if _, err := raw.Write([]byte{'S'}); err != nil {
				return nil, err
			}
			// Bytes sent before the handshake would be plaintext injected
			// into the TLS session: refuse them.
			if br.Buffered() > 0 {
				return nil, errors.New("data sent before the TLS handshake")
			}
			tlsConn = tls.Server(raw, w.tls)
			if err := tlsConn.HandshakeContext(ctx); err != nil {
				return nil, fmt.Errorf("TLS handshake: %w", err)
			}
			conn = tlsConn
			rd = newReader(tlsConn, clientReaders, 10000)
			sw = &startupWriter{w: newWriter(conn, clientWriters)}
		case codeGSSENCRequest:
			if _, err := conn.Write([]byte{'N'}); err != nil {
				return nil, err
			}
		case codeCancelRequest:
			var cr pgproto3.CancelRequest
			if err := cr.Decode(body); err != nil {
				return nil, err
			}
			w.handleCancel(cr.ProcessID, cr.SecretKey)
			return nil, nil
		default:
			var sm pgproto3.StartupMessage
			if err := sm.Decode(body); err != nil {
				_ = sw.send(fatal(stateProtocolViolation, "sluice: unsupported protocol version", "use protocol 3.0"))
				return nil, err
			}
			if tlsConn == nil {
				// Refuse before asking for the password: the token must
				// never travel in clear.
				_ = sw.send(fatal(stateInvalidAuthorization, "sluice: TLS is required; connect with sslmode=require (or verify-full)", "the password carries an access token and is never accepted in clear"))
				return nil, errors.New("plaintext startup refused")
			}
			if full {
				_ = sw.send(fatal(stateTooManyConnections, "sluice: too many sessions on this worker", "retry later or connect to another replica"))
				return nil, errors.New("too many sessions")
			}
			return w.authenticate(ctx, conn, tlsConn, rd, sw, &sm)
		}
	}
	return nil, errors.New("too many startup negotiations")
}

func (w *Worker) authenticate(ctx context.Context, conn net.Conn, tlsConn *tls.Conn, rd *reader, sw *startupWriter, sm *pgproto3.StartupMessage) (*session, error) {
	params := sm.Parameters
	client := conn.RemoteAddr().String()
	refuse := func(code, msg, hint string) (*session, error) {
		_ = sw.send(fatal(code, msg, hint))
		return nil, errors.New(msg)
	}
	if sm.ProtocolVersion != pgproto3.ProtocolVersion30 {
		var unknown []string
		for k := range params {
			if strings.HasPrefix(k, "_pq_.") {
				unknown = append(unknown, k)
			}
		}
		sort.Strings(unknown)
		if err := sw.send(&pgproto3.NegotiateProtocolVersion{NewestMinorProtocol: 0, UnrecognizedOptions: unknown}); err != nil {
			return nil, err
		}
	}
	if v, ok := params["replication"]; ok && v != "false" && v != "0" && v != "off" {
		return refuse(stateInsufficientPrivilege, "sluice: replication connections are not allowed", "")
	}
	if _, ok := params["options"]; ok {
		return refuse(stateInsufficientPrivilege, "sluice: the startup parameter options is not allowed", "set parameters with SET statements, which the policy rules on")
	}
	target := params["database"]
	if target == "" {
		return refuse(stateInvalidCatalog, "sluice: give the target name as the database (dbname=<target>)", "")
	}
	switch enc := strings.ToUpper(strings.Trim(params["client_encoding"], "'")); enc {
	case "", "UTF8", "UTF-8", "UNICODE", "SQL_ASCII", "AUTO":
	default:
		return refuse(stateInvalidParameter, fmt.Sprintf("sluice: client_encoding %s is not supported; use UTF8", enc), "")
	}

	// Ask for the token.
	if err := sw.send(&pgproto3.AuthenticationCleartextPassword{}); err != nil {
		return nil, err
	}
	typ, body, _, err := rd.next()
	if err != nil {
		return nil, err
	}
	if typ != 'p' {
		return refuse(stateProtocolViolation, "sluice: expected a password message", "")
	}
	token := strings.TrimRight(string(body), "\x00")
	gen := w.k.Authn.Generation()
	principal, perr := w.k.Authn.Verify(ctx, token)
	if perr != nil {
		w.k.RecordAuthFailure(ctx, client, target, perr.GetCode(), perr.GetMessage())
		code := stateInvalidPassword
		if perr.GetCode() == "unavailable" {
			code = stateCannotConnect
		}
		return refuse(code, fmt.Sprintf("sluice: token refused: %s (%s)", perr.GetMessage(), perr.GetCode()),
			"put a fresh access token in the password: PGPASSWORD=\"$(sluice token)\"")
	}
	tc, ok := w.k.View.LookupTarget(ctx, target)
	if !ok || tc.GetSpec().GetPostgres() == nil {
		w.k.RecordAuthFailure(ctx, client, target, "unknown_target", "no such PostgreSQL target")
		return refuse(stateInvalidCatalog, fmt.Sprintf("sluice: there is no PostgreSQL target %q", target), "sluice targets list shows the targets")
	}
	s := &session{
		w: w, id: recording.NewSessionID(), principal: principal, pkey: gateway.PrincipalKey(principal), target: tc,
		targetRef:  &commonv1.Target{Name: tc.GetSpec().GetName(), Kind: tc.GetSpec().GetKind(), Labels: tc.GetSpec().GetLabels()},
		clientAddr: client, clientUser: params["user"], app: params["application_name"],
		stmts: map[string]*stmtInfo{}, portals: map[string]*portalInfo{}, described: map[string]bool{}, cursors: map[string]pgmask.Lineage{},
		names: names{stmts: map[string]*stmtInfo{}, portals: map[string]*portalInfo{}},
		plans: map[string]*pgmask.Plan{}, descs: map[string][]pgproto3.FieldDescription{},
	}
	s.auth.init(token, principal.GetExpiresAt())
	s.rec = w.k.Rec.Open(s.id)
	up, err := w.connectUpstream(ctx, tc.GetSpec().GetPostgres(), params)
	if err != nil {
		w.cfg.Log.Warn().Err(err).Str("target", target).Msg("cannot connect to target")
		w.k.RecordAuthFailure(ctx, client, target, "target_unreachable", "the target cannot be reached")
		return refuse(stateCannotConnect, fmt.Sprintf("sluice: cannot connect to target %q", target), "the target may be down; try again")
	}
	hj := up.hj
	s.catalog, s.catalogAt, s.catalogKey = up.cat, up.catAt, up.catKey
	s.upstream = up
	s.upParams = maps.Clone(hj.ParameterStatuses)
	s.server = hj.Conn
	s.upstreamPID, s.upstreamSecret = hj.PID, hj.SecretKey
	pg := tc.GetSpec().GetPostgres()
	s.upstreamAddr = net.JoinHostPort(pg.GetHost(), strconv.Itoa(int(pg.GetPort())))
	s.upstreamTLS = hj.TLSConfig
	for _, p := range []struct{ k, want string }{{"standard_conforming_strings", "on"}, {"client_encoding", "UTF8"}} {
		if hj.ParameterStatuses[p.k] != p.want {
			hj.Conn.Close()
			return refuse(stateFeatureNotSupported, fmt.Sprintf("sluice: the target reports %s=%s; Sluice requires %s", p.k, hj.ParameterStatuses[p.k], p.want), "")
		}
	}
	state := tlsConn.ConnectionState()
	err = s.rec.Record(ctx, &sessionv1.Event{Body: &sessionv1.Event_Started{Started: &sessionv1.Started{
		Principal: principal, Target: s.targetRef, Protocol: "postgres", ClientAddr: client, ClientApplication: s.app,
		TlsVersion: tls.VersionName(state.Version), TlsCipher: tls.CipherSuiteName(state.CipherSuite), Worker: w.cfg.Name, ClientUser: s.clientUser,
	}}})
	if err != nil {
		hj.Conn.Close()
		return refuse(stateSystemError, "sluice: the audit stream is not accepting records; no session can start", "")
	}
	w.register(s)
	// The identity configuration changed between the verification and the
	// registration: reverify may have missed this session, so check it
	// here, under the configuration now in force.
	if w.k.Authn.Generation() != gen {
		if p, e := w.k.Authn.Verify(ctx, token); e != nil || gateway.PrincipalKey(p) != s.pkey {
			w.unregister(s)
			hj.Conn.Close()
			_ = s.rec.Record(ctx, &sessionv1.Event{Body: &sessionv1.Event_Ended{Ended: &sessionv1.Ended{Reason: "the identity configuration changed during authentication"}}})
			return refuse(stateInvalidPassword, "sluice: the identity configuration changed and no longer accepts this token", "reconnect with a token the current configuration accepts")
		}
	}
	msgs := []encoder{&pgproto3.AuthenticationOk{}}
	keys := make([]string, 0, len(hj.ParameterStatuses))
	for k := range hj.ParameterStatuses {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		msgs = append(msgs, &pgproto3.ParameterStatus{Name: k, Value: hj.ParameterStatuses[k]})
	}
	msgs = append(msgs, &pgproto3.ParameterStatus{Name: ParamSessionID, Value: s.id})
	msgs = append(msgs, &pgproto3.BackendKeyData{ProcessID: s.pid, SecretKey: s.secret[:]}, &pgproto3.ReadyForQuery{TxStatus: hj.TxStatus})
	if err := sw.send(msgs...); err != nil {
		w.unregister(s)
		hj.Conn.Close()
		return nil, err
	}
	s.client = conn
	s.cr = rd
	s.cr.max = w.cfg.MaxMessageSize
	s.cw = sw.w
	return s, nil
}

// upstream is a target connection ready for a session.
type upstream struct {
	hj  *pgconn.HijackedConn
	cat *pgmask.Catalog
	// catAt is when cat was resolved, catKey what it covers; pg says
	// where to log in again to resolve it anew.
	catAt     time.Time
	catKey    string
	catShared bool // cat is the worker's, not resolved for this session
	pg        *controlv1.PostgresTarget
	// key is the pool key.
	key    string
	reused bool
	// born is when the connection logged in (pooled connections age out).
	born time.Time
}

// connectUpstream takes a pooled target connection, reset, or logs in to
// the target with the gateway-held credential (libs/targets; pgconn does
// SCRAM and TLS), and takes over the socket.
func (w *Worker) connectUpstream(ctx context.Context, pg *controlv1.PostgresTarget, client map[string]string) (*upstream, error) {
	runtime := map[string]string{"client_encoding": "UTF8", "standard_conforming_strings": "on"}
	for k, v := range client {
		if allowedParams[k] {
			runtime[k] = v
		}
	}
	if _, ok := runtime["application_name"]; !ok {
		runtime["application_name"] = "sluice"
	}
	cols := pgmask.MaskColumns(w.k.View.Policy().GetRules())
	up := &upstream{key: poolKey(pg, runtime), catKey: pgmask.CatalogKey(pg, cols), pg: pg}
	// The catalog is resolved on the session's own connection as it
	// starts, and offered to the worker's other sessions of the target.
	defer func() {
		if up.cat != nil && !up.catShared {
			w.catalogs.Put(up.catKey, up.cat, up.catAt)
		}
	}()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for c := w.pool.get(up.key); c != nil; c = w.pool.get(up.key) {
		// A pooled connection gets a short leash: one that does not
		// answer must not use up the login's time.
		rctx, rcancel := context.WithTimeout(cctx, 2*time.Second)
		cached := w.recentCatalog(up)
		hj, cat, err := reuse(rctx, c, cols, cached, w.catalogs.Last(up.catKey))
		rcancel()
		if err == nil {
			up.hj, up.cat, up.reused, up.born = hj, cat, true, c.born
			return up, nil
		}
		w.cfg.Log.Debug().Err(err).Msg("pooled target connection dropped")
	}

	cfg, err := targets.PostgresConfig(pg, w.cfg.MasterKey, runtime)
	if err != nil {
		return nil, err
	}
	pc, err := pgconn.ConnectConfig(cctx, cfg)
	if err != nil {
		return nil, err
	}
	hj, cat, err := handOver(cctx, pc, cols, w.recentCatalog(up), w.catalogs.Last(up.catKey))
	if err != nil {
		return nil, err
	}
	up.hj, up.cat, up.born = hj, cat, time.Now()
	return up, nil
}

// recentCatalog is the target's catalog when one recent enough is at hand
// (up.catAt then says when it was resolved), else nil: the session then
// resolves it on its own connection (up.catAt is now).
func (w *Worker) recentCatalog(up *upstream) *pgmask.Catalog {
	if w.cfg.CatalogMaxAge > 0 {
		if cat, at := w.catalogs.Recent(up.catKey, w.cfg.CatalogMaxAge); cat != nil {
			up.catAt, up.catShared = at, true
			return cat
		}
	}
	up.catAt, up.catShared = time.Now(), false
	return nil
}

// handOver resolves the masked columns to table OIDs and attribute numbers
// on a logged-in (or reset) target connection, unless a recent resolution
// (cached) is at hand, and takes over its socket for a session; on failure
// the connection is closed. prev is the target's last resolution, which a
// new one follows renamed masked columns from.
func handOver(ctx context.Context, pc *pgconn.PgConn, cols []string, cached, prev *pgmask.Catalog) (*pgconn.HijackedConn, *pgmask.Catalog, error) {
	fail := func(err error) (*pgconn.HijackedConn, *pgmask.Catalog, error) {
		pc.Close(context.Background())
		return nil, nil, err
	}
	cat := cached
	if cat == nil {
		var err error
		if cat, err = pgmask.ResolveCatalogAfter(ctx, pc, cols, prev); err != nil {
			return fail(err)
		}
	}
	if err := pc.SyncConn(ctx); err != nil {
		return fail(err)
	}
	hj, err := pc.Hijack()
	if err != nil {
		return fail(err)
	}
	if hj.Frontend.ReadBufferLen() != 0 {
		hj.Conn.Close()
		return nil, nil, errors.New("unexpected data from the target")
	}
	// The session reads the connection itself, and pgconn.Construct
	// builds a frontend of its own when the connection is reused: the
	// frontend and its read buffer (16 KiB) would be kept for nothing
	// for as long as the session lasts.
	hj.Frontend = nil
	return hj, cat, nil
}
