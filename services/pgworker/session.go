package pgworker

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"iter"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgproto3"
	"google.golang.org/protobuf/proto"

	"sluice.dev/sluice/libs/approvalstate"
	"sluice.dev/sluice/libs/gateway"
	"sluice.dev/sluice/libs/pgmask"
	"sluice.dev/sluice/libs/recording"
	commonv1 "sluice.dev/sluice/proto/sluice/common/v1"
	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
	policyv1 "sluice.dev/sluice/proto/sluice/policy/v1"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
)

// session is one client connection relayed to one upstream connection.
type session struct {
	// decidedAt is the decision epoch (the kernel's decision cache
	// generation) read before the last decision was asked for.
	decidedAt uint64
	w         *Worker
	id        string
	principal *commonv1.Principal
	// auth is the access token in force and when the session ends; a
	// renewal replaces them (renew.go). principal and pkey never change.
	auth       sessionAuth
	pkey       [16]byte
	target     *controlv1.TargetConfigured
	targetRef  *commonv1.Target
	clientAddr string
	clientUser string
	app        string
	rec        *recording.Session

	client net.Conn
	cr     *reader
	cwMu   sync.Mutex
	cw     *writer
	out    []byte // scratch for encoding client messages (under cwMu)
	// rewrite replaces the current server message (server goroutine).
	rewrite encoder

	server net.Conn
	sr     *reader
	sw     *writer
	sout   []byte // scratch for encoding server messages (client goroutine)

	pid            uint32
	secret         [4]byte
	upstreamPID    uint32
	upstreamSecret []byte
	upstreamAddr   string
	upstreamTLS    *tls.Config
	// upstream is the target connection's origin (pool key, catalog);
	// upParams its parameter statuses as the target last reported them
	// (server goroutine), lastTx its last transaction status, and parking
	// says the session ends by handing the connection back to the pool.
	upstream *upstream
	upParams map[string]string
	lastTx   atomic.Uint32
	parking  atomic.Bool
	// unsynced says extended-protocol messages went to the target since
	// the last Sync or Query (client goroutine).
	unsynced bool

	// Client-goroutine state.
	stmts   map[string]*stmtInfo
	portals map[string]*portalInfo
	// described are the statements ("S:name") and portals ("P:name") whose
	// row description the server has sent since they were made.
	described map[string]bool
	// names are the statements and portals the server confirmed, and the
	// changes to them sent since (names.go); stmts and portals above are
	// what the worker acts on. syncs counts the Syncs and Queries sent.
	names names
	syncs uint64
	// copyIn is the COPY FROM STDIN in progress, if any (client goroutine).
	copyIn *copyState
	// cursors are the lineage of cursors DECLARE made, by name (every
	// declaration of a name, merged: a DECLARE that failed leaves the
	// server's cursor, so its lineage stays).
	cursors map[string]pgmask.Lineage
	// Masking: the session's resolved columns, plans per rule set (client
	// goroutine), the last plan (for notifications), and row descriptions
	// by statement and portal (server goroutine).
	catalog *pgmask.Catalog
	// catalogAt is when the catalog was resolved, catalogKey for which
	// target and masked columns (catalogs.go).
	catalogAt  time.Time
	catalogKey string
	// catalogPolicy is the policy catalogKey was computed for.
	catalogPolicy *controlv1.PolicySetApplied
	plans         map[string]*pgmask.Plan
	// lastDecision and lastDecisionPlan remember planFor's last answer.
	lastDecision     *policyv1.Decision
	lastDecisionPlan *pgmask.Plan
	lastPlan         atomic.Pointer[pgmask.Plan]
	descs            map[string][]pgproto3.FieldDescription
	maskBuf          []byte
	cmdID            uint64
	marker           string
	probes           uint64

	// holdCancel is open while a statement is held: a CancelRequest for
	// the session closes it.
	holdMu     sync.Mutex
	holdCancel chan struct{}

	// Shared with the server goroutine.
	qmu   sync.Mutex
	queue []*expect

	// Result summaries waiting to travel with the next command.
	resMu      sync.Mutex
	pendingRes []*sessionv1.Result
	resTimer   *time.Timer

	commands, denied  atomic.Int64
	bytesIn, bytesOut atomic.Int64
	endOnce           sync.Once
	endReason         atomic.Value
}

// stmtInfo is a prepared statement the policy allowed (or holds).
type stmtInfo struct {
	text     string
	decision *policyv1.Decision
	cached   bool
	// sql: made by SQL PREPARE (its decision is the PREPARE's).
	sql bool
	// epoch and expires say until when the decision holds (fresh): made
	// before the worker's decisions were last forgotten (a new policy
	// revision, a grant that started or ended), or past its time to live,
	// it is made again before the statement runs.
	epoch   uint64
	expires time.Time
	// types are its parameters' types, for an approver (shared by the
	// statement's records as it is ruled on again).
	types *paramTypes
}

// newInfo is a statement's record, its decision stamped with the epoch in
// force when it was asked for (decide).
func (s *session) newInfo(text string, d *policyv1.Decision, cached, sql bool, epoch uint64) *stmtInfo {
	info := &stmtInfo{text: text, decision: d, cached: cached, sql: sql, epoch: epoch}
	// A decision made under an older policy than the worker has seen (the
	// policy service had not loaded the new one yet) holds for nothing.
	if c := d.GetCache(); c.GetCacheable() && d.GetRevision() >= s.w.k.Decisions.Revision() {
		ttl := time.Duration(c.GetTtlMs()) * time.Millisecond
		if cached {
			// A decision from the cache may be near the end of its life
			// there: it is trusted a second at most.
			ttl = min(ttl, time.Second)
		}
		info.expires = time.Now().Add(ttl)
	}
	return info
}

