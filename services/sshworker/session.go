package sshworker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"
	"google.golang.org/protobuf/types/known/timestamppb"

	"sluice.dev/sluice/libs/gateway"
	"sluice.dev/sluice/libs/recording"
	"sluice.dev/sluice/libs/sshca"
	"sluice.dev/sluice/libs/targets"
	commonv1 "sluice.dev/sluice/proto/sluice/common/v1"
	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
)

// Exit statuses the client sees for Sluice's own outcomes.
const (
	// ExitDenied: the command was denied, its approval denied, expired or
	// withdrawn, or it could not be recorded (EX_NOPERM).
	ExitDenied = 77
	// ExitGateway: the gateway or the target failed (as ssh itself).
	ExitGateway = 255
)

// session is one client connection.
type session struct {
	w         *Worker
	id        string
	principal *commonv1.Principal
	pkey      [16]byte
	token     string
	target    *controlv1.SSHTarget
	targetRef *commonv1.Target
	conn      *ssh.ServerConn
	up        *ssh.Client
	rec       *recording.Session
	start     time.Time
	certEnd   time.Time

	mu       sync.Mutex
	cmdID    uint64
	channels map[*channel]struct{}
	forwards int64

	commands, denied  atomic.Int64
	bytesIn, bytesOut atomic.Int64
	active            atomic.Int64 // unix nanoseconds of the last traffic

	ended     chan struct{}
	endOnce   sync.Once
	endReason atomic.Value
}

func (s *session) ID() string                { return s.id }
func (s *session) CallerToken() string       { return s.token }
func (s *session) PrincipalKey() [16]byte    { return s.pkey }
func (s *session) touch()                    { s.active.Store(time.Now().UnixNano()) }
func (s *session) sinceStart() time.Duration { return time.Since(s.start) }

// End closes the session, telling every open channel why on its stderr.
func (s *session) End(code gateway.EndCode, reason string) {
	s.shutdown(reason)
}

func (s *session) shutdown(reason string) {
	s.endOnce.Do(func() {
		s.endReason.Store(reason)
		close(s.ended)
		s.mu.Lock()
		chans := make([]*channel, 0, len(s.channels))
		for c := range s.channels {
			chans = append(chans, c)
		}
		s.mu.Unlock()
		// Tell each channel why, but never wait on a client that does not
		// read (a closed window would hold the session open): half a
		// second, then the connections close whatever was said.
		said := make(chan struct{}, len(chans))
		for _, c := range chans {
			go func() {
				_, _ = fmt.Fprintf(c.ch.Stderr(), "\r\nsluice: %s; the session is closed\r\n", reason)
				said <- struct{}{}
			}()
		}
		deadline := time.After(500 * time.Millisecond)
	wait:
		for range chans {
			select {
			case <-said:
			case <-deadline:
				break wait
			}
		}
		s.conn.Close()
		// Commands still running on the target end with the session.
		if s.up != nil {
			s.up.Close()
		}
	})
}

func (s *session) reason() string {
	r, _ := s.endReason.Load().(string)
	return r
}

// errFull refuses authentication when every session slot is taken.
var errFull = errors.New("too many sessions")

