package recording

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// Escape returns s with every byte that is not part of valid UTF-8 written
// as \xNN, and whether there was any. Protobuf strings carry UTF-8 only:
// text a client sends is recorded escaped rather than lost.
func Escape(s string) (string, bool) {
	if utf8.ValidString(s) {
		return s, false
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n <= 1 {
			fmt.Fprintf(&b, `\x%02x`, s[i])
			i++
			continue
		}
		b.WriteString(s[i : i+n])
		i += n
	}
	return b.String(), true
}

// escapeStrings escapes every string in m (and the messages it holds) that
// is not valid UTF-8, and reports whether it changed any.
func escapeStrings(m protoreflect.Message) bool {
	type fix struct {
		fd protoreflect.FieldDescriptor
		v  protoreflect.Value
	}
	var fixes []fix
	changed := false
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList():
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				switch fd.Kind() {
				case protoreflect.StringKind:
					if s, ok := Escape(l.Get(i).String()); ok {
						l.Set(i, protoreflect.ValueOfString(s))
						changed = true
					}
				case protoreflect.MessageKind, protoreflect.GroupKind:
					changed = escapeStrings(l.Get(i).Message()) || changed
				}
			}
		case fd.IsMap():
			mp := v.Map()
			type entry struct {
				old protoreflect.MapKey
				key protoreflect.MapKey
				val protoreflect.Value
			}
			var moved []entry
			mp.Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				key := k
				if fd.MapKey().Kind() == protoreflect.StringKind {
					if s, ok := Escape(k.String()); ok {
						key = protoreflect.ValueOfString(s).MapKey()
					}
				}
				val := mv
				switch fd.MapValue().Kind() {
				case protoreflect.StringKind:
					if s, ok := Escape(mv.String()); ok {
						val = protoreflect.ValueOfString(s)
					}
				case protoreflect.MessageKind, protoreflect.GroupKind:
					changed = escapeStrings(mv.Message()) || changed
				}
				if key.String() != k.String() || val.Interface() != mv.Interface() {
					moved = append(moved, entry{k, key, val})
				}
				return true
			})
			for _, e := range moved {
				mp.Clear(e.old)
				mp.Set(e.key, e.val)
				changed = true
			}
		case fd.Kind() == protoreflect.StringKind:
			if s, ok := Escape(v.String()); ok {
				fixes = append(fixes, fix{fd, protoreflect.ValueOfString(s)})
			}
		case fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.GroupKind:
			changed = escapeStrings(v.Message()) || changed
		}
		return true
	})
	for _, f := range fixes {
		m.Set(f.fd, f.v)
	}
	return changed || len(fixes) > 0
}