// fresh reports whether a statement's decision still holds (newInfo).
func (s *session) fresh(info *stmtInfo) bool {
	return info.epoch == s.w.k.Decisions.Generation() && time.Now().Before(info.expires)
}

// portalInfo is a bound portal.
type portalInfo struct {
	stmt string
	// info is the statement bound (a portal keeps it even if the name
	// stands for another statement later); nil if the worker knew none,
	// and then the Bind failed.
	info       *stmtInfo
	paramsHash string
	formats    []int16 // result format codes from Bind
	// bind is the Bind from its statement name on, for an approver; nil
	// when it is longer than an approver is shown (bindSize says how long).
	bind     []byte
	bindSize int
}

type expectKind int

const (
	expQuery      expectKind = iota // a simple Query: ends with ReadyForQuery
	expExecute                      // an Execute: ends with CommandComplete, PortalSuspended or an error
	expSync                         // a Sync: ends with ReadyForQuery
	expProbeQuery                   // a denied Query (or FunctionCall) replaced by a failing one
	expProbeParse                   // a denied Parse replaced by a failing one
	expDescribe                     // a Describe: ends with RowDescription or NoData
	expName                         // a Parse, Bind or Close: ends with its completion or an error
)

// expect is what the server goroutine expects back for something the
// client goroutine forwarded, in order.
type expect struct {
	kind    expectKind
	cmdID   uint64
	seq     uint64 // recording seq that must be durable before results go out
	start   time.Time
	denial  *pgproto3.ErrorResponse
	marker  string
	rows    int64
	durable bool

	// internal marks a Describe the worker sent itself (its answer is
	// kept, never forwarded).
	internal bool
	// names is the change to the names the message makes, confirmed by
	// its completion (expName; expQuery: the CommandComplete); ends, on
	// what ends with ReadyForQuery, forgets the portals if the
	// transaction ended. msg is the message of an expName (P, B, C).
	names *nameOp
	ends  *nameOp
	msg   byte
	// copyIn is set on a Query that copies from the client.
	copyIn *copyState

	// Masking (set by the client goroutine before push; then server-owned).
	plan     *pgmask.Plan
	lin      pgmask.Lineage
	text     string
	describe string      // "S:name" or "P:name" for expDescribe and expExecute
	types    *paramTypes // the described statement's, set from its ParameterDescription
	stmtKey  string
	formats  []int16
	cols     []pgmask.Column
	stats    pgmask.Stats
	refusing bool
	copy     *copyMask
}

func (e *expect) endsWithReady() bool {
	return e.kind == expQuery || e.kind == expSync || e.kind == expProbeQuery
}

func (s *session) push(e *expect) {
	if e.endsWithReady() && e.ends == nil && len(s.portals) > 0 {
		// Forgets the portals if the transaction ends (none: nothing to do).
		e.ends = s.changeNames(opEnd, []string{"P:*"}, endTransaction)
	}
	s.qmu.Lock()
	s.queue = append(s.queue, e)
	s.qmu.Unlock()
}

func (s *session) head() *expect {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	if len(s.queue) == 0 {
		return nil
	}
	return s.queue[0]
}

func (s *session) pop() {
	s.qmu.Lock()
	if len(s.queue) > 0 {
		for _, op := range []*nameOp{s.queue[0].names, s.queue[0].ends} {
			if op != nil {
				op.settle(false) // unless answered already: skipped or failed
			}
		}
		if c := s.queue[0].copyIn; c != nil {
			c.settle(false)
		}
		s.queue[0] = nil
		s.queue = s.queue[1:]
	}
	s.qmu.Unlock()
}

// run relays until either side ends, then records the end.
func (s *session) run(ctx context.Context) {
	defer s.w.unregister(s)
	var b [8]byte
	_, _ = rand.Read(b[:])
	s.marker = "sluice-denied-" + hex.EncodeToString(b[:])
	s.sr, s.sw = newReader(s.server, serverReaders, s.w.cfg.MaxServerMessageSize), newWriter(s.server, serverWriters)
	defer func() {
		s.sr.release()
		s.sw.release()
		s.cr.release()
		s.cwMu.Lock()
		s.cw.release()
		s.cwMu.Unlock()
	}()

	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.startExpiry()
	defer s.stopExpiry()
	done := make(chan struct{})
	go func() {
		defer close(done)
		// The client goroutine may wait for an answer (rely, inCopy)
		// that will not come now.
		defer cancel()
		defer s.contain("server")
		s.serverLoop(sctx)
	}()
	func() {
		defer s.contain("client")
		s.clientLoop(sctx)
	}()
	<-done
	if s.parking.Load() {
		if !s.repool() {
			s.server.Close()
		}
		s.client.Close()
	}
	s.flushResults()
	reason, _ := s.endReason.Load().(string)
	if reason == "" {
		reason = "closed"
	}
	s.w.k.RecordEnd(s.rec, &sessionv1.Ended{
		Reason: reason, Commands: s.commands.Load(), Denied: s.denied.Load(), BytesIn: s.bytesIn.Load(), BytesOut: s.bytesOut.Load(),
	})
}

// contain turns a panic in one session into the end of that session, so a
// bug reached by one client never takes the worker down for the others.
func (s *session) contain(where string) {
	if r := recover(); r != nil {
		s.w.cfg.Log.Error().Interface("panic", r).Str("session", s.id).Str("where", where).Msg("session failed; closed")
		s.shutdown("internal error", fatal(stateSystemError, "sluice: internal error; the session is closed", ""))
	}
}

