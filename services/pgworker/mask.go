package pgworker

import (
	"encoding/binary"
	"errors"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5/pgproto3"

	"sluice.dev/sluice/libs/gateway"
	"sluice.dev/sluice/libs/masking"
	policyv1 "sluice.dev/sluice/proto/sluice/policy/v1"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
)

// errUndecodable means masking applies to data the worker cannot decode;
// it is refused, never passed through.
var errUndecodable = errors.New("masked data in a form Sluice cannot inspect")

// maskPlan is what masking means for one decision in one session.
type maskPlan struct {
	masker *masking.Masker
	action masking.Action
	whole  map[colKey]string // lineage-masked columns and their labels
	// cols are every spelling of a masked column and of the view columns
	// that derive from one ("customers.ssn", "public.customers.ssn"); rels
	// the relations holding one ("customers", "public.customers").
	cols    map[string]bool
	rels    map[string]bool
	refuse  bool // derived values refuse the statement
	catalog *catalog
}

// planFor returns the masking plan of a decision, nil when nothing is
// masked. Plans are cached per session by rule set.
func (s *session) planFor(d *policyv1.Decision) (*maskPlan, error) {
	if len(d.GetMasks()) == 0 {
		return nil, nil
	}
	// Cached decisions are shared and never change: remember the plan of
	// the last one, the common case of a statement run again and again.
	if d == s.lastDecision && s.lastDecisionPlan != nil {
		return s.lastDecisionPlan, nil
	}
	key := gateway.MaskRulesKey(d)
	if p, ok := s.plans[key]; ok {
		s.lastDecision, s.lastDecisionPlan = d, p
		return p, nil
	}
	m, err := s.w.k.Masker(key, d)
	if err != nil {
		return nil, err
	}
	p := &maskPlan{masker: m, whole: map[colKey]string{}, cols: map[string]bool{}, rels: map[string]bool{}, catalog: s.catalog}
	addName := func(name string) {
		p.cols[name] = true
		if i := strings.LastIndexByte(name, '.'); i > 0 {
			p.rels[name[:i]] = true
		}
	}
	for i, r := range d.GetMasks() {
		if i == 0 {
			p.action = masking.Action{Kind: r.GetAction(), Keep: int(r.GetKeep())}
		}
		if r.GetDerived() == "refuse" {
			p.refuse = true
		}
		for _, c := range r.GetColumns() {
			c = strings.ToLower(c)
			addName(c)
			for _, k := range s.catalog.byName[c] {
				p.whole[k] = c
				for _, n := range s.catalog.spellings[k] {
					addName(n)
				}
				for _, v := range s.catalog.views[k] {
					p.whole[v.key] = c
					for _, n := range v.names {
						addName(n)
					}
				}
			}
		}
	}
	s.plans[key] = p
	s.lastPlan.Store(p)
	s.lastDecision, s.lastDecisionPlan = d, p
	return p, nil
}

// unknownSource is the lineage source of a value whose origin the
// classifier could not follow (policy.v1 Statement.targets).
const unknownSource = "?"

// derives reports whether a value with these lineage sources (see
// sqlclass: "rel.col", "rel.*", "?") may carry masked data: a masked
// column or a view column derived from one, any column of a relation that
// holds one, or an origin that cannot be followed.
func (p *maskPlan) derives(sources []string) bool {
	for _, src := range sources {
		if src == unknownSource {
			return true
		}
		src = strings.ToLower(src)
		if rel, ok := strings.CutSuffix(src, ".*"); ok {
			if p.rels[rel] {
				return true
			}
			continue
		}
		if p.cols[src] {
			return true
		}
	}
	return false
}

// lineage says, per result column, whether a computed column derives from
// masked data: per output expression when the statement's targets line up
// with the columns, else from every reference in the statement.
type lineage struct {
	refs    []string   // every source of every output value
	targets [][]string // sources per output column, when they line up
	inputs  []string   // every source the statement reads (errors)
}

// union is the lineage of values that come from l or m.
func (l lineage) union(m lineage) lineage {
	u := lineage{refs: append(slices.Clip(l.refs), m.refs...), inputs: append(slices.Clip(l.inputs), m.inputs...)}
	if len(l.targets) == len(m.targets) && len(l.targets) > 0 {
		u.targets = make([][]string, len(l.targets))
		for i := range l.targets {
			u.targets[i] = append(slices.Clip(l.targets[i]), m.targets[i]...)
		}
	}
	return u
}

func (l lineage) derived(p *maskPlan, i, n int) bool {
	if len(l.targets) == n {
		return p.derives(l.targets[i])
	}
	return p.derives(l.refs)
}

// Column treatments.
const (
	colScan  = iota // scan with detectors (text)
	colPass         // binary non-text value: lineage only
	colWhole        // lineage-masked column
	colDerived
)

type colPlan struct {
	how    int
	label  string
	typ    uint32
	format int16
}

// textish types carry text in both formats.
func textish(oid uint32) bool {
	switch oid {
	case 25, 1043, 1042, 19, 705, 2275, 114, 3802, 17:
		return true
	}
	return false
}

