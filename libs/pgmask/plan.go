package pgmask

import (
	"encoding/binary"
	"errors"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5/pgproto3"

	"sluice.dev/sluice/libs/masking"
	policyv1 "sluice.dev/sluice/proto/sluice/policy/v1"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
)

// ErrUndecodable means masking applies to data that cannot be decoded (a
// malformed row, a binary COPY); it is refused, never passed through.
var ErrUndecodable = errors.New("masked data in a form Sluice cannot inspect")

// Plan is what masking means for one decision's mask rules on one target.
// It is built once per rule set (NewPlan) and never changes, so that it can
// be kept and shared while statements come and go.
type Plan struct {
	masker *masking.Masker
	action masking.Action
	whole  map[ColKey]string // lineage-masked columns and their labels
	// cols are every spelling of a masked column and of the view columns
	// that derive from one ("customers.ssn", "public.customers.ssn"); rels
	// the relations holding one ("customers", "public.customers").
	cols    map[string]bool
	rels    map[string]bool
	refuse  bool // derived values refuse the statement
	catalog *Catalog
}

// NewPlan builds the masking plan of a decision with mask rules (the caller
// has checked that d has some): m is the masker of its rules, cat the
// target's catalog (nil: only the names the rules spell are known). The
// first rule's action applies to whole values; one rule that refuses
// derived values makes the plan refuse them.
func NewPlan(m *masking.Masker, d *policyv1.Decision, cat *Catalog) *Plan {
	p := &Plan{masker: m, whole: map[ColKey]string{}, cols: map[string]bool{}, rels: map[string]bool{}, catalog: cat}
	if cat == nil {
		cat = &Catalog{}
	}
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
			for _, k := range cat.byName[c] {
				p.whole[k] = c
				for _, n := range cat.spellings[k] {
					addName(n)
				}
				for _, v := range cat.views[k] {
					p.whole[v.key] = c
					for _, n := range v.names {
						addName(n)
					}
				}
			}
		}
	}
	if len(p.cols) > 0 {
		// The statistics catalogs sample every table's values, masked
		// columns included; so do the views over them.
		for _, k := range cat.stats {
			p.whole[k] = "statistics"
			for _, n := range cat.spellings[k] {
				addName(n)
			}
			for _, v := range cat.views[k] {
				p.whole[v.key] = "statistics"
				for _, n := range v.names {
					addName(n)
				}
			}
		}
	}
	return p
}

// Refuse reports whether values derived from masked columns refuse the
// statement (a rule's derived: refuse) instead of being masked whole: a
// result with such a column (HasDerived) must not be sent at all.
func (p *Plan) Refuse() bool { return p.refuse }

// Catalog is the target catalog the plan was built on (nil if none).
func (p *Plan) Catalog() *Catalog { return p.catalog }

// UnknownSource is the lineage source of a value whose origin the
// classifier could not follow (policy.v1 Statement.targets).
const UnknownSource = "?"