// shutdown ends the session once: tells the client why (if msg is set) and
// closes both connections, which stops both goroutines.
func (s *session) shutdown(reason string, msg *pgproto3.ErrorResponse) {
	s.endOnce.Do(func() {
		s.endReason.Store(reason)
		if msg != nil {
			s.cwMu.Lock()
			_ = s.client.SetWriteDeadline(time.Now().Add(2 * time.Second))
			_ = writeMsg(s.cw, &s.out, msg)
			_ = s.cw.Flush()
			s.cwMu.Unlock()
		}
		s.server.Close()
		if reason == "message too large" {
			return // the client loop drains, then the connection closes
		}
		s.client.Close()
	})
}

// park ends the session, keeping the target connection for the pool: it
// stops the server goroutine's read (a deadline in the past) instead of
// closing the connection. run hands the connection to the pool if it is
// still clean once the server goroutine has stopped.
func (s *session) park() bool {
	parked := false
	s.endOnce.Do(func() {
		s.endReason.Store("the client closed the session")
		s.parking.Store(true)
		_ = s.server.SetReadDeadline(time.Unix(1, 0))
		// The client is leaving: a server goroutine blocked writing to it
		// (a client that stopped reading) must not hold the session open.
		_ = s.client.SetWriteDeadline(time.Now().Add(time.Second))
		parked = true
	})
	return parked
}

// repool hands the target connection of a parked session to the pool if
// nothing is in flight, no byte of a server message is half read, and the
// connection is idle outside a transaction; it reports whether it did.
func (s *session) repool() bool {
	up := s.upstream
	if up == nil || s.head() != nil || s.lastTx.Load() != 'I' || s.sr.buffered() || s.sr.torn || s.sw.Buffered() > 0 {
		return false
	}
	if err := s.server.SetReadDeadline(time.Time{}); err != nil {
		return false
	}
	hj := *up.hj
	hj.ParameterStatuses, hj.TxStatus = s.upParams, 'I'
	return s.w.pool.put(up.key, &pooledConn{hj: &hj, born: up.born})
}

// cancelUpstream sends a CancelRequest for this session's backend.
func (s *session) cancelUpstream() {
	go func() {
		d := net.Dialer{Timeout: 5 * time.Second}
		c, err := d.Dial("tcp", s.upstreamAddr)
		if err != nil {
			return
		}
		defer c.Close()
		if s.upstreamTLS != nil {
			// A cancel is sent the way the session connected.
			if _, err := c.Write([]byte{0, 0, 0, 8, 4, 210, 22, 47}); err != nil {
				return
			}
			var resp [1]byte
			if _, err := io.ReadFull(c, resp[:]); err != nil || resp[0] != 'S' {
				return
			}
			tc := tls.Client(c, s.upstreamTLS)
			if err := tc.Handshake(); err != nil {
				return
			}
			c = tc
		}
		b, _ := (&pgproto3.CancelRequest{ProcessID: s.upstreamPID, SecretKey: s.upstreamSecret}).Encode(nil)
		_, _ = c.Write(b)
	}()
}

// clientLoop reads the client's messages, rules on statements and forwards.
func (s *session) clientLoop(ctx context.Context) {
	idle := s.w.cfg.IdleTimeout
	// The idle deadline moves at most once a second: resetting it costs a
	// timer update, and the timeout is counted in minutes.
	var deadline time.Time
	for {
		if !s.cr.buffered() {
			if err := s.sw.Flush(); err != nil {
				s.shutdown("the target closed the connection", nil)
				return
			}
			if s.head() == nil {
				// Nothing in flight: the client may stay away long.
				s.cr.park()
				s.sw.park()
			}
			if now := time.Now(); now.Add(idle).Sub(deadline) >= min(time.Second, idle/10) {
				deadline = now.Add(idle)
				_ = s.client.SetReadDeadline(deadline)
			}
		}
		typ, body, frame, err := s.cr.next()
		if err != nil {
			switch {
			case errors.Is(err, errTooLarge):
				s.shutdown("message too large", fatal(stateProtocolViolation, "sluice: "+err.Error(), ""))
				// Let the client finish sending (and read the error) rather
				// than reset a connection it is still writing to.
				_ = s.client.SetReadDeadline(time.Now().Add(time.Second))
				if in, err := s.cr.input(); err == nil {
					_, _ = io.Copy(io.Discard, in)
				}
			case isTimeout(err):
				s.shutdown("idle timeout", fatal(stateAdminShutdown, "sluice: the session was idle too long and is closed", ""))
			default:
				s.shutdown("the client closed the connection", nil)
			}
			return
		}
		s.bytesIn.Add(int64(len(frame)))
		if err := s.onClient(ctx, typ, body, frame); err != nil {
			if !errors.Is(err, errClosed) {
				s.shutdown("protocol error", fatal(stateProtocolViolation, "sluice: "+err.Error(), ""))
			}
			return
		}
	}
}

var errClosed = errors.New("session closed")

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (s *session) forward(frame []byte) error {
	_, err := s.sw.Write(frame)
	return err
}

func cstring(b []byte) (string, []byte, error) {
	i := bytes.IndexByte(b, 0)
	if i < 0 {
		return "", nil, errors.New("malformed message: missing string terminator")
	}
	return string(b[:i]), b[i+1:], nil
}

