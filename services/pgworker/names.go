package pgworker

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5/pgproto3"

	policyv1 "sluice.dev/sluice/proto/sluice/policy/v1"
)

// Prepared statements and portals are known by name, and the worker rules
// on an Execute by what it knows a name to stand for. The server's names
// change only when the server says so: a Parse, Bind or PREPARE that fails
// (the name is taken, the transaction is aborted, an earlier message failed
// and the server skips to the next Sync) makes nothing; a transaction's end
// destroys its portals. So the worker keeps the names the server
// confirmed, and the changes it sent since, in order (the server answers in
// order), and acts on the confirmed names with the pending changes applied:
//
//   - a name made (Parse, Bind, PREPARE) counts at once, and is undone if
//     the server refuses or skips the message;
//   - a name forgotten (Close, DEALLOCATE, DISCARD ALL) is forgotten at
//     once and for good: a name the worker does not know is refused, never
//     run, so forgetting too much only costs a refusal;
//   - the portals a Sync's transaction ends with are forgotten when the
//     server says the transaction ended.
//
// Before it relies on a name whose latest change was sent before the last
// Sync, the worker waits for the server's answer; within one pipeline it
// need not, since a failed change makes the server skip whatever relies on
// it. A name never stands for anything but what the server holds under it.

// Kinds of change.
const (
	opMake   = iota // undone unless confirmed
	opForget        // kept whatever the answer
	opEnd           // applied only when confirmed (a transaction ended)
)

// answer is what the server goroutine tells the client goroutine about a
// message once the server has answered it.
type answer struct {
	done chan struct{}
	ok   bool // set before done is closed
}

func newAnswer() answer { return answer{done: make(chan struct{})} }

// settle gives the answer, once.
func (a *answer) settle(ok bool) {
	select {
	case <-a.done:
	default:
		a.ok = ok
		close(a.done)
	}
}

// nameOp is a change to the names that the server has not answered yet
// (ok: it took effect).
type nameOp struct {
	answer
	kind  int
	syncs uint64   // the Syncs and Queries sent before it
	keys  []string // "S:name", "P:name", "S:*" (every statement), "P:*"
	apply func(stmts map[string]*stmtInfo, portals map[string]*portalInfo)
}

func (o *nameOp) touches(key string) bool {
	for _, k := range o.keys {
		if k == key || (strings.HasSuffix(k, ":*") && strings.HasPrefix(key, k[:2])) {
			return true
		}
	}
	return false
}

// names are the session's statements and portals as the server confirmed
// them, and the changes sent since (client goroutine).
type names struct {
	stmts   map[string]*stmtInfo
	portals map[string]*portalInfo
	ops     []*nameOp
}

// changeNames records a change (applying it to the names the worker acts
// on, unless it waits for the server) until the server answers; the
// caller attaches it to the message's expect.
func (s *session) changeNames(kind int, keys []string, apply func(map[string]*stmtInfo, map[string]*portalInfo)) *nameOp {
	op := &nameOp{answer: newAnswer(), kind: kind, syncs: s.syncs, keys: keys, apply: apply}
	if kind != opEnd {
		apply(s.stmts, s.portals)
	}
	s.names.ops = append(s.names.ops, op)
	return op
}

// settleNames takes in the answers the server has given, in order.
func (s *session) settleNames() {
	undone, ended := false, false
	for len(s.names.ops) > 0 {
		op := s.names.ops[0]
		select {
		case <-op.done:
		default:
			s.rebuildNames(undone, ended)
			return
		}
		switch {
		case op.ok || op.kind == opForget:
			op.apply(s.names.stmts, s.names.portals)
			ended = ended || op.kind == opEnd
		default:
			undone = undone || op.kind == opMake
		}
		s.names.ops[0] = nil
		s.names.ops = s.names.ops[1:]
	}
	s.rebuildNames(undone, ended)
}

