package auditchain

import (
	"bytes"
	"crypto/ed25519"
	"fmt"
	"sort"
	"time"

	"google.golang.org/protobuf/proto"

	auditv1 "sluice.dev/sluice/proto/sluice/audit/v1"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
)

// Problem kinds.
const (
	Edited      = "edited"
	Missing     = "missing"
	Duplicated  = "duplicated"
	Reordered   = "reordered"
	Unlinked    = "unlinked"
	Truncated   = "truncated"
	Lost        = "lost"
	BadCheckpt  = "bad_checkpoint"
	Unreadable  = "unreadable"
	Unsupported = "unsupported"
	// HistoryLost: records before some point were deleted or the stream
	// replaced (a checkpoint chains to one the stream does not hold, the
	// recorder said so, or the anchored checkpoint is gone).
	HistoryLost = "history_lost"
)

// Problem is one finding, naming the record.
type Problem struct {
	Session string `json:"session"`
	Seq     uint64 `json:"seq,omitempty"`
	// LastSeq is set when the record holds several events (Seq..LastSeq).
	LastSeq uint64 `json:"last_seq,omitempty"`
	// StreamSeq locates the record in the AUDIT stream (0 if unknown).
	StreamSeq uint64 `json:"stream_seq,omitempty"`
	Kind      string `json:"kind"`
	Detail    string `json:"detail"`
}

func (p Problem) String() string {
	loc := p.Session
	if p.Seq > 0 {
		loc = fmt.Sprintf("%s seq %d", p.Session, p.Seq)
		if p.LastSeq > p.Seq {
			loc += fmt.Sprintf("..%d", p.LastSeq)
		}
	}
	if p.StreamSeq > 0 {
		loc += fmt.Sprintf(" (stream seq %d)", p.StreamSeq)
	}
	return fmt.Sprintf("%s: %s: %s", loc, p.Kind, p.Detail)
}

// Stored is a record as read from the stream.
type Stored struct {
	Record    *auditv1.Record
	StreamSeq uint64
}

// Verifier accumulates records and checkpoints, then reports.
type Verifier struct {
	// Keys are the trusted checkpoint keys; without keys checkpoints are
	// not checked for signatures.
	Keys map[string]ed25519.PublicKey
	// Anchors are checkpoints known from outside the stream (one per
	// recorder, say): each must be in the stream. The keys they pin are
	// then the only keys trusted: a key someone added to the key bucket
	// signs nothing that counts.
	Anchors  []*Anchor
	sessions map[string]*chain
	order    []string
	checkpts []*auditv1.Checkpoint
	indexed  []indexed
	problems []Problem
	gaps     []missing
	// Records counts the records seen; Events the events they hold.
	Records, Events int
}

type chain struct {
	lastSeq  uint64
	lastHash []byte
	hashes   map[uint64][]byte
	ids      map[uint64]string
	// late holds seqs that arrived after a later record (reordered), so
	// that they are not also reported missing.
	late map[uint64]bool
	// closed: a lost record ended the chain.
	closed bool
}

// indexed is a session the sessions index lists.
type indexed struct {
	session string
	started time.Time
	lastSeq uint64
}

// AddIndexed notes a session the sessions index lists (started at
// started; lastSeq, if the session ended, is the seq of its last event):
// its records must be in the stream, up to lastSeq.
func (v *Verifier) AddIndexed(session string, started time.Time, lastSeq uint64) {
	v.indexed = append(v.indexed, indexed{session, started, lastSeq})
}

// missing is a gap seen while reading, checked again at the end.
type missing struct {
	session  string
	from, to uint64
	p        Problem
}

// NewVerifier returns an empty verifier.
func NewVerifier(keys map[string]ed25519.PublicKey) *Verifier {
	return &Verifier{Keys: keys, sessions: map[string]*chain{}}
}

func (v *Verifier) report(p Problem) { v.problems = append(v.problems, p) }