// columns builds per-column treatment from a RowDescription; formats
// override the described formats (Bind result formats).
func (p *maskPlan) columns(fields []pgproto3.FieldDescription, formats []int16, lin lineage) []colPlan {
	out := make([]colPlan, len(fields))
	for i, f := range fields {
		format := f.Format
		switch len(formats) {
		case 0:
		case 1:
			format = formats[0]
		default:
			if i < len(formats) {
				format = formats[i]
			}
		}
		c := colPlan{typ: f.DataTypeOID, format: format}
		switch label, ok := p.whole[colKey{f.TableOID, int16(f.TableAttributeNumber)}]; {
		case ok:
			c.how, c.label = colWhole, label
		case f.TableOID == 0 && lin.derived(p, i, len(fields)):
			c.how, c.label = colDerived, "derived:"+string(f.Name)
		case format == 1 && !textish(f.DataTypeOID):
			c.how = colPass
		default:
			c.how = colScan
		}
		out[i] = c
	}
	return out
}

// maskStats counts what was masked for one command.
type maskStats struct {
	detectors masking.Counts
	columns   map[string]int64
}

func (m *maskStats) col(label string) {
	if m.columns == nil {
		m.columns = map[string]int64{}
	}
	m.columns[label]++
}

func (m *maskStats) event(cmdID uint64) *sessionv1.Event {
	var counts []*sessionv1.MaskCount
	for label, n := range m.columns {
		counts = append(counts, &sessionv1.MaskCount{Column: label, Count: n})
	}
	m.detectors.Each(func(name string, n int64) {
		if n > 0 {
			counts = append(counts, &sessionv1.MaskCount{Detector: name, Count: n})
		}
	})
	if len(counts) == 0 {
		return nil
	}
	slices.SortFunc(counts, func(a, b *sessionv1.MaskCount) int {
		return strings.Compare(a.GetColumn()+a.GetDetector(), b.GetColumn()+b.GetDetector())
	})
	return &sessionv1.Event{Body: &sessionv1.Event_Masking{Masking: &sessionv1.Masking{CommandId: cmdID, Counts: counts}}}
}

// appendWhole replaces a whole value with a type-correct masked value; it
// reports false when the value must become NULL.
func (p *maskPlan) appendWhole(dst, v []byte, typ uint32, format int16) ([]byte, bool) {
	switch {
	case typ == 114 || (typ == 3802 && format == 0):
		dst = append(dst, '"')
		dst = p.masker.AppendWhole(dst, v, p.action)
		return append(dst, '"'), true
	case typ == 3802: // binary jsonb: version byte, then JSON text
		dst = append(dst, 1, '"')
		dst = p.masker.AppendWhole(dst, v, p.action)
		return append(dst, '"'), true
	case typ == 17: // bytea: a masked value is no valid bytea literal
		return dst, false
	case textish(typ):
		return p.masker.AppendWhole(dst, v, p.action), true
	}
	return dst, false
}

// maskRow rewrites a DataRow body when needed. It returns the new frame or
// nil when the original frame can go out untouched.
func (p *maskPlan) maskRow(dst, body []byte, cols []colPlan, st *maskStats) ([]byte, error) {
	if len(body) < 2 {
		return nil, errUndecodable
	}
	n := int(binary.BigEndian.Uint16(body))
	if n != len(cols) {
		return nil, errUndecodable
	}
	// First pass: is the row well formed, and does anything change?
	dirty := false
	pos := 2
	for i := 0; i < n; i++ {
		if pos+4 > len(body) {
			return nil, errUndecodable
		}
		l := int(int32(binary.BigEndian.Uint32(body[pos:])))
		pos += 4
		if l < 0 {
			continue
		}
		if pos+l > len(body) {
			return nil, errUndecodable
		}
		switch cols[i].how {
		case colWhole, colDerived:
			dirty = true
		case colScan:
			if !dirty && p.masker.Contains(body[pos:pos+l]) {
				dirty = true
			}
		}
		pos += l
	}
	if pos != len(body) {
		return nil, errUndecodable
	}
	if !dirty {
		return nil, nil
	}
	dst = append(dst[:0], 'D', 0, 0, 0, 0)
	dst = binary.BigEndian.AppendUint16(dst, uint16(n))
	pos = 2
	for i := 0; i < n; i++ {
		l := int(int32(binary.BigEndian.Uint32(body[pos:])))
		pos += 4
		if l < 0 {
			dst = binary.BigEndian.AppendUint32(dst, 0xffffffff)
			continue
		}
		v := body[pos : pos+l]
		pos += l
		lenAt := len(dst)
		dst = append(dst, 0, 0, 0, 0)
		start := len(dst)
		null := false
		switch c := cols[i]; c.how {
		case colWhole, colDerived:
			var ok bool
			dst, ok = p.appendWhole(dst, v, c.typ, c.format)
			null = !ok
			st.col(c.label)
		case colScan:
			dst = p.masker.AppendMasked(dst, v, &st.detectors)
		default:
			dst = append(dst, v...)
		}
		if null {
			dst = dst[:lenAt]
			dst = binary.BigEndian.AppendUint32(dst, 0xffffffff)
			continue
		}
		binary.BigEndian.PutUint32(dst[lenAt:], uint32(len(dst)-start))
	}
	binary.BigEndian.PutUint32(dst[1:5], uint32(len(dst)-1))
	return dst, nil
}

// maskError masks the texts of an ErrorResponse or NoticeResponse; it
// reports whether anything changed.
func (p *maskPlan) maskFields(fields []*string, st *maskStats) bool {
	changed := false
	for _, f := range fields {
		if f == nil || *f == "" || !p.masker.Contains([]byte(*f)) {
			continue
		}
		*f = string(p.masker.AppendMasked(nil, []byte(*f), &st.detectors))
		changed = true
	}
	return changed
}
