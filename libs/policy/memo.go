package policy

import (
	"context"
	"sync"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
	policyv1 "sluice.dev/sluice/proto/sluice/policy/v1"
)

// Rule gives the verdict on in and the mask rules that apply to it, as
// Evaluate and Masks do, and remembers them for inputs the rules cannot
// tell apart.
//
// A rule is a pure function of the variables it reads: CEL and the
// extensions the environment loads have no other input. So two inputs equal
// in everything the set's rules may read get the same verdict and masks,
// the cost limit's denials included. What may differ between them is only
// what no rule reads: the time when no rule reads `now` (a set that reads it
// is not remembered at all) and the statement text when no rule reads
// `sql.text` (its classification stays in the key). A statement with a new
// text but a classification seen before (another column alias, another
// literal, another spelling) is ruled on without running the rules.
//
// An evaluation cut short by ctx is not remembered: its denial says nothing
// about the input. The memo belongs to the set, so a new policy revision
// starts with an empty one.
func (s *Set) Rule(ctx context.Context, in Input) (Verdict, []*controlv1.MaskRule) {
	key, ok := s.key(in)
	if ok {
		if e, hit := s.memo.get(key); hit {
			return e.verdict, e.masks
		}
	}
	v, masks := s.Evaluate(ctx, in), s.Masks(ctx, in)
	if ok && ctx.Err() == nil {
		s.memo.put(key, memoEntry{verdict: v, masks: masks})
	}
	return v, masks
}

// Limits of the memo: entries per generation (two are kept) and the size of
// a key worth remembering.
const (
	memoEntries = 4096
	memoMaxKey  = 4096
)

// key encodes everything the rules may read of in, each part length
// prefixed; ok is false when the input is not to be remembered.
func (s *Set) key(in Input) (key string, ok bool) {
	if s.UsesNow {
		return "", false
	}
	b := make([]byte, 0, 512)
	b = protowire.AppendString(b, in.Protocol)
	var err error
	for _, m := range []proto.Message{in.Principal, in.Target, in.SSH, in.K8s, in.MCP} {
		if b, err = appendMessage(b, m); err != nil {
			return "", false
		}
	}
	sql, err := appendMessage(nil, in.SQL)
	if err != nil {
		return "", false
	}
	if !s.UsesText {
		if sql, ok = withoutField(sql, sqlTextField); !ok {
			return "", false
		}
	}
	b = append(b, sql...)
	b = protowire.AppendVarint(b, uint64(len(in.Grants)))
	for _, g := range in.Grants {
		if b, err = appendMessage(b, g); err != nil {
			return "", false
		}
	}
	if len(b) > memoMaxKey {
		return "", false
	}
	return string(b), true
}

// sqlTextField is the field number of SQLInput.text.
var sqlTextField = (&policyv1.SQLInput{}).ProtoReflect().Descriptor().Fields().ByName("text").Number()

var deterministic = proto.MarshalOptions{Deterministic: true}

// appendMessage appends m's deterministic encoding, length prefixed; a nil
// message is an empty one (as the rules see it).
func appendMessage(b []byte, m proto.Message) ([]byte, error) {
	if m == nil || !m.ProtoReflect().IsValid() {
		return protowire.AppendVarint(b, 0), nil
	}
	b = protowire.AppendVarint(b, uint64(deterministic.Size(m)))
	return deterministic.MarshalAppend(b, m)
}

// withoutField drops the top-level field num from a length-prefixed
// encoded message, rewriting the prefix; ok is false when enc does not
// decode.
func withoutField(enc []byte, num protowire.Number) (out []byte, ok bool) {
	n, l := protowire.ConsumeVarint(enc)
	if l < 0 || uint64(len(enc)-l) != n {
		return nil, false
	}
	body := enc[l:]
	kept := make([]byte, 0, len(body))
	for len(body) > 0 {
		f, typ, tl := protowire.ConsumeTag(body)
		if tl < 0 {
			return nil, false
		}
		vl := protowire.ConsumeFieldValue(f, typ, body[tl:])
		if vl < 0 {
			return nil, false
		}
		if f != num {
			kept = append(kept, body[:tl+vl]...)
		}
		body = body[tl+vl:]
	}
	return protowire.AppendBytes(nil, kept), true
}

type memoEntry struct {
	verdict Verdict
	masks   []*controlv1.MaskRule
}

// memo remembers verdicts in two generations: when the newer holds
// memoEntries, the older is dropped and the newer takes its place, so the
// inputs in use stay and memory stays bounded.
type memo struct {
	mu       sync.Mutex
	cur, old map[string]memoEntry
	hits     uint64
}

func (m *memo) get(key string) (memoEntry, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.cur[key]
	if !ok {
		if e, ok = m.old[key]; ok {
			m.insert(key, e)
		}
	}
	if ok {
		m.hits++
	}
	return e, ok
}

func (m *memo) put(key string, e memoEntry) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.insert(key, e)
}

func (m *memo) insert(key string, e memoEntry) {
	if m.cur == nil || len(m.cur) >= memoEntries {
		m.old, m.cur = m.cur, make(map[string]memoEntry, 64)
	}
	m.cur[key] = e
}