// Add checks the next record of its session, in stream order.
func (v *Verifier) Add(s Stored) {
	r := s.Record
	v.Records++
	v.Events += len(r.GetEvents())
	c, ok := v.sessions[r.GetSessionId()]
	if !ok {
		c = &chain{hashes: map[uint64][]byte{}, ids: map[uint64]string{}, late: map[uint64]bool{}}
		v.sessions[r.GetSessionId()] = c
		v.order = append(v.order, r.GetSessionId())
	}
	p := Problem{Session: r.GetSessionId(), Seq: r.GetSeq(), StreamSeq: s.StreamSeq}
	if r.GetGapTo() == 0 && Last(r) > r.GetSeq() {
		p.LastSeq = Last(r)
	}
	// Content first: is the record what was hashed?
	if !Sealed(r) {
		p.Kind, p.Detail = Edited, "the record's content does not match its hash"
		v.report(p)
	} else if r.GetLost() != "" {
		if len(r.GetEvents()) > 0 || len(r.GetEventIds()) > 0 || r.GetGapTo() > 0 {
			p.Kind, p.Detail = Edited, "a lost record holds events"
			v.report(p)
		}
	} else if r.GetGapTo() == 0 {
		if d := checkEvents(r); d != "" {
			p.Kind, p.Detail = Edited, d
			if d == undecodable {
				p.Kind = Unreadable
			}
			v.report(p)
		}
	} else {
		p.Kind = Lost
		p.Detail = fmt.Sprintf("events %d..%d never reached the recorder (recorded as a gap)", r.GetSeq(), r.GetGapTo())
		v.report(p)
	}
	last := Last(r)
	first := ""
	if ids := r.GetEventIds(); len(ids) > 0 {
		first = ids[0]
	}
	switch {
	case r.GetSeq() == c.lastSeq+1 && c.closed:
		p.Kind, p.Detail = Unlinked, fmt.Sprintf("record %d follows the session's lost record, which closed its chain", r.GetSeq())
		v.report(p)
	case r.GetSeq() == c.lastSeq+1:
		if c.lastSeq == 0 && !bytes.Equal(r.GetPrevHash(), ZeroHash) {
			p.Kind, p.Detail = Unlinked, "the first record of the session does not start the chain"
			v.report(p)
		} else if c.lastSeq > 0 && !bytes.Equal(r.GetPrevHash(), c.lastHash) {
			p.Kind, p.Detail = Unlinked, fmt.Sprintf("prev_hash does not match record %d (a record before it was edited or replaced)", c.lastSeq)
			v.report(p)
		}
	case r.GetSeq() <= c.lastSeq:
		if id, ok := c.ids[r.GetSeq()]; ok && id == first {
			p.Kind, p.Detail = Duplicated, fmt.Sprintf("record %d appears again", r.GetSeq())
		} else {
			p.Kind, p.Detail = Reordered, fmt.Sprintf("record %d comes after record %d", r.GetSeq(), c.lastSeq)
			for _, q := range covered(r, last) {
				c.late[q] = true
			}
		}
		v.report(p)
		return
	default:
		p.Kind, p.Detail = Missing, fmt.Sprintf("records %d..%d are missing", c.lastSeq+1, r.GetSeq()-1)
		if c.lastSeq+1 == r.GetSeq()-1 {
			p.Detail = fmt.Sprintf("record %d is missing", c.lastSeq+1)
		}
		v.gaps = append(v.gaps, missing{session: r.GetSessionId(), from: c.lastSeq + 1, to: r.GetSeq() - 1, p: p})
	}
	for _, q := range covered(r, last) {
		c.hashes[q] = r.GetHash()
		c.ids[q] = first
	}
	c.lastSeq, c.lastHash = last, r.GetHash()
	c.closed = c.closed || r.GetLost() != ""
}

const undecodable = "an event cannot be decoded"

// covered lists the seqs a record stands for in the verifier's indexes:
// each of its events, or the two ends of a gap (a gap's range is not
// walked: a forged record could claim billions of lost events).
func covered(r *auditv1.Record, last uint64) []uint64 {
	if r.GetGapTo() > 0 {
		if last == r.GetSeq() {
			return []uint64{last}
		}
		return []uint64{r.GetSeq(), last}
	}
	out := make([]uint64, 0, max(len(r.GetEvents()), 1))
	for q := r.GetSeq(); q <= last; q++ {
		out = append(out, q)
	}
	return out
}