// Derives reports whether a value with these lineage sources (see
// sqlclass: "rel.col", "rel.*", "?") may carry masked data: a masked
// column or a view column derived from one, any column of a relation that
// holds one, or an origin that cannot be followed.
func (p *Plan) Derives(sources []string) bool {
	for _, src := range sources {
		if src == UnknownSource {
			return true
		}
		src = strings.ToLower(src)
		if len(p.cols) > 0 && statistics(src) {
			return true
		}
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

// statisticsRelations hold samples of every table's values (most common
// values, histogram bounds): what they give derives from every column,
// masked ones included.
var statisticsRelations = []string{"pg_stats", "pg_stats_ext", "pg_stats_ext_exprs", "pg_statistic", "pg_statistic_ext_data"}

// statistics reports whether src ("rel.col", "schema.rel.col" or
// "rel.*") is a column of a statistics relation.
func statistics(src string) bool {
	rel := src
	if i := strings.LastIndexByte(rel, '.'); i >= 0 {
		rel = rel[:i]
	}
	rel = strings.TrimPrefix(rel, "pg_catalog.")
	return slices.Contains(statisticsRelations, rel)
}

// readsStatistics reports whether a result's values come from a statistics
// relation under a plan that masks anything.
func (p *Plan) readsStatistics(refs []string) bool {
	if len(p.cols) == 0 {
		return false
	}
	for _, r := range refs {
		if statistics(strings.ToLower(r)) {
			return true
		}
	}
	return false
}

// MasksColumn reports whether name ("table.col" or "schema.table.col", in
// any case) spells a masked column or a view column derived from one: a
// field masked whole where a statement names its columns (COPY).
func (p *Plan) MasksColumn(name string) bool { return p.cols[strings.ToLower(name)] }

// MasksRelation reports whether a relation ("table" or "schema.table", in
// any case) holds a masked column or a view column derived from one: where
// its layout is unknown, every field it gives must be masked.
func (p *Plan) MasksRelation(rel string) bool { return p.rels[strings.ToLower(rel)] }

// Lineage says, per result column, whether a computed column derives from
// masked data: per output expression when the statement's targets line up
// with the columns, else from every reference in the statement. Its
// sources are those of sqlclass ("rel.col", "rel.*", UnknownSource).
type Lineage struct {
	Refs    []string   // every source of every output value
	Targets [][]string // sources per output column, when they line up
	Inputs  []string   // every source the statement reads (errors)
}

// UnknownLineage is the lineage of results whose origin cannot be followed
// (a FETCH from a cursor the session did not see declared): everything in
// them counts as derived from masked data. It is shared: never modify it.
var UnknownLineage = Lineage{Refs: []string{UnknownSource}, Inputs: []string{UnknownSource}}

// Union is the lineage of values that come from l or m (a cursor declared
// twice). Neither l nor m is modified.
func (l Lineage) Union(m Lineage) Lineage {
	u := Lineage{Refs: append(slices.Clip(l.Refs), m.Refs...), Inputs: append(slices.Clip(l.Inputs), m.Inputs...)}
	if len(l.Targets) == len(m.Targets) && len(l.Targets) > 0 {
		u.Targets = make([][]string, len(l.Targets))
		for i := range l.Targets {
			u.Targets[i] = append(slices.Clip(l.Targets[i]), m.Targets[i]...)
		}
	}
	return u
}

// StatementLineage is the lineage of one classified statement by itself:
// what it reads and, per output column, where each comes from. Statements
// whose results come from elsewhere (EXECUTE of a prepared statement, FETCH
// from a cursor) need what the session knows of that; the caller looks it
// up.
//
// A statement that returns no rows of its own (a write without RETURNING,
// a schema change) returns rows only through a rule on its table (ON
// INSERT DO ALSO SELECT ...), whose reads the classification cannot see:
// such rows have unknown sources (its errors keep the statement's inputs).
func StatementLineage(st *policyv1.Statement) Lineage {
	if (st.GetKind() == "write" || st.GetKind() == "ddl") && len(st.GetTargets()) == 0 && len(st.GetSources()) == 0 {
		return Lineage{Refs: []string{UnknownSource}, Inputs: st.GetInputs()}
	}
	lin := Lineage{Refs: st.GetSources(), Inputs: st.GetInputs()}
	if ts := st.GetTargets(); len(ts) > 0 {
		for _, t := range ts {
			lin.Targets = append(lin.Targets, t.GetColumns())
		}
	}
	return lin
}

// derived reports whether column i of n may carry masked data.
func (l Lineage) derived(p *Plan, i, n int) bool {
	if len(l.Targets) == n {
		return p.Derives(l.Targets[i])
	}
	return p.Derives(l.Refs)
}

// colHow is how a result column is treated.
type colHow int

// Column treatments.
const (
	colScan    colHow = iota // scan with detectors (text)
	colPass                  // binary value of a fixed layout (a number, a date): lineage only
	colWhole                 // lineage-masked column
	colDerived               // computed from masked data
	// colScanBinary: a binary value of a type that may hold text (an
	// array, a record, xml): NULL where a detector finds something, since
	// a masked value would not fit its layout.
	colScanBinary
)

// fixedBinary types have a binary form with no text in it.
func fixedBinary(oid uint32) bool {
	switch oid {
	case 16, 20, 21, 23, 26, 28, 700, 701, 790, 1082, 1083, 1114, 1184, 1186, 1266, 1700, 2950, 3220, 5069:
		return true
	}
	return false
}

// Column is how one result column is masked (Plan.Columns).
type Column struct {
	how    colHow
	label  string
	typ    uint32
	format int16
}

// Label names what a column masked whole is counted as: the masked
// column's rule name ("customers.email"), or "derived:<name>" for a value
// computed from one; empty for a column that is not masked whole.
func (c Column) Label() string { return c.label }

// textish types carry text in both formats.
func textish(oid uint32) bool {
	switch oid {
	case 25, 1043, 1042, 19, 705, 2275, 114, 3802, 17:
		return true
	}
	return false
}

// Columns plans the masking of each column of a result from its
// RowDescription fields; formats override the described formats (Bind
// result formats: none, one for all, or one per column), and lin is the
// lineage of the statement that produced the result.
func (p *Plan) Columns(fields []pgproto3.FieldDescription, formats []int16, lin Lineage) []Column {
	out := make([]Column, len(fields))
	stats := p.readsStatistics(lin.Refs)
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
		c := Column{typ: f.DataTypeOID, format: format}
		switch label, ok := p.whole[ColKey{f.TableOID, int16(f.TableAttributeNumber)}]; {
		case ok:
			c.how, c.label = colWhole, label
		case (f.TableOID == 0 || f.TableAttributeNumber <= 0 || stats) && lin.derived(p, i, len(fields)):
			// A value computed by the statement, a whole row (attribute 0)
			// or a statistics sample: what it derives from decides.
			c.how, c.label = colDerived, "derived:"+string(f.Name)
		case format == 1 && fixedBinary(f.DataTypeOID):
			c.how = colPass
		case format == 1 && !textish(f.DataTypeOID):
			c.how = colScanBinary
		default:
			c.how = colScan
		}
		out[i] = c
	}
	return out
}

// HasDerived reports whether a result has a column computed from masked
// data: under a plan that refuses them (Refuse), the result must not be
// sent.
func HasDerived(cols []Column) bool {
	for _, c := range cols {
		if c.how == colDerived {
			return true
		}
	}
	return false
}

// Stats counts what was masked for one command, for its Masking event. The
// zero value is ready to use; a nil *Stats counts nothing.
type Stats struct {
	detectors masking.Counts
	columns   map[string]int64
}

// Column counts a value masked whole under label (Column.Label).
func (s *Stats) Column(label string) {
	if s == nil {
		return
	}
	if s.columns == nil {
		s.columns = map[string]int64{}
	}
	s.columns[label]++
}

// Detectors are the counts of what the detectors found, for a masker
// called directly.
func (s *Stats) Detectors() *masking.Counts {
	if s == nil {
		return nil
	}
	return &s.detectors
}

// Event is the Masking event of command cmdID with these counts, in a
// stable order; nil when nothing was masked.
func (s *Stats) Event(cmdID uint64) *sessionv1.Event {
	if s == nil {
		return nil
	}
	var counts []*sessionv1.MaskCount
	for label, n := range s.columns {
		counts = append(counts, &sessionv1.MaskCount{Column: label, Count: n})
	}
	s.detectors.Each(func(name string, n int64) {
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

// Contains reports whether the detectors find something to mask in v:
// MaskText appends v unchanged exactly when they do not, so a caller may
// keep the original.
func (p *Plan) Contains(v []byte) bool { return p.masker.Contains(v) }

// MaskText appends v, a text, to dst with what the detectors find in it
// masked, counting in st.
func (p *Plan) MaskText(dst, v []byte, st *Stats) []byte {
	return p.masker.AppendMasked(dst, v, st.Detectors())
}

// MaskWholeText appends the masked value that replaces v as a whole (the
// first rule's action) to dst, in text form whatever v's type: for a field
// of a COPY text or CSV row. The caller counts it (Stats.Column).
func (p *Plan) MaskWholeText(dst, v []byte) []byte {
	return p.masker.AppendWhole(dst, v, p.action)
}

// appendWhole replaces a whole value with a type-correct masked value; it
// reports false when the value must become NULL.
func (p *Plan) appendWhole(dst, v []byte, typ uint32, format int16) ([]byte, bool) {
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

// MaskValue masks one column value (text or binary as the column says),
// appending to dst; null reports that the value must be sent as NULL
// instead (a masked column of a type no masked value fits), and then
// nothing was appended. v is not NULL: a NULL carries nothing to mask. It
// counts in st like MaskRow.
func (p *Plan) MaskValue(dst, v []byte, col Column, st *Stats) (out []byte, null bool) {
	switch col.how {
	case colWhole, colDerived:
		var ok bool
		dst, ok = p.appendWhole(dst, v, col.typ, col.format)
		st.Column(col.label)
		return dst, !ok
	case colScan:
		return p.masker.AppendMasked(dst, v, st.Detectors()), false
	case colScanBinary:
		if p.masker.Contains(v) {
			p.masker.AppendMasked(nil, v, st.Detectors()) // counted, not sent
			return dst, true
		}
	}
	return append(dst, v...), false
}

// MaskRow masks a DataRow body (the message without its type and length)
// whose columns are cols. It returns the whole masked DataRow message,
// built in dst's storage (pass the previous result to reuse it), or nil when
// the original message can go out untouched; ErrUndecodable when the body
// is malformed or does not match cols.
func (p *Plan) MaskRow(dst, body []byte, cols []Column, st *Stats) ([]byte, error) {
	if len(body) < 2 {
		return nil, ErrUndecodable
	}
	n := int(binary.BigEndian.Uint16(body))
	if n != len(cols) {
		return nil, ErrUndecodable
	}
	// First pass: is the row well formed, and does anything change?
	dirty := false
	pos := 2
	for i := 0; i < n; i++ {
		if pos+4 > len(body) {
			return nil, ErrUndecodable
		}
		l := int(int32(binary.BigEndian.Uint32(body[pos:])))
		pos += 4
		if l < 0 {
			continue
		}
		if pos+l > len(body) {
			return nil, ErrUndecodable
		}
		switch cols[i].how {
		case colWhole, colDerived:
			dirty = true
		case colScan, colScanBinary:
			if !dirty && p.masker.Contains(body[pos:pos+l]) {
				dirty = true
			}
		}
		pos += l
	}
	if pos != len(body) {
		return nil, ErrUndecodable
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
		var null bool
		dst, null = p.MaskValue(dst, v, cols[i], st)
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

// MaskFields masks the texts of an ErrorResponse or NoticeResponse (or any
// texts: nil and empty ones are skipped) in place; it reports whether
// anything changed.
func (p *Plan) MaskFields(fields []*string, st *Stats) bool {
	changed := false
	for _, f := range fields {
		if f == nil || *f == "" || !p.masker.Contains([]byte(*f)) {
			continue
		}
		*f = string(p.masker.AppendMasked(nil, []byte(*f), st.Detectors()))
		changed = true
	}
	return changed
}

// WithholdValues redacts an error or notice of a statement that reads
// masked data: its text may echo a value computed from it (a failed cast
// of translate(ssn, ...) shows the transformed SSN). Quoted parts of the
// message are masked; detail, hint, context and internal query are
// withheld; when the statement calls code whose reads are unknown (a
// function's RAISE NOTICE '%', ssn), the message is withheld too. The
// SQLSTATE stays. It reports whether anything changed.
func (p *Plan) WithholdValues(inputs []string, message *string, others ...*string) bool {
	if !p.Derives(inputs) {
		return false
	}
	changed := false
	for _, f := range others {
		if *f != "" {
			*f, changed = "(withheld by sluice: the statement reads masked data)", true
		}
	}
	if slices.Contains(inputs, UnknownSource) {
		if *message != "" {
			*message, changed = "sluice: the message was withheld: the statement reads masked data or calls code that may", true
		}
		return changed
	}
	if m := MaskQuoted(*message); m != *message {
		*message, changed = m, true
	}
	return changed
}

// MaskQuoted replaces what is between double or single quotes.
func MaskQuoted(s string) string {
	var b strings.Builder
	var quote rune
	for _, r := range s {
		switch {
		case quote != 0 && r == quote:
			quote = 0
			b.WriteString("****")
			b.WriteRune(r)
		case quote != 0:
		case r == '"' || r == '\'':
			quote = r
			b.WriteRune(r)
		default:
			b.WriteRune(r)
		}
	}
	if quote != 0 {
		b.WriteString("****")
	}
	return b.String()
}
