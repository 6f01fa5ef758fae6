package pgworker

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/jackc/pgx/v5/pgproto3"

	policyv1 "sluice.dev/sluice/proto/sluice/policy/v1"
)

// Prepared statements and portals are known by name, and the worker rules
// on an Execute by what it knows a name to stand for. The server's names
// change only when the server says so: a Parse, Bind, Close, PREPARE,
// DEALLOCATE or DISCARD that fails (the name is taken, the transaction is
// aborted, an earlier message failed and the server skips to the next
// Sync) changes nothing there. So the worker keeps the names the server
// confirmed, and the changes it sent since, in order (the server answers in
// order): what it acts on is the confirmed names with the pending changes
// applied, and a refused change is dropped and the rest replayed. Before it
// relies on a name with a pending change sent before the last Sync, it
// waits for the server's answer; within one pipeline it need not, since a
// failed change makes the server skip whatever relies on it. A name never
// stands for anything but what the server holds under it.

// nameOp is a change to the names that the server has not answered yet.
type nameOp struct {
	syncs uint64   // the Syncs and Queries sent before it
	keys  []string // "S:name", "P:name"; nil: every name
	apply func(stmts map[string]*stmtInfo, portals map[string]*portalInfo)
	done  chan struct{}
	ok    bool // set by the server goroutine before done is closed
}

// settle is called by the server goroutine with the server's answer.
func (o *nameOp) settle(ok bool) {
	select {
	case <-o.done:
	default:
		o.ok = ok
		close(o.done)
	}
}

func (o *nameOp) touches(key string) bool {
	return o.keys == nil || slices.Contains(o.keys, key)
}

// names are the session's statements and portals as the server confirmed
// them, and the changes sent since (client goroutine).
type names struct {
	stmts   map[string]*stmtInfo
	portals map[string]*portalInfo
	ops     []*nameOp
}

// changeNames applies op to the names the worker acts on and queues it
// until the server answers (the caller attaches it to the message's
// expect).
func (s *session) changeNames(keys []string, apply func(map[string]*stmtInfo, map[string]*portalInfo)) *nameOp {
	op := &nameOp{syncs: s.syncs, keys: keys, apply: apply, done: make(chan struct{})}
	apply(s.stmts, s.portals)
	s.names.ops = append(s.names.ops, op)
	return op
}

// settleNames takes in the answers the server has given, in order.
func (s *session) settleNames() {
	replay := false
	for len(s.names.ops) > 0 {
		op := s.names.ops[0]
		select {
		case <-op.done:
		default:
			goto rebuilt
		}
		if op.ok {
			op.apply(s.names.stmts, s.names.portals)
		} else {
			replay = true
		}
		s.names.ops[0] = nil
		s.names.ops = s.names.ops[1:]
	}
rebuilt:
	if replay {
		clear(s.stmts)
		maps.Copy(s.stmts, s.names.stmts)
		clear(s.portals)
		maps.Copy(s.portals, s.names.portals)
		for _, op := range s.names.ops {
			op.apply(s.stmts, s.portals)
		}
	}
}

// rely makes sure the names keys stand for what the server holds before
// the worker acts on them: it waits for the answers to changes of them
// sent before the last Sync.
func (s *session) rely(ctx context.Context, keys ...string) error {
	s.settleNames()
	var wait *nameOp
	for _, op := range s.names.ops {
		if op.syncs == s.syncs {
			break // this pipeline: a failed change makes the server skip the rest
		}
		for _, k := range keys {
			if op.touches(k) {
				wait = op
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

// sqlNames is what a statement's SQL relies on or changes among the names.
type sqlNames struct {
	keys    []string // prepared statements it names
	changes bool     // PREPARE, DEALLOCATE or DISCARD
}

// namesOf lists the names d's SQL relies on or changes, and refuses what
// the worker cannot follow (a change among other statements: which of them
// the server ran is not told apart).
func namesOf(d *policyv1.Decision) (sqlNames, string) {
	var n sqlNames
	for _, st := range d.GetStatements() {
		if name := st.GetPreparedName(); name != "" {
			n.keys = append(n.keys, "S:"+name)
		}
		if changesNames(st) {
			n.changes = true
		}
	}
	if n.changes && len(d.GetStatements()) > 1 {
		return n, "send PREPARE, DEALLOCATE and DISCARD as a statement of their own"
	}
	return n, ""
}

func changesNames(st *policyv1.Statement) bool {
	return st.GetCommand() == "DISCARD" || slices.Contains(st.GetFlags(), "prepare") || slices.Contains(st.GetFlags(), "deallocate")
}

// sqlChange is the change a lone PREPARE, DEALLOCATE or DISCARD makes to
// the names (its CommandComplete confirms it).
func (s *session) sqlChange(d *policyv1.Decision, text string) *nameOp {
	st := d.GetStatements()[0]
	name := st.GetPreparedName()
	switch {
	case slices.Contains(st.GetFlags(), "prepare"):
		return s.changeNames([]string{"S:" + name}, setStatement(name, &stmtInfo{text: text, decision: d, sql: true}))
	case slices.Contains(st.GetFlags(), "deallocate") && name != "":
		return s.changeNames([]string{"S:" + name}, setStatement(name, nil))
	default:
		// DEALLOCATE ALL and DISCARD ALL forget every statement (DISCARD
		// ALL every portal too); other DISCARDs leave names alone, and
		// forgetting them then costs no more than a refusal.
		discard := st.GetCommand() == "DISCARD"
		return s.changeNames(nil, func(stmts map[string]*stmtInfo, portals map[string]*portalInfo) {
			clear(stmts)
			if discard {
				clear(portals)
			}
		})
	}
}

// unknownPortal refuses an Execute of a portal no Bind in this session
// made (a SQL cursor is read with FETCH), as a failed Execute: the server
// skips to the next Sync.
func (s *session) unknownPortal(portal string) error {
	s.denied.Add(1)
	marker := s.nextMarker()
	er := &pgproto3.ErrorResponse{Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: stateInvalidCursorName,
		Message: fmt.Sprintf("portal %q does not exist", portal),
		Hint:    "sluice: Execute runs portals that Bind made in this session; read cursors with FETCH"}
	s.push(&expect{kind: expProbeParse, cmdID: s.cmdID, denial: er, marker: marker})
	return writeMsg(s.sw, &s.sout, &pgproto3.Parse{Name: marker, Query: probeSQL(marker)})
}