// checkEvents checks that a record's events are the session's consecutive
// events it claims to hold; it returns what is wrong, or "".
func checkEvents(r *auditv1.Record) string {
	events, ids := r.GetEvents(), r.GetEventIds()
	if len(events) == 0 {
		return "the record holds no event"
	}
	if len(ids) != len(events) {
		return "the record's event ids do not match its events"
	}
	for i, b := range events {
		var ev sessionv1.Event
		if proto.Unmarshal(b, &ev) != nil {
			return undecodable
		}
		if ev.GetSessionId() != r.GetSessionId() || ev.GetSeq() != r.GetSeq()+uint64(i) || ev.GetId() != ids[i] {
			return "the event's session, seq or id differs from the record's"
		}
	}
	return ""
}

// AddCheckpoint records a checkpoint to compare heads with at the end.
func (v *Verifier) AddCheckpoint(c *auditv1.Checkpoint) {
	v.checkpts = append(v.checkpts, c)
}

// Problems finishes verification. only, if set, restricts checkpoint
// checks to one session.
func (v *Verifier) Problems(only string) []Problem {
	for _, g := range v.gaps {
		c := v.sessions[g.session]
		for q := g.from; q <= g.to; q++ {
			if !c.late[q] {
				v.report(g.p)
				break
			}
		}
	}
	v.gaps = nil
	v.checkAnchors()
	for _, ix := range v.indexed {
		c, ok := v.sessions[ix.session]
		switch {
		case !ok:
			v.report(Problem{Session: ix.session, Kind: HistoryLost, Detail: fmt.Sprintf(
				"the sessions index lists this session (started %s), but the audit stream holds none of its records", ix.started.UTC().Format(time.RFC3339))})
		case ix.lastSeq > c.lastSeq:
			v.report(Problem{Session: ix.session, Seq: ix.lastSeq, Kind: Truncated, Detail: fmt.Sprintf(
				"the sessions index says the session ended with event %d, but its chain ends at %d", ix.lastSeq, c.lastSeq)})
		}
	}
	var prevID string
	var prevHash []byte
	for i, cp := range v.checkpts {
		if l := cp.GetLostHistory(); l != nil {
			v.report(Problem{Session: "checkpoint " + cp.GetId(), Kind: HistoryLost, Detail: fmt.Sprintf(
				"the recorder found the audit history gone at %s: checkpoint %s (stream seq %d, anchored %s) was no longer in the stream; what was recorded before it was deleted or replaced",
				cp.GetTime().AsTime().UTC().Format(time.RFC3339), l.GetCheckpoint(), l.GetStreamSeq(), l.GetAnchoredAt().AsTime().UTC().Format(time.RFC3339))})
		} else if i == 0 && cp.GetPrevious() != "" {
			v.report(Problem{Session: "checkpoint " + cp.GetId(), Kind: HistoryLost, Detail: fmt.Sprintf(
				"the first checkpoint in the stream chains to checkpoint %s, which the stream does not hold: what came before was deleted", cp.GetPrevious())})
		}
		if v.Keys != nil {
			if err := VerifyCheckpoint(cp, v.Keys); err != nil {
				v.report(Problem{Session: "checkpoint " + cp.GetId(), Kind: BadCheckpt, Detail: err.Error()})
				continue
			}
		}
		if i > 0 && cp.GetLostHistory() == nil && (cp.GetPrevious() != prevID || !bytes.Equal(cp.GetPreviousHash(), prevHash)) {
			v.report(Problem{Session: "checkpoint " + cp.GetId(), Kind: BadCheckpt, Detail: "does not chain to the checkpoint before it (one was removed or reordered)"})
		}
		prevID, prevHash = cp.GetId(), CheckpointHash(cp)
		for _, h := range cp.GetHeads() {
			if only != "" && h.GetSessionId() != only {
				continue
			}
			c, ok := v.sessions[h.GetSessionId()]
			if !ok {
				v.report(Problem{Session: h.GetSessionId(), Seq: h.GetSeq(), Kind: Truncated, Detail: fmt.Sprintf("checkpoint %s signed this session up to record %d, but no record is present", cp.GetId(), h.GetSeq())})
				continue
			}
			if seq, ok := firstMismatch(c, h); ok {
				v.report(Problem{Session: h.GetSessionId(), Seq: seq, Kind: Edited, Detail: fmt.Sprintf("record %d differs from what checkpoint %s signed (rewritten history)", seq, cp.GetId())})
				continue
			}
			got, ok := c.hashes[h.GetSeq()]
			switch {
			case !ok && h.GetSeq() > c.lastSeq:
				v.report(Problem{Session: h.GetSessionId(), Seq: h.GetSeq(), Kind: Truncated, Detail: fmt.Sprintf("checkpoint %s signed record %d, but the chain ends at %d", cp.GetId(), h.GetSeq(), c.lastSeq)})
			case !ok:
				v.report(Problem{Session: h.GetSessionId(), Seq: h.GetSeq(), Kind: Missing, Detail: fmt.Sprintf("checkpoint %s signed record %d, which is absent", cp.GetId(), h.GetSeq())})
			case !bytes.Equal(got, h.GetHash()):
				v.report(Problem{Session: h.GetSessionId(), Seq: h.GetSeq(), Kind: Edited, Detail: fmt.Sprintf("the chain up to record %d differs from what checkpoint %s signed (rewritten history)", h.GetSeq(), cp.GetId())})
			}
		}
	}
	rank := make(map[string]int, len(v.order))
	for i, s := range v.order {
		rank[s] = i + 1
	}
	sort.SliceStable(v.problems, func(i, j int) bool {
		a, b := v.problems[i], v.problems[j]
		if rank[a.Session] != rank[b.Session] {
			return rank[a.Session] < rank[b.Session]
		}
		return a.Seq < b.Seq
	})
	return v.problems
}

