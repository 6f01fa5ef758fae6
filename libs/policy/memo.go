package policy

import (
	"context"
	"errors"
	"sync"

	celast "github.com/google/cel-go/common/ast"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
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
// is not remembered at all), and the fields of a variable no rule selects
// when every rule only selects fields of it (the statement text unless a
// rule reads `sql.text`, the columns unless one reads `sql.columns`). A
// statement whose text is new but whose classification, as far as the
// rules look, was seen before is ruled on without running the rules.
//
// An evaluation cut short by ctx is not remembered: its denial says nothing
// about the input. The memo belongs to the set, so a new policy revision
// starts with an empty one.
//
// remembered says whether the answer came from the memo.
func (s *Set) Rule(ctx context.Context, in Input) (v Verdict, masks []*controlv1.MaskRule, remembered bool) {
	key, ok := s.key(in)
	if ok {
		if e, hit := s.memo.get(key); hit {
			return e.verdict, e.masks, true
		}
	}
	v, masks = s.Evaluate(ctx, in), s.Masks(ctx, in)
	if ok && ctx.Err() == nil {
		s.memo.put(key, memoEntry{verdict: v, masks: masks})
	}
	return v, masks, false
}

// Limits of the memo: entries and bytes of keys per generation (two are
// kept, so at most 8 MiB of keys in all), and the size of a key worth
// remembering.
const (
	memoEntries  = 4096
	memoKeyBytes = 4 << 20
	memoMaxKey   = 4096
)

// key encodes everything the rules may read of in, each part length
// prefixed; ok is false when the input is not to be remembered.
func (s *Set) key(in Input) (key string, ok bool) {
	if s.UsesNow {
		return "", false
	}
	b := make([]byte, 0, 512)
	b = protowire.AppendString(b, in.Protocol)
	for _, part := range [...]struct {
		name string
		m    proto.Message
	}{{VarPrincipal, in.Principal}, {VarTarget, in.Target}, {VarSQL, in.SQL}, {VarSSH, in.SSH}, {VarK8s, in.K8s}, {VarMCP, in.MCP}} {
		var err error
		if b, err = s.reads[part.name].appendTo(b, part.m); err != nil {
			return "", false
		}
	}
	if s.reads[VarGrants].any() {
		b = protowire.AppendVarint(b, uint64(len(in.Grants)))
		for _, g := range in.Grants {
			var err error
			if b, err = appendMessage(b, g); err != nil {
				return "", false
			}
		}
	}
	if len(b) > memoMaxKey {
		return "", false
	}
	return string(b), true
}

// memoVars are the variables whose reads Compile works out for the memo's
// key (protocol is always in it, now never: a set that reads the time is
// not remembered).
var memoVars = []string{VarPrincipal, VarTarget, VarSQL, VarSSH, VarK8s, VarMCP, VarGrants}

// varReads is what a set's rules may read of one variable: all of it (a rule
// uses it other than to select a field: compares it, passes it to a
// function, iterates it), some of its fields, or nothing.
type varReads struct {
	whole  bool
	fields map[string]bool
}

func (s *Set) readsOf(v string) *varReads {
	r := s.reads[v]
	if r == nil {
		r = &varReads{fields: map[string]bool{}}
		s.reads[v] = r
	}
	return r
}

// add records what expr may read of v. An identifier named v counts as v
// even where a comprehension's variable of that name shadows it: that only
// keeps more in the key.
func (r *varReads) add(expr celast.Expr, v string) {
	uses, operands := 0, 0
	celast.PostOrderVisit(expr, celast.NewExprVisitor(func(e celast.Expr) {
		switch e.Kind() {
		case celast.IdentKind:
			if isVar(e, v) {
				uses++
			}
		case celast.SelectKind:
			sel := e.AsSelect()
			if isVar(sel.Operand(), v) {
				operands++
				r.fields[sel.FieldName()] = true
			}
		}
	}))
	r.whole = r.whole || uses > operands
}

func (r *varReads) any() bool { return r != nil && (r.whole || len(r.fields) > 0) }

// appendTo appends what the rules may read of m, length prefixed: its
// deterministic encoding, or only the fields selected.
func (r *varReads) appendTo(b []byte, m proto.Message) ([]byte, error) {
	if !r.any() {
		return protowire.AppendVarint(b, 0), nil
	}
	if r.whole {
		return appendMessage(b, m)
	}
	enc, err := appendMessage(nil, m)
	if err != nil {
		return nil, err
	}
	kept, ok := keepFields(enc, m, r.fields)
	if !ok {
		return nil, errors.New("policy: an input does not decode")
	}
	return append(b, kept...), nil
}

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

// keepFields keeps, of the length-prefixed encoding enc of m, the top-level
// fields named in names, rewriting the prefix; ok is false when enc does not
// decode. A name m has no field of is a comprehension's variable, not m.
func keepFields(enc []byte, m proto.Message, names map[string]bool) (out []byte, ok bool) {
	n, l := protowire.ConsumeVarint(enc)
	if l < 0 || uint64(len(enc)-l) != n {
		return nil, false
	}
	if m == nil || !m.ProtoReflect().IsValid() {
		return enc, true
	}
	fields := m.ProtoReflect().Descriptor().Fields()
	body := enc[l:]
	kept := make([]byte, 0, len(body))
	for len(body) > 0 {
		num, typ, tl := protowire.ConsumeTag(body)
		if tl < 0 {
			return nil, false
		}
		vl := protowire.ConsumeFieldValue(num, typ, body[tl:])
		if vl < 0 {
			return nil, false
		}
		if fd := fields.ByNumber(num); fd == nil || names[string(fd.Name())] {
			// A field the descriptor does not know is kept: nothing
			// says no rule reads it.
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
// memoEntries or memoKeyBytes of keys, the older is dropped and the newer
// takes its place, so the inputs in use stay and memory stays bounded.
type memo struct {
	mu       sync.Mutex
	cur, old map[string]memoEntry
	curBytes int
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
	if m.cur == nil || len(m.cur) >= memoEntries || m.curBytes+len(key) > memoKeyBytes {
		m.old, m.cur, m.curBytes = m.cur, make(map[string]memoEntry, 64), 0
	}
	if _, dup := m.cur[key]; !dup {
		m.curBytes += len(key)
	}
	m.cur[key] = e
}
