package config

import (
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// checkShape compares the document with File's fields before it is
// decoded, so that every unknown field, repeated key and value of the
// wrong type is reported at its own line and column. yaml.v3 stops at the
// first unknown field and gives wrong types only a line, in its message.
func checkShape(root *yaml.Node) Errors {
	if root.Kind != yaml.DocumentNode || len(root.Content) == 0 {
		return nil
	}
	var s shaper
	s.walk(root.Content[0], reflect.TypeOf(File{}), "")
	return s.errs
}

type shaper struct {
	errs  Errors
	depth int
	// visits bounds the walk: aliases can make a small document a huge
	// tree (decoding then refuses it for its aliasing).
	visits int
}

const maxVisits = 1 << 20

var (
	providersType = reflect.TypeOf(Providers{})
	secretType    = reflect.TypeOf(Secret{})
)

func (s *shaper) bad(n *yaml.Node, path, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if path != "" {
		msg = path + ": " + msg
	}
	s.errs = append(s.errs, Error{Line: n.Line, Column: n.Column, Message: msg})
}

func (s *shaper) walk(n *yaml.Node, t reflect.Type, path string) {
	if s.visits++; s.visits > maxVisits {
		return
	}
	// Aliases are followed a bounded number of times: a document may not
	// nest them without end.
	if n.Kind == yaml.AliasNode {
		if n.Alias == nil || s.depth > 16 {
			return
		}
		s.depth++
		defer func() { s.depth-- }()
		n = n.Alias
	}
	if isNull(n) {
		return
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t == providersType:
		s.providers(n, path)
		return
	case t == secretType && n.Kind != yaml.MappingNode:
		// Never echo the value: it may be the secret itself.
		s.bad(n, path, "give {env: NAME}, {file: PATH} or {sealed: ...} (inline secrets are not accepted; seal them with `sluice secret seal`)")
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			s.bad(n, path, "want a mapping (key: value lines), found %s", describe(n))
			return
		}
		fields, names := yamlFields(t)
		seen := map[string]*yaml.Node{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if prev, ok := seen[k.Value]; ok {
				s.bad(k, path, "%s is given twice (first on line %d)", k.Value, prev.Line)
				continue
			}
			seen[k.Value] = k
			f, ok := fields[k.Value]
			if !ok {
				s.bad(k, path, "%s", unknownField(k.Value, names))
				continue
			}
			s.walk(v, f.Type, join(path, k.Value))
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			s.bad(n, path, "want a list (lines starting with \"- \" or [a, b]), found %s", describe(n))
			return
		}
		for i, item := range n.Content {
			s.walk(item, t.Elem(), path+itemName(item, i))
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			s.bad(n, path, "want a mapping (key: value lines), found %s", describe(n))
			return
		}
		seen := map[string]*yaml.Node{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if prev, ok := seen[k.Value]; ok {
				s.bad(k, path, "%s is given twice (first on line %d)", k.Value, prev.Line)
				continue
			}
			seen[k.Value] = k
			s.walk(v, t.Elem(), join(path, k.Value))
		}
	default:
		if n.Kind != yaml.ScalarNode {
			s.bad(n, path, "want %s, found %s", scalarWant(t), describe(n))
			return
		}
		if err := n.Decode(reflect.New(t).Interface()); err != nil {
			s.bad(n, path, "want %s, found %s", scalarWant(t), describe(n))
		}
	}
}

// providers checks the oidc section: one provider or a list of them.
func (s *shaper) providers(n *yaml.Node, path string) {
	items := []*yaml.Node{n}
	if n.Kind == yaml.SequenceNode {
		items = n.Content
	}
	for i, item := range items {
		p := path
		if n.Kind == yaml.SequenceNode {
			p += itemName(item, i)
		}
		if item.Kind != yaml.MappingNode {
			s.bad(item, "", "oidc holds a provider (issuer, audience, ...) or a list of them")
			continue
		}
		s.walk(item, reflect.TypeOf(OIDC{}), p)
	}
}

// yamlFields maps the yaml names of t's fields to the fields, and lists the
// names in declaration order.
func yamlFields(t reflect.Type) (map[string]reflect.StructField, []string) {
	fields := map[string]reflect.StructField{}
	var names []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name := strings.Split(f.Tag.Get("yaml"), ",")[0]
		if name == "" || name == "-" || !f.IsExported() {
			continue
		}
		fields[name] = f
		names = append(names, name)
	}
	return fields, names
}

// unknownField names a field nobody declared, the closest known one if it
// looks like a typo, and the fields that are known.
func unknownField(name string, known []string) string {
	msg := fmt.Sprintf("unknown field %q", name)
	best, bestDist := "", 3
	for _, k := range known {
		if d := editDistance(name, k); d < bestDist {
			best, bestDist = k, d
		}
	}
	if best != "" {
		msg += fmt.Sprintf(" (did you mean %q?)", best)
	}
	return msg + "; known fields: " + strings.Join(known, ", ")
}

// editDistance is the Levenshtein distance of two short names.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// itemName names a list item in a path: by its name field when it has one.
func itemName(item *yaml.Node, i int) string {
	if item.Kind == yaml.MappingNode {
		for j := 0; j+1 < len(item.Content); j += 2 {
			if item.Content[j].Value == "name" && item.Content[j+1].Kind == yaml.ScalarNode && item.Content[j+1].Value != "" {
				return "[" + item.Content[j+1].Value + "]"
			}
		}
	}
	return "[item " + strconv.Itoa(i+1) + "]"
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

var printable = regexp.MustCompile(`^[[:print:]]{0,40}$`)

// describe says what a node holds, for "want X, found Y".
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if printable.MatchString(n.Value) {
			return strconv.Quote(n.Value)
		}
		return "a long or multi-line text"
	}
	return "something else"
}

func scalarWant(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a text value"
	case reflect.Bool:
		return "true or false"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number, 0 or more"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "a whole number"
	}
	return "a " + t.String()
}