// checkAnchors checks the stream against the anchored checkpoints: each
// must be there, unchanged; the keys they pin replace the trusted keys.
func (v *Verifier) checkAnchors() {
	pinned := map[string]ed25519.PublicKey{}
	for _, a := range v.Anchors {
		if pub := a.Key(); pub != nil {
			if have, ok := v.Keys[a.KeyID]; ok && !bytes.Equal(have, pub) {
				v.report(Problem{Session: "key " + a.KeyID, Kind: BadCheckpt, Detail: "the recorder key stored under this id differs from the anchored one (the key bucket was rewritten)"})
			}
			pinned[a.KeyID] = pub
		}
		v.checkAnchor(a)
	}
	if len(pinned) > 0 {
		v.Keys = pinned
	}
}

func (v *Verifier) checkAnchor(a *Anchor) {
	loc := "checkpoint " + a.Checkpoint
	for _, cp := range v.checkpts {
		if cp.GetId() != a.Checkpoint {
			continue
		}
		if !a.Matches(cp) {
			v.report(Problem{Session: loc, Kind: BadCheckpt, Detail: "differs from the anchored checkpoint of the same id (rewritten history)"})
		}
		return
	}
	v.report(Problem{Session: loc, Kind: HistoryLost, Detail: fmt.Sprintf(
		"the checkpoint anchored outside the stream (stream seq %d, %s, %d session(s)) is not in the audit stream: the stream was deleted, purged or replaced",
		a.StreamSeq, a.Time.Format(time.RFC3339), a.Sessions)})
}

// Sessions returns the ids of the sessions seen, in first-seen order.
func (v *Verifier) Sessions() []string { return v.order }

// firstMismatch finds the first signed record hash that the chain does not
// have (a record that is present but different).
func firstMismatch(c *chain, h *auditv1.ChainHead) (uint64, bool) {
	for _, r := range h.GetRecords() {
		if got, ok := c.hashes[r.GetSeq()]; ok && !bytes.Equal(got, r.GetHash()) {
			return r.GetSeq(), true
		}
	}
	return 0, false
}