func (w *Worker) serve(ctx context.Context, raw net.Conn, full bool) {
	client := raw.RemoteAddr().String()
	_ = raw.SetDeadline(time.Now().Add(w.cfg.StartupTimeout))
	// The last certificate refused, for the record of a failed login.
	var badCert atomic.Pointer[error]
	cfg := &ssh.ServerConfig{
		Config:        ssh.Config{Ciphers: targets.SSHCiphers}, // AES-GCM only (libs/targets says why)
		ServerVersion: "SSH-2.0-Sluice",
		MaxAuthTries:  6,
		// Only public keys: a certificate Sluice issued. The identity it
		// names is read from the connection's Permissions after the
		// handshake, which belong to the key the client proved it holds.
		PublicKeyCallback: func(meta ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			if full {
				return nil, errFull
			}
			p, cert, err := w.checker.Verify(key)
			if err == nil {
				var tok string
				if tok, err = sshca.Token(w.tokenKey, cert); err == nil {
					return &ssh.Permissions{Extensions: map[string]string{
						"token": tok, "subject": p.GetSubject(),
						"valid_before": strconv.FormatUint(cert.ValidBefore, 10), "serial": strconv.FormatUint(cert.Serial, 10),
					}}, nil
				}
			}
			badCert.Store(&err)
			return nil, err
		},
		BannerCallback: func(ssh.ConnMetadata) string {
			if full {
				return "sluice: too many sessions on this worker; retry later or use another replica\r\n"
			}
			return ""
		},
	}
	cfg.AddHostKey(w.host)
	conn, chans, reqs, err := ssh.NewServerConn(raw, cfg)
	if err != nil {
		if e := badCert.Load(); e != nil && !errors.Is(*e, sshca.ErrNotCertificate) {
			w.k.RecordAuthFailure(ctx, client, "", "certificate_refused", (*e).Error())
		}
		w.cfg.Log.Debug().Err(err).Str("client", client).Msg("SSH handshake refused")
		return
	}
	defer conn.Close()
	_ = raw.SetDeadline(time.Time{})
	gateway.Started(ctx)
	s, refused := w.open(ctx, conn, client)
	if refused != "" {
		// The client authenticated with a certificate Sluice issued, but
		// nothing may be done: say why on every channel it opens, then
		// close.
		go ssh.DiscardRequests(reqs)
		timer := time.AfterFunc(5*time.Second, func() { conn.Close() })
		defer timer.Stop()
		for nc := range chans {
			_ = nc.Reject(ssh.Prohibited, "sluice: "+refused)
			conn.Close()
		}
		return
	}
	defer s.up.Close()
	defer w.k.Unregister(s)
	w.cfg.Log.Debug().Str("session", s.id).Str("principal", s.principal.GetSubject()).Str("target", s.targetRef.GetName()).Msg("SSH session started")
	go s.watch(ctx)
	go s.globalRequests(ctx, reqs)
	var wg sync.WaitGroup
	for nc := range chans {
		s.touch()
		if s.openChannels() >= maxChannels {
			_ = nc.Reject(ssh.ResourceShortage, fmt.Sprintf("sluice: at most %d channels per connection", maxChannels))
			continue
		}
		switch nc.ChannelType() {
		case "session":
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer s.contain("session channel")
				s.sessionChannel(ctx, nc)
			}()
		case "direct-tcpip":
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer s.contain("forwarding channel")
				s.forwardChannel(ctx, nc)
			}()
		default:
			_ = nc.Reject(ssh.UnknownChannelType, "sluice: channel type "+nc.ChannelType()+" is not supported")
		}
	}
	s.shutdown(s.closedBy())
	wg.Wait()
	s.w.k.RecordEnd(s.rec, &sessionv1.Ended{
		Reason: s.reason(), Commands: s.commands.Load(), Denied: s.denied.Load(), BytesIn: s.bytesIn.Load(), BytesOut: s.bytesOut.Load(),
	})
}

// maxChannels bounds the channels open at once on one connection (as
// OpenSSH's MaxSessions does): each holds buffers and goroutines.
const maxChannels = 10

// openChannels counts the channels open now (forwarding included).
func (s *session) openChannels() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.channels) + int(s.forwards)
}

// contain ends the session on a panic in one of its goroutines, instead of
// the worker.
func (s *session) contain(what string) {
	if r := recover(); r != nil {
		s.w.cfg.Log.Error().Interface("panic", r).Str("session", s.id).Str("in", what).Msg("SSH session failed; closed")
		s.shutdown("an internal error closed the session")
	}
}

// closedBy is the reason of a session the client closed.
func (s *session) closedBy() string {
	if r := s.reason(); r != "" {
		return r
	}
	return "the client closed the session"
}