func (s *session) onClient(ctx context.Context, typ byte, body, frame []byte) error {
	if s.copyIn != nil {
		if done, err := s.inCopy(ctx, typ, frame); done || err != nil {
			return err
		}
	}
	if (typ == 'Q' || typ == 'F') && s.unsynced {
		// The server ignores it after an error in the pipeline, and its
		// answer could not be told from the next one's.
		s.shutdown("protocol violation", fatal(stateProtocolViolation,
			"sluice: a Query or FunctionCall inside an extended-protocol pipeline (before its Sync) is not supported", "send Sync first"))
		return errClosed
	}
	switch typ {
	case 'P', 'B', 'E', 'C', 'D', 'H':
		// Extended-protocol messages leave state in the backend (an
		// implicit transaction, a portal, an error that discards input)
		// until a Sync: a connection is never pooled in between.
		s.unsynced = true
	case 'Q', 'S':
		s.unsynced = false
	}
	switch typ {
	case 'Q':
		text, _, err := cstring(body)
		if err != nil {
			return err
		}
		err = s.onQuery(ctx, text, frame)
		s.syncs++ // what follows a Query runs whatever became of it
		return err
	case 'P':
		name, rest, err := cstring(body)
		if err != nil {
			return err
		}
		text, types, err := cstring(rest)
		if err != nil {
			return err
		}
		delete(s.described, "S:"+name)
		return s.onParse(ctx, name, text, types, frame)
	case 'B':
		portal, rest, err := cstring(body)
		if err != nil {
			return err
		}
		stmt, _, err := cstring(rest)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(rest)
		formats, err := resultFormats(rest[len(stmt)+1:])
		if err != nil {
			return err
		}
		if err := s.rely(ctx, "S:"+stmt); err != nil {
			return err
		}
		delete(s.described, "P:"+portal)
		info := s.stmts[stmt]
		if info == nil {
			// Not a statement the server holds for this session, or one
			// the worker cannot vouch for: refused, never bound.
			return s.unknownName(unknownStatement(stmt))
		}
		p := &portalInfo{stmt: stmt, info: info, paramsHash: hex.EncodeToString(sum[:16]), formats: formats, bindSize: len(rest)}
		if len(rest) <= approvalstate.MaxCommandExcerpt {
			// Kept for an approver, should the policy hold the statement
			// when it is executed (it is ruled on again then).
			p.bind = append([]byte(nil), rest...)
		}
		e := &expect{kind: expName, msg: 'B', describe: "P:" + portal, names: s.changeNames(opMake, []string{"P:" + portal}, setPortal(portal, p))}
		// Its error is masked as the statement's results are.
		if err := s.attachPlan(e, info.decision, info.text); err != nil {
			return err
		}
		s.push(e)
		return s.forward(frame)
	case 'E':
		portal, _, err := cstring(body)
		if err != nil {
			return err
		}
		if err := s.rely(ctx, "P:"+portal); err != nil {
			return err
		}
		return s.onExecute(ctx, portal, frame)
	case 'C':
		if len(body) < 2 {
			return errors.New("malformed Close")
		}
		name, _, err := cstring(body[1:])
		if err != nil {
			return err
		}
		key := string(body[0]) + ":" + name
		change := setPortal(name, nil)
		if body[0] == 'S' {
			change = setStatement(name, nil)
		}
		s.push(&expect{kind: expName, msg: 'C', names: s.changeNames(opForget, []string{key}, change)})
		delete(s.described, key)
		return s.forward(frame)
	case 'S':
		s.push(&expect{kind: expSync})
		s.syncs++
		return s.forward(frame)
	case 'D':
		if len(body) < 2 {
			return errors.New("malformed Describe")
		}
		name, _, err := cstring(body[1:])
		if err != nil {
			return err
		}
		e := &expect{kind: expDescribe, describe: string(body[0]) + ":" + name}
		if err := s.rely(ctx, e.describe); err != nil {
			return err
		}
		s.described[e.describe] = true
		if body[0] == 'S' {
			if info := s.stmts[name]; info != nil {
				e.plan, _ = s.planFor(info.decision)
				e.types = info.types
			}
		} else if p := s.portals[name]; p != nil {
			if p.info != nil {
				e.plan, _ = s.planFor(p.info.decision)
			}
			e.formats = p.formats
		}
		s.push(e)
		return s.forward(frame)
	case 'H', 'd', 'c', 'f':
		return s.forward(frame)
	case 'F':
		d := s.w.k.Count(&policyv1.Decision{Action: "deny", Rule: ruleFunctionCall, Reason: "the FunctionCall message calls a function by OID, bypassing SQL inspection; it is refused"})
		return s.deny(d, "function call", "function_call", false)
	case 'X':
		if s.w.pool != nil && !s.unsynced && s.head() == nil && s.lastTx.Load() == 'I' && s.park() {
			return errClosed
		}
		_ = s.forward(frame)
		_ = s.sw.Flush()
		s.shutdown("the client closed the session", nil)
		return errClosed
	}
	return fmt.Errorf("unexpected message type %q", typ)
}

// emitCommand records a command with its decision.
func (s *session) emitCommand(text, via, stmt, params string, d *policyv1.Decision, cached bool) (uint64, error) {
	s.cmdID++
	ev := &sessionv1.Event{Body: &sessionv1.Event_Command{Command: &sessionv1.Command{
		CommandId: s.cmdID, Text: text, Via: via, StatementName: stmt, ParametersHash: params, Decision: gateway.Recorded(d), Cached: cached,
		Results: s.takeResults(),
	}}}
	return s.rec.Emit(ev)
}