// rebuildNames makes the names the worker acts on the confirmed ones with
// the pending changes applied: all of them after a change was undone, the
// portals after a transaction ended.
func (s *session) rebuildNames(undone, ended bool) {
	if !undone && !ended {
		return
	}
	if undone {
		clear(s.stmts)
		maps.Copy(s.stmts, s.names.stmts)
	}
	clear(s.portals)
	maps.Copy(s.portals, s.names.portals)
	for _, op := range s.names.ops {
		if op.kind != opEnd {
			op.apply(s.stmts, s.portals) // statements again: the same result
		}
	}
}

// rely makes sure the names keys stand for what the server holds before
// the worker acts on them: when the latest change of one was sent before
// the last Sync, it waits for the server's answer.
func (s *session) rely(ctx context.Context, keys ...string) error {
	s.settleNames()
	var wait *nameOp
	for _, k := range keys {
		for i := len(s.names.ops) - 1; i >= 0; i-- {
			if op := s.names.ops[i]; op.touches(k) {
				if op.syncs != s.syncs && (wait == nil || slices.Index(s.names.ops, wait) < i) {
					wait = op // this pipeline's own change needs no answer
				}
				break
			}
		}
	}
	if wait == nil {
		return nil
	}
	if err := s.sw.Flush(); err != nil {
		return errClosed
	}
	select {
	case <-wait.done:
	case <-ctx.Done():
		return errClosed
	}
	s.settleNames()
	return nil
}

// setStatement is a change that makes name stand for info (nil: nothing).
func setStatement(name string, info *stmtInfo) func(map[string]*stmtInfo, map[string]*portalInfo) {
	return func(stmts map[string]*stmtInfo, _ map[string]*portalInfo) {
		if info == nil {
			delete(stmts, name)
		} else {
			stmts[name] = info
		}
	}
}

// setPortal is a change that makes name stand for p (nil: nothing).
func setPortal(name string, p *portalInfo) func(map[string]*stmtInfo, map[string]*portalInfo) {
	return func(_ map[string]*stmtInfo, portals map[string]*portalInfo) {
		if p == nil {
			delete(portals, name)
		} else {
			portals[name] = p
		}
	}
}

// endTransaction is the change a Sync (or a Query) makes when the server
// says the transaction ended: its portals are gone.
func endTransaction(_ map[string]*stmtInfo, portals map[string]*portalInfo) {
	clear(portals)
}

// sqlNames is what a statement's SQL relies on or changes among the names.
type sqlNames struct {
	keys    []string // prepared statements and portals it names
	prepare bool     // a PREPARE (a name made)
}

// namesOf lists the names d's SQL relies on, and refuses what the worker
// cannot follow: a PREPARE among other statements (which of them the
// server ran is not told apart).
func namesOf(d *policyv1.Decision) (sqlNames, string) {
	var n sqlNames
	for _, st := range d.GetStatements() {
		if name := st.GetPreparedName(); name != "" {
			n.keys = append(n.keys, "S:"+name)
		}
		if c := st.GetCursor(); c != "" {
			n.keys = append(n.keys, "P:"+c)
		}
		if slices.Contains(st.GetFlags(), "prepare") {
			n.prepare = true
		}
	}
	if n.prepare && len(d.GetStatements()) > 1 {
		return n, "send PREPARE as a statement of its own"
	}
	return n, ""
}

// sqlChanges records what d's SQL does to the names: a lone PREPARE makes
// one (confirmed by its CommandComplete); DEALLOCATE, DISCARD ALL, CLOSE
// and DECLARE forget names at once (a cursor's name is no Bind's portal).
func (s *session) sqlChanges(d *policyv1.Decision, text string, epoch uint64) *nameOp {
	var made *nameOp
	for _, st := range d.GetStatements() {
		name, flags := st.GetPreparedName(), st.GetFlags()
		switch {
		case slices.Contains(flags, "prepare"):
			made = s.changeNames(opMake, []string{"S:" + name}, setStatement(name, s.newInfo(text, d, false, true, epoch)))
		case slices.Contains(flags, "deallocate") && name != "":
			s.forget(s.changeNames(opForget, []string{"S:" + name}, setStatement(name, nil)))
		case slices.Contains(flags, "deallocate") || (st.GetCommand() == "DISCARD" && discardsAll(text)):
			s.forget(s.changeNames(opForget, []string{"S:*", "P:*"}, func(stmts map[string]*stmtInfo, portals map[string]*portalInfo) {
				clear(stmts)
				clear(portals)
			}))
		case st.GetCommand() == "DECLARE CURSOR" || st.GetCommand() == "CLOSE CURSOR":
			c := st.GetCursor()
			if c == "" { // CLOSE ALL
				s.forget(s.changeNames(opForget, []string{"P:*"}, func(_ map[string]*stmtInfo, portals map[string]*portalInfo) { clear(portals) }))
			} else {
				s.forget(s.changeNames(opForget, []string{"P:" + c}, setPortal(c, nil)))
			}
		}
	}
	return made
}