// open verifies the token the certificate carries, finds the target named
// by the login name and logs in to it. It returns why nothing may be done
// when it cannot.
func (w *Worker) open(ctx context.Context, conn *ssh.ServerConn, client string) (*session, string) {
	ext := conn.Permissions.Extensions
	name := conn.User()
	token := ext["token"]
	gen := w.k.Authn.Generation()
	principal, perr := w.k.Authn.Verify(ctx, token)
	if perr != nil {
		w.k.RecordAuthFailure(ctx, client, name, perr.GetCode(), perr.GetMessage())
		return nil, fmt.Sprintf("the token in your certificate is refused: %s (%s); run sluice ssh login again", perr.GetMessage(), perr.GetCode())
	}
	if principal.GetSubject() != ext["subject"] {
		w.k.RecordAuthFailure(ctx, client, name, "certificate_mismatch", "the certificate names another principal than its token")
		return nil, "the certificate names another principal than its token"
	}
	tc, ok := w.k.View.LookupTarget(ctx, name)
	if !ok || tc.GetSpec().GetSsh() == nil {
		w.k.RecordAuthFailure(ctx, client, name, "unknown_target", "no such SSH target")
		return nil, fmt.Sprintf("there is no SSH target %q: the login name names the target (sluice targets list shows them)", name)
	}
	spec := tc.GetSpec()
	s := &session{
		w: w, id: recording.NewSessionID(), principal: principal, pkey: gateway.PrincipalKey(principal), token: token,
		target: spec.GetSsh(), targetRef: gateway.TargetRef(spec.GetName(), spec.GetKind(), spec.GetLabels()),
		conn: conn, start: time.Now(), channels: map[*channel]struct{}{}, ended: make(chan struct{}),
	}
	s.touch()
	if vb, err := strconv.ParseInt(ext["valid_before"], 10, 64); err == nil {
		s.certEnd = time.Unix(vb, 0)
	} else {
		return nil, "the certificate has no end"
	}
	s.rec = w.k.Rec.Open(s.id)
	up, err := targets.DialSSH(ctx, s.target, w.cfg.MasterKey, w.cfg.TargetTimeout)
	if err != nil {
		w.cfg.Log.Warn().Err(err).Str("target", name).Msg("cannot connect to target")
		w.k.RecordAuthFailure(ctx, client, name, "target_unreachable", err.Error())
		return nil, fmt.Sprintf("cannot reach target %q: %v", name, err)
	}
	s.up = up
	err = s.rec.Record(ctx, &sessionv1.Event{Body: &sessionv1.Event_Started{Started: &sessionv1.Started{
		Principal: principal, Target: s.targetRef, Protocol: "ssh", ClientAddr: client, ClientApplication: string(conn.ClientVersion()),
		Worker: w.cfg.Name, ClientUser: name,
	}}})
	if err != nil {
		up.Close()
		return nil, "the audit stream is not accepting records; no session can start"
	}
	w.k.Register(s)
	if w.k.Authn.Generation() != gen {
		if p, e := w.k.Authn.Verify(ctx, token); e != nil || gateway.PrincipalKey(p) != s.pkey {
			w.k.Unregister(s)
			up.Close()
			_ = s.rec.Record(ctx, &sessionv1.Event{Body: &sessionv1.Event_Ended{Ended: &sessionv1.Ended{Reason: "the identity configuration changed during authentication"}}})
			return nil, "the identity configuration changed and no longer accepts this token"
		}
	}
	return s, ""
}

// watch ends the session when its token expires or it idles too long.
func (s *session) watch(ctx context.Context) {
	// The session ends with its token, or its certificate if that ends
	// first (a token without an expiry).
	end := s.certEnd
	if exp := s.principal.GetExpiresAt(); exp != nil && exp.AsTime().Before(end) {
		end = exp.AsTime()
	}
	t := time.NewTimer(time.Until(end))
	defer t.Stop()
	expiry := t.C
	idle := time.NewTicker(time.Minute)
	defer idle.Stop()
	for {
		select {
		case <-ctx.Done():
			s.shutdown("the gateway is shutting down")
			return
		case <-s.ended:
			return
		case <-expiry:
			s.shutdown(fmt.Sprintf("the access token expired at %s", end.UTC().Format(time.RFC3339)))
			return
		case <-idle.C:
			if time.Since(time.Unix(0, s.active.Load())) > s.w.cfg.IdleTimeout {
				s.shutdown("the session was idle for " + s.w.cfg.IdleTimeout.String())
				return
			}
		}
	}
}

// nextCommand numbers a command of the session.
func (s *session) nextCommand() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cmdID++
	return s.cmdID
}

func (s *session) addChannel(c *channel) {
	s.mu.Lock()
	s.channels[c] = struct{}{}
	s.mu.Unlock()
}

func (s *session) dropChannel(c *channel) {
	s.mu.Lock()
	delete(s.channels, c)
	s.mu.Unlock()
}

// emit records an event without waiting; a recording that fails ends the
// session.
func (s *session) emit(ev *sessionv1.Event) (uint64, error) {
	if ev.Time == nil {
		ev.Time = timestamppb.Now()
	}
	seq, err := s.rec.Emit(ev)
	if err != nil {
		s.shutdown("the audit stream is not accepting records")
	}
	return seq, err
}

// durable waits for an event to be durable; a recording that fails ends the
// session (a wait cut short by ctx only ends the wait).
func (s *session) durable(ctx context.Context, seq uint64) error {
	if err := s.rec.WaitFor(ctx, seq); err != nil {
		if errors.Is(err, recording.ErrNotRecording) {
			s.shutdown("the audit stream is not accepting records")
		}
		return err
	}
	return nil
}