func (s *session) notRecording() error {
	s.shutdown("the audit stream stopped accepting records", fatal(stateSystemError,
		"sluice: the audit stream is not accepting records; the session is closed and the statement did not run", ""))
	return errClosed
}

// unrecorded answers a wait for a record that failed: the audit stream
// failing closes the session and says so (notRecording); the session
// ending meanwhile (ctx) only ends the loop, and the session's end is
// recorded as usual.
func (s *session) unrecorded(err error) error {
	if errors.Is(err, recording.ErrNotRecording) {
		return s.notRecording()
	}
	return errClosed
}

// refuseEncoding refuses a statement whose text is not valid UTF-8 as
// PostgreSQL would (22021), and records the attempt with the bytes escaped.
// A Parse (name set by via "parse") fails under its statement name.
func (s *session) refuseEncoding(text, via, name string) error {
	escaped, _ := recording.Escape(text)
	d := s.w.k.Count(&policyv1.Decision{Action: "deny", Rule: ruleInvalidEncoding, Reason: "the statement is not valid UTF-8"})
	s.cmdID++
	if _, err := s.rec.Emit(&sessionv1.Event{Body: &sessionv1.Event_Command{Command: &sessionv1.Command{
		CommandId: s.cmdID, Text: escaped, TextEscaped: true, Via: via, StatementName: name, Decision: gateway.Recorded(d),
		Results: s.takeResults(),
	}}}); err != nil {
		return s.notRecording()
	}
	return s.refuseWith(&pgproto3.ErrorResponse{Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: stateCharacterNotInRepertoire,
		Message: "invalid byte sequence for encoding \"UTF8\": " + invalidSequence(text)}, via, name)
}

// invalidSequence names the first invalid UTF-8 sequence in s the way
// PostgreSQL does: the bytes of the character it starts ("0xc3 0x28").
func invalidSequence(s string) string {
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r != utf8.RuneError || n > 1 {
			i += n
			continue
		}
		l := 1
		switch c := s[i]; {
		case c&0xe0 == 0xc0:
			l = 2
		case c&0xf0 == 0xe0:
			l = 3
		case c&0xf8 == 0xf0:
			l = 4
		}
		parts := make([]string, 0, l)
		for j := i; j < len(s) && j < i+l; j++ {
			parts = append(parts, fmt.Sprintf("0x%02x", s[j]))
		}
		return strings.Join(parts, " ")
	}
	return ""
}

func (s *session) onQuery(ctx context.Context, text string, frame []byte) error {
	if !utf8.ValidString(text) {
		return s.refuseEncoding(text, "simple", "")
	}
	d, cached := s.decide(ctx, text)
	epoch := s.decidedAt
	n, refusal := namesOf(d)
	if refusal != "" {
		return s.refuseNames(d, text, "simple", "", refusal)
	}
	if err := s.rely(ctx, n.keys...); err != nil {
		return err
	}
	if name := s.unknownExecute(d); name != "" {
		return s.probeError(unknownStatementError(name))
	}
	d = s.refuseMaskedCopies(s.reviewExecutes(ctx, d))
	switch d.GetAction() {
	case "allow":
		s.noteCursors(d)
		seq, err := s.emitCommand(text, "simple", "", "", d, cached)
		if err != nil {
			return s.notRecording()
		}
		s.commands.Add(1)
		e := &expect{kind: expQuery, cmdID: s.cmdID, seq: seq, start: time.Now(), copyIn: copiesIn(d)}
		e.names = s.sqlChanges(d, text, epoch)
		s.copyIn = e.copyIn
		if err := s.attachPlan(e, d, text); err != nil {
			return err
		}
		if !readOnly(d) {
			if err := s.rec.WaitFor(ctx, seq); err != nil {
				return s.unrecorded(err)
			}
			e.durable = true
		}
		s.push(e)
		return s.forward(frame)
	case "review":
		return s.hold(ctx, d, text, "simple", frame, cached)
	default:
		return s.deny(d, text, "simple", cached)
	}
}

// deny records the denial and sends a statement that fails instead, so the
// server's answer keeps ordering and transaction state exact; the server
// goroutine turns its error into the denial.
func (s *session) deny(d *policyv1.Decision, text, via string, cached bool) error {
	if _, err := s.emitCommand(text, via, "", "", d, cached); err != nil {
		return s.notRecording()
	}
	return s.probeQuery(d)
}

// probeQuery sends the failing statement that stands in for a refused one.
func (s *session) probeQuery(d *policyv1.Decision) error {
	return s.probeError(denial(d, s.id))
}

// probeParse fails a Parse, under its statement name, or (name nil) an
// Execute or Bind, under a name of the worker's own: the failing Parse
// makes the server skip to the client's Sync, as the refused message would
// have, and the server goroutine turns its error into er.
func (s *session) probeParse(er *pgproto3.ErrorResponse, name *string) error {
	s.denied.Add(1)
	s.commands.Add(1)
	marker := s.nextMarker()
	as := marker
	if name != nil {
		as = *name
	}
	s.push(&expect{kind: expProbeParse, cmdID: s.cmdID, denial: er, marker: marker})
	return writeMsg(s.sw, &s.sout, &pgproto3.Parse{Name: as, Query: probeSQL(marker)})
}

// refuseWith refuses a Query (via "simple") or a Parse (via "parse", under
// its statement name) with er.
func (s *session) refuseWith(er *pgproto3.ErrorResponse, via, name string) error {
	if via == "parse" {
		return s.probeParse(er, &name)
	}
	return s.probeError(er)
}

