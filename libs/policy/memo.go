package policy

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"

	celast "github.com/google/cel-go/common/ast"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

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
func (s *Set) key(in Input) (key []byte, ok bool) {
	if s.UsesNow {
		return nil, false
	}
	b := make([]byte, 0, 512)
	b = protowire.AppendString(b, in.Protocol)
	for _, part := range [...]struct {
		name string
		m    proto.Message
	}{{VarPrincipal, in.Principal}, {VarTarget, in.Target}, {VarSQL, in.SQL}, {VarSSH, in.SSH}, {VarK8s, in.K8s}, {VarMCP, in.MCP}} {
		var err error
		if b, err = s.reads[part.name].appendTo(b, part.m); err != nil {
			return nil, false
		}
	}
	if s.reads[VarGrants].any() {
		b = protowire.AppendVarint(b, uint64(len(in.Grants)))
		for _, g := range in.Grants {
			var err error
			if b, err = appendMessage(b, g); err != nil {
				return nil, false
			}
		}
	}
	if len(b) > memoMaxKey {
		return nil, false
	}
	return b, true
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
	fds    atomic.Pointer[selectedFields]
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

// appendTo appends what the rules may read of m: its deterministic
// encoding, length prefixed, or only the fields selected (selectedKey). The
// fields not selected are never encoded, so a long statement text costs
// nothing here unless a rule reads it.
func (r *varReads) appendTo(b []byte, m proto.Message) ([]byte, error) {
	if !r.any() {
		return protowire.AppendVarint(b, 0), nil
	}
	if r.whole || m == nil || !m.ProtoReflect().IsValid() {
		return appendMessage(b, m)
	}
	return r.selectedKey(b, m.ProtoReflect())
}

// selectedKey appends an unambiguous encoding of the fields of m the rules
// select: how many of them m holds, then each one's number and value in
// order of number, then the bytes of the fields m's type does not know
// (nothing says no rule reads them). Every part says where it ends, so the
// parts of a key cannot run into each other.
func (r *varReads) selectedKey(b []byte, m protoreflect.Message) ([]byte, error) {
	fds := r.selected(m.Descriptor())
	n := 0
	for _, fd := range fds {
		if m.Has(fd) {
			n++
		}
	}
	b = protowire.AppendVarint(b, uint64(n))
	for _, fd := range fds {
		if !m.Has(fd) {
			continue
		}
		b = protowire.AppendVarint(b, uint64(fd.Number()))
		var err error
		switch v := m.Get(fd); {
		case fd.IsList():
			l := v.List()
			b = protowire.AppendVarint(b, uint64(l.Len()))
			for i := 0; i < l.Len() && err == nil; i++ {
				b, err = appendValue(b, fd, l.Get(i))
			}
		case fd.IsMap():
			b, err = appendMap(b, fd, v.Map())
		default:
			b, err = appendValue(b, fd, v)
		}
		if err != nil {
			return nil, err
		}
	}
	return protowire.AppendBytes(b, m.GetUnknown()), nil
}

// appendMap appends a map's entries, each key and value, in the order of
// their keys' encodings, so that equal maps give equal bytes.
func appendMap(b []byte, fd protoreflect.FieldDescriptor, m protoreflect.Map) ([]byte, error) {
	type entry struct {
		key []byte
		val protoreflect.Value
	}
	entries := make([]entry, 0, m.Len())
	var err error
	m.Range(func(k protoreflect.MapKey, v protoreflect.Value) bool {
		var kb []byte
		kb, err = appendValue(nil, fd.MapKey(), k.Value())
		entries = append(entries, entry{kb, v})
		return err == nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(entries, func(a, b entry) int { return bytes.Compare(a.key, b.key) })
	b = protowire.AppendVarint(b, uint64(len(entries)))
	for _, e := range entries {
		b = append(b, e.key...)
		if b, err = appendValue(b, fd.MapValue(), e.val); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// appendValue appends one value of fd's kind; strings, bytes and messages
// are length prefixed, numbers are varints or fixed width.
func appendValue(b []byte, fd protoreflect.FieldDescriptor, v protoreflect.Value) ([]byte, error) {
	switch fd.Kind() {
	case protoreflect.StringKind:
		return protowire.AppendString(b, v.String()), nil
	case protoreflect.BytesKind:
		return protowire.AppendBytes(b, v.Bytes()), nil
	case protoreflect.BoolKind:
		if v.Bool() {
			return append(b, 1), nil
		}
		return append(b, 0), nil
	case protoreflect.EnumKind:
		return protowire.AppendVarint(b, uint64(v.Enum())), nil
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind,
		protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return protowire.AppendVarint(b, uint64(v.Int())), nil
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind, protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return protowire.AppendVarint(b, v.Uint()), nil
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		return protowire.AppendFixed64(b, math.Float64bits(v.Float())), nil
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return appendMessage(b, v.Message().Interface())
	}
	return nil, fmt.Errorf("policy: a field of kind %v cannot be keyed", fd.Kind())
}

// selected gives the fields of d the rules select, worked out once per
// message type (a variable has one). A selected name d has no field of is a
// comprehension's variable, not a field.
func (r *varReads) selected(d protoreflect.MessageDescriptor) []protoreflect.FieldDescriptor {
	if c := r.fds.Load(); c != nil && c.desc == d {
		return c.fields
	}
	c := &selectedFields{desc: d}
	for name := range r.fields {
		if fd := d.Fields().ByName(protoreflect.Name(name)); fd != nil {
			c.fields = append(c.fields, fd)
		}
	}
	r.fds.Store(c)
	return c.fields
}

type selectedFields struct {
	desc   protoreflect.MessageDescriptor
	fields []protoreflect.FieldDescriptor
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

func (m *memo) get(key []byte) (memoEntry, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.cur[string(key)] // looked up without copying the key
	if !ok {
		if e, ok = m.old[string(key)]; ok {
			m.insert(string(key), e)
		}
	}
	if ok {
		m.hits++
	}
	return e, ok
}

func (m *memo) put(key []byte, e memoEntry) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.insert(string(key), e)
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