// forget settles a change that holds whatever the server says.
func (s *session) forget(op *nameOp) { op.settle(true) }

// discardsAll reports whether a DISCARD statement is DISCARD ALL.
func discardsAll(text string) bool {
	f := strings.Fields(strings.ToUpper(strings.TrimRight(strings.TrimSpace(text), ";")))
	return len(f) >= 2 && f[0] == "DISCARD" && f[1] == "ALL"
}

// unknownName refuses an Execute of a portal no Bind in this session made
// (a SQL cursor is read with FETCH), or a Bind of a statement the worker
// does not know, as a failed message: the server skips to the next Sync.
func (s *session) unknownName(code, msg, hint string) error {
	return s.probeParse(&pgproto3.ErrorResponse{Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: code, Message: msg, Hint: hint}, nil)
}

func unknownPortal(portal string) (string, string, string) {
	return stateInvalidCursorName, fmt.Sprintf("portal %q does not exist", portal),
		"sluice: Execute runs portals that Bind made in this session; read cursors with FETCH"
}

func unknownStatement(name string) (string, string, string) {
	return stateInvalidStatementName, fmt.Sprintf("prepared statement %q does not exist", name), ""
}

func unknownStatementError(name string) *pgproto3.ErrorResponse {
	code, msg, hint := unknownStatement(name)
	return &pgproto3.ErrorResponse{Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: code, Message: msg, Hint: hint}
}

// unknownExecute names a prepared statement d runs with SQL EXECUTE that
// the worker does not know (so cannot rule on), or "".
func (s *session) unknownExecute(d *policyv1.Decision) string {
	for _, st := range d.GetStatements() {
		if slices.Contains(st.GetFlags(), "execute") && s.stmts[st.GetPreparedName()] == nil {
			return st.GetPreparedName()
		}
	}
	return ""
}

// copyState says whether a COPY FROM STDIN started (ok: the server sent
// CopyInResponse) or ended before it did.
type copyState struct{ answer }

// copiesIn returns a copyState if d copies from the client.
func copiesIn(d *policyv1.Decision) *copyState {
	for _, st := range d.GetStatements() {
		if st.GetCommand() == "COPY" && st.GetKind() == "write" {
			return &copyState{newAnswer()}
		}
	}
	return nil
}

// inCopy handles a client message while a COPY FROM STDIN may be in
// progress: copy data goes through; anything else waits for the COPY to
// have failed before it started (the server ignores Sync and Flush in
// copy mode, and takes anything else as an error: their answers would not
// line up), else ends the session. done says the message was handled.
func (s *session) inCopy(ctx context.Context, typ byte, frame []byte) (done bool, err error) {
	c := s.copyIn
	switch typ {
	case 'd':
		return true, s.forward(frame)
	case 'c', 'f':
		s.copyIn = nil
		return true, s.forward(frame)
	}
	if err := s.sw.Flush(); err != nil {
		return true, errClosed
	}
	select {
	case <-c.done:
	case <-ctx.Done():
		return true, errClosed
	}
	if c.ok {
		s.shutdown("protocol violation", fatal(stateProtocolViolation,
			"sluice: only CopyData, CopyDone and CopyFail may follow COPY FROM STDIN until it ends", ""))
		return true, errClosed
	}
	s.copyIn = nil
	return false, nil
}