// probeError is probeQuery with the error the client sees.
func (s *session) probeError(er *pgproto3.ErrorResponse) error {
	s.denied.Add(1)
	s.commands.Add(1)
	marker := s.nextMarker()
	s.push(&expect{kind: expProbeQuery, cmdID: s.cmdID, denial: er, marker: marker})
	return writeMsg(s.sw, &s.sout, &pgproto3.Query{String: probeSQL(marker)})
}

func (s *session) nextMarker() string {
	s.probes++
	return fmt.Sprintf("%s-%d", s.marker, s.probes)
}

// probeSQL fails at parse analysis with 42703, naming the marker, with no
// side effect.
func probeSQL(marker string) string {
	return `SELECT "` + marker + `"`
}

func (s *session) onParse(ctx context.Context, name, text string, types, frame []byte) error {
	if !utf8.ValidString(text) || !utf8.ValidString(name) {
		return s.refuseEncoding(text, "parse", name)
	}
	d, cached := s.decide(ctx, text)
	epoch := s.decidedAt
	n, _ := namesOf(d)
	switch {
	case n.prepare:
		return s.refuseNames(d, text, "parse", name, "send PREPARE with the simple query protocol")
	case copiesIn(d) != nil:
		return s.refuseNames(d, text, "parse", name, "send COPY FROM STDIN with the simple query protocol")
	}
	if err := s.rely(ctx, n.keys...); err != nil {
		return err
	}
	d = s.refuseMaskedCopies(s.reviewExecutes(ctx, d))
	switch d.GetAction() {
	case "allow", "review":
		// Parsing runs nothing: a held statement is held when it is
		// executed, with its parameters. The name is the statement's
		// unless the server refuses the Parse. What its SQL forgets
		// (DEALLOCATE, CLOSE) is forgotten now.
		s.sqlChanges(d, text, epoch)
		info := s.newInfo(text, d, cached, false, epoch)
		info.types = &paramTypes{}
		info.types.set(parseParamTypes(types))
		s.push(&expect{kind: expName, msg: 'P', describe: "S:" + name, names: s.changeNames(opMake, []string{"S:" + name}, setStatement(name, info))})
		return s.forward(frame)
	default:
		return s.denyParse(d, name, text, cached)
	}
}

// refuseNames refuses a statement whose effect on the session's names the
// worker could not follow (0A000), and records it.
func (s *session) refuseNames(d *policyv1.Decision, text, via, name, why string) error {
	c := proto.Clone(d).(*policyv1.Decision)
	c.Action, c.Rule, c.Reason = "deny", ruleUnfollowableNames, why
	if _, err := s.emitCommand(text, via, name, "", c, false); err != nil {
		return s.notRecording()
	}
	return s.refuseWith(&pgproto3.ErrorResponse{Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: stateFeatureNotSupported, Message: "sluice: " + why}, via, name)
}

// denyParse replaces a denied Parse with one that fails, under the same
// statement name.
func (s *session) denyParse(d *policyv1.Decision, name, text string, cached bool) error {
	// The failing Parse changes no name on the server (but the unnamed
	// statement, dropped first; the worker then still names one the server
	// has not, which only fails).
	if _, err := s.emitCommand(text, "parse", name, "", d, cached); err != nil {
		return s.notRecording()
	}
	return s.probeParse(denial(d, s.id), &name)
}

func (s *session) onExecute(ctx context.Context, portal string, frame []byte) error {
	p := s.portals[portal]
	if p == nil || p.info == nil {
		// No Bind made it: a SQL cursor, or nothing.
		return s.unknownName(unknownPortal(portal))
	}
	info := p.info
	if !s.fresh(info) {
		// Ruled on again under the policy and grants in force now: a
		// revoked grant or a new rule reaches prepared statements too.
		d, cached := s.decide(ctx, info.text)
		epoch := s.decidedAt
		old := info
		info = s.newInfo(info.text, s.refuseMaskedCopies(s.reviewExecutes(ctx, d)), cached, info.sql, epoch)
		info.types = old.types
		p.info = info
		// The name's record is renewed only if it still stands for the
		// statement this portal was bound to (not one parsed again under
		// the same name since, with other parameter types).
		if s.stmts[p.stmt] == old {
			s.stmts[p.stmt] = info
		}
	}
	// A statement that runs a prepared one by name (EXECUTE foo) is ruled
	// on by what the name stands for now, at every execution.
	if n, _ := namesOf(info.decision); len(n.keys) > 0 {
		if err := s.rely(ctx, n.keys...); err != nil {
			return err
		}
		if name := s.unknownExecute(info.decision); name != "" {
			return s.unknownName(unknownStatement(name))
		}
		if d := s.reviewExecutes(ctx, info.decision); d != info.decision {
			info = &stmtInfo{text: info.text, decision: d, cached: info.cached, sql: info.sql, epoch: info.epoch, expires: info.expires, types: info.types}
		}
	}
	if a := info.decision.GetAction(); a != "allow" && a != "review" {
		// Refused now (ruled on again, or the statement it runs by name
		// is): whatever it was when it was parsed, it does not run.
		if _, err := s.emitCommand(info.text, "execute", p.stmt, p.paramsHash, info.decision, info.cached); err != nil {
			return s.notRecording()
		}
		return s.probeParse(denial(info.decision, s.id), nil)
	}
	if info.decision.GetAction() == "review" {
		return s.holdExecute(ctx, info, portal, p, frame)
	}
	seq, err := s.emitCommand(info.text, "execute", p.stmt, p.paramsHash, info.decision, true)
	if err != nil {
		return s.notRecording()
	}
	s.noteCursors(info.decision)
	s.commands.Add(1)
	e := &expect{kind: expExecute, cmdID: s.cmdID, seq: seq, start: time.Now(), describe: "P:" + portal, stmtKey: "S:" + p.stmt, formats: p.formats}
	if err := s.attachPlan(e, info.decision, info.text); err != nil {
		return err
	}
	if e.plan != nil && info.sql {
		// A statement SQL PREPARE made, bound by name.
		e.lin = s.preparedLineage(p.stmt, 1)
	}
	if err := s.describeFor(e, portal, p); err != nil {
		return err
	}
	if !readOnly(info.decision) {
		if err := s.rec.WaitFor(ctx, seq); err != nil {
			return s.unrecorded(err)
		}
		e.durable = true
	}
	s.push(e)
	return s.forward(frame)
}

// describeFor makes sure the worker knows the columns of what a masked
// Execute returns. Drivers that cache descriptions (JDBC, psycopg 3,
// Npgsql) execute a prepared statement without describing it again in
// this session: the worker then asks the server itself, with a Describe of
// the portal just before the Execute, and keeps the answer to itself.
func (s *session) describeFor(e *expect, portal string, p *portalInfo) error {
	if e.plan == nil || s.described["P:"+portal] || s.described["S:"+p.stmt] {
		return nil
	}
	s.described["P:"+portal] = true
	s.push(&expect{kind: expDescribe, describe: "P:" + portal, plan: e.plan, formats: p.formats, internal: true})
	return writeMsg(s.sw, &s.sout, &pgproto3.Describe{ObjectType: 'P', Name: portal})
}

// writeClient writes messages to the client under the client-write lock.
func (s *session) writeClient(msgs ...encoder) error {
	s.cwMu.Lock()
	defer s.cwMu.Unlock()
	for _, m := range msgs {
		if err := writeMsg(s.cw, &s.out, m); err != nil {
			return err
		}
	}
	return s.cw.Flush()
}

// executedByName yields what each statement of d that runs a prepared one
// by name (EXECUTE foo) runs: the name, and the session's record of it.
func (s *session) executedByName(d *policyv1.Decision) iter.Seq2[string, *stmtInfo] {
	return func(yield func(string, *stmtInfo) bool) {
		for _, st := range d.GetStatements() {
			if !slices.Contains(st.GetFlags(), "execute") {
				continue
			}
			if prep := s.stmts[st.GetPreparedName()]; prep != nil && !yield(st.GetPreparedName(), prep) {
				return
			}
		}
	}
}

// reviewExecutes holds an EXECUTE whose PREPARE needed approval: an
// approval covers one execution, not every later one.
func (s *session) reviewExecutes(ctx context.Context, d *policyv1.Decision) *policyv1.Decision {
	if d.GetAction() != "allow" {
		return d
	}
	for name, prep := range s.executedByName(d) {
		if !s.fresh(prep) {
			// The PREPARE is ruled on again under the policy and grants
			// in force now.
			pd, cached := s.decide(ctx, prep.text)
			prep = s.newInfo(prep.text, pd, cached, prep.sql, s.decidedAt)
			s.stmts[name] = prep
		}
		if a := prep.decision.GetAction(); a != "allow" {
			c := proto.Clone(prep.decision).(*policyv1.Decision)
			c.Statements = d.GetStatements()
			return c
		}
	}
	return d
}

// attachPlan gives an expected result the masking that applies to it.
func (s *session) attachPlan(e *expect, d *policyv1.Decision, text string) error {
	plan, err := s.planFor(d)
	if err != nil {
		s.w.cfg.Log.Error().Err(err).Msg("mask rules cannot be compiled; closing the session")
		s.shutdown("masking unavailable", fatal(stateSystemError, "sluice: the masking rules cannot be applied; the session is closed", ""))
		return errClosed
	}
	if plan == nil {
		return nil
	}
	e.plan, e.text = plan, text
	e.lin = s.lineageOf(d)
	return nil
}

// lineageOf is where a decision's results come from: its statements' own
// lineage, or for EXECUTE and FETCH that of the statement prepared or the
// cursor declared earlier in the session (unknown if there is none).
func (s *session) lineageOf(d *policyv1.Decision) pgmask.Lineage {
	var lin pgmask.Lineage
	sts := d.GetStatements()
	for _, st := range sts {
		l := s.stmtLineage(st, 0)
		lin.Refs = append(lin.Refs, l.Refs...)
		lin.Inputs = append(lin.Inputs, l.Inputs...)
		if len(sts) == 1 {
			lin.Targets = l.Targets
		}
	}
	return lin
}

// stmtLineage is the lineage of one statement in the session: for EXECUTE
// and FETCH that of the statement prepared or the cursor declared.
func (s *session) stmtLineage(st *policyv1.Statement, depth int) pgmask.Lineage {
	switch {
	case depth > 2:
		return pgmask.UnknownLineage
	case slices.Contains(st.GetFlags(), "execute"):
		return s.preparedLineage(st.GetPreparedName(), depth+1)
	case st.GetCommand() == "FETCH":
		if _, ok := s.portals[st.GetCursor()]; ok {
			// A portal Bind made (portals and cursors share names).
			return pgmask.UnknownLineage
		}
		if l, ok := s.cursors[st.GetCursor()]; ok {
			return l
		}
		return pgmask.UnknownLineage
	}
	return pgmask.StatementLineage(st)
}

// preparedLineage is the lineage of the statement SQL PREPARE made under
// name.
func (s *session) preparedLineage(name string, depth int) pgmask.Lineage {
	prep := s.stmts[name]
	if prep == nil || !prep.sql {
		return pgmask.UnknownLineage
	}
	for _, ps := range prep.decision.GetStatements() {
		if slices.Contains(ps.GetFlags(), "prepare") && ps.GetPreparedName() == name {
			return s.stmtLineage(ps, depth)
		}
	}
	return pgmask.UnknownLineage
}

// noteCursors remembers the lineage of the cursors a decision declares, so
// that rows fetched later are masked like the query that made them.
func (s *session) noteCursors(d *policyv1.Decision) {
	for _, st := range d.GetStatements() {
		if st.GetCommand() == "DECLARE CURSOR" {
			l := s.stmtLineage(st, 0)
			if prev, ok := s.cursors[st.GetCursor()]; ok {
				l = prev.Union(l)
			}
			s.cursors[st.GetCursor()] = l
		}
		// CLOSE forgets nothing: it may fail, and the server keep the
		// cursor (its lineage costs no more than masking too much).
	}
}

// refuseMaskedCopies turns into a denial a statement that would copy
// masked values where masking cannot follow them: into a table or view
// (UPDATE t SET name = ssn, INSERT ... SELECT, CREATE TABLE AS), into a
// notification, or into a function whose effects are unknown.
// redefines reports whether st changes what a relation is, or who reads it
// how: ALTER (a rename, a new type, another schema, inheritance), rules,
// triggers, row security, privileges. Dropping, truncating, commenting and
// indexing change nothing masking relies on.
func redefines(st *policyv1.Statement) bool {
	cmd := st.GetCommand()
	switch {
	case st.GetKind() == "privilege", strings.HasPrefix(cmd, "ALTER "):
		return true
	}
	switch cmd {
	case "CREATE RULE", "CREATE TRIGGER", "CREATE POLICY", "SECURITY LABEL":
		return true
	}
	return false
}

func (s *session) refuseMaskedCopies(d *policyv1.Decision) *policyv1.Decision {
	if d.GetAction() == "deny" || len(d.GetMasks()) == 0 {
		return d
	}
	plan, err := s.planFor(d)
	if err != nil {
		// Without a plan, whether the statement copies masked values is
		// unknown: it does not run.
		s.w.cfg.Log.Warn().Err(err).Str("session", s.id).Msg("masking plan unavailable; statement refused")
		c := proto.Clone(d).(*policyv1.Decision)
		c.Action, c.Rule = "deny", ruleMaskingUnavailable
		c.Reason = "the masking rules cannot be applied right now: " + err.Error()
		return s.w.k.Count(c)
	}
	if plan == nil {
		return d
	}
	for _, st := range d.GetStatements() {
		if redefines(st) {
			if st.GetCommand() == "ALTER SCHEMA" {
				// A schema renamed under a masked table renames the table
				// for this transaction's statements.
				c := proto.Clone(d).(*policyv1.Decision)
				c.Action, c.Rule = "deny", ruleMaskedSchema
				c.Reason = "masking applies to you on this target: changing a schema is for someone who may see the masked values"
				return s.w.k.Count(c)
			}
			// The relation changed, or one an ALTER names (ATTACH
			// PARTITION customers, INHERIT customers). What a rule's or a
			// policy's expressions read is judged as a copy.
			rels := st.GetWrites()
			if strings.HasPrefix(st.GetCommand(), "ALTER ") {
				rels = append(append([]string{}, rels...), st.GetReads()...)
			}
			for _, w := range rels {
				if plan.Derives([]string{w + ".*"}) {
					// Renamed, retyped, moved, given a rule or a trigger:
					// the table's masking could be undone or copied out
					// by whom it applies to.
					c := proto.Clone(d).(*policyv1.Decision)
					c.Action, c.Rule = "deny", ruleMaskedSchema
					c.Reason = fmt.Sprintf("%s holds columns masked for you: changing its definition (renaming, retyping, moving it, rules, triggers, policies, grants) is for someone who may see them", w)
					return s.w.k.Count(c)
				}
			}
		}
		if plan.Derives(st.GetCopies()) {
			c := proto.Clone(d).(*policyv1.Decision)
			c.Action, c.Rule = "deny", ruleMaskedCopy
			c.Reason = "the statement copies masked values (into a table, a notification or a function whose effects are unknown), where masking could not follow them; ask someone who may see them to run it"
			return c
		}
	}
	return d
}

// resultFormats reads the result format codes at the end of a Bind body
// (after the portal and statement names).
func resultFormats(b []byte) ([]int16, error) {
	bad := errors.New("malformed Bind")
	if len(b) < 2 {
		return nil, bad
	}
	n := int(binary.BigEndian.Uint16(b))
	if len(b) < 2+2*n+2 {
		return nil, bad
	}
	b = b[2+2*n:]
	n = int(binary.BigEndian.Uint16(b))
	b = b[2:]
	for i := 0; i < n; i++ {
		if len(b) < 4 {
			return nil, bad
		}
		l := int(int32(binary.BigEndian.Uint32(b)))
		b = b[4:]
		if l > 0 {
			if l > len(b) {
				return nil, bad
			}
			b = b[l:]
		}
	}
	if len(b) < 2 {
		return nil, bad
	}
	n = int(binary.BigEndian.Uint16(b))
	b = b[2:]
	if len(b) < 2*n {
		return nil, bad
	}
	out := make([]int16, n)
	for i := range out {
		out[i] = int16(binary.BigEndian.Uint16(b[2*i:]))
	}
	return out, nil
}
