package pgmask

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"sluice.dev/sluice/libs/masking"
	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
	policyv1 "sluice.dev/sluice/proto/sluice/policy/v1"
)

func testMasker(t testing.TB) *masking.Masker {
	m, err := masking.New(masking.Config{TokenKey: make([]byte, 32)})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func testPlan(t testing.TB) *Plan {
	cat := &Catalog{byName: map[string][]ColKey{"customers.email": {{1, 2}}}, tables: map[string][]string{"customers": {"id", "email", "note"}}}
	return &Plan{masker: testMasker(t), whole: map[ColKey]string{{1, 2}: "customers.email"}, cols: map[string]bool{"customers.email": true},
		rels: map[string]bool{"customers": true}, catalog: cat}
}

// row encodes a DataRow body; a nil value is NULL.
func row(vals ...[]byte) []byte {
	b := binary.BigEndian.AppendUint16(nil, uint16(len(vals)))
	for _, v := range vals {
		if v == nil {
			b = binary.BigEndian.AppendUint32(b, 0xffffffff)
			continue
		}
		b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
		b = append(b, v...)
	}
	return b
}

// values decodes a DataRow message; NULL is nil.
func values(t *testing.T, msg []byte) [][]byte {
	t.Helper()
	require.Equal(t, byte('D'), msg[0])
	require.Equal(t, len(msg)-1, int(binary.BigEndian.Uint32(msg[1:5])), "frame length")
	n := int(binary.BigEndian.Uint16(msg[5:]))
	pos := 7
	var out [][]byte
	for range n {
		l := int(int32(binary.BigEndian.Uint32(msg[pos:])))
		pos += 4
		if l < 0 {
			out = append(out, nil)
			continue
		}
		out = append(out, msg[pos:pos+l])
		pos += l
	}
	require.Equal(t, len(msg), pos)
	return out
}

// FuzzMaskRow: any DataRow body is either refused or masked; a masked row
// never shows the email it carried.
func FuzzMaskRow(f *testing.F) {
	f.Add(row([]byte("1"), []byte("ada@example.com"), []byte("note ada@example.com")))
	f.Add(row([]byte("2"), nil, []byte("x")))
	f.Add([]byte{0, 3, 0xff})
	p := testPlan(f)
	cols := []Column{{how: colScan, typ: 23}, {how: colWhole, label: "customers.email", typ: 25}, {how: colScan, typ: 25}}
	f.Fuzz(func(t *testing.T, body []byte) {
		var st Stats
		out, err := p.MaskRow(nil, body, cols, &st)
		if err != nil || out == nil {
			return
		}
		if bytes.Contains(out, []byte("ada@example.com")) {
			t.Fatalf("masked row still holds the email: %q", out)
		}
		if int(binary.BigEndian.Uint32(out[1:5])) != len(out)-1 {
			t.Fatalf("bad frame length")
		}
	})
}

// testCatalog: customers (OID 10) in public, its email (attnum 2) masked,
// read by the view v (OID 20) through its column e (attnum 1).
func testCatalog() *Catalog {
	email := ColKey{Table: 10, Attnum: 2}
	return &Catalog{
		byName:    map[string][]ColKey{"customers.email": {email}, "public.customers.email": {email}},
		tables:    map[string][]string{"customers": {"id", "email"}, "public.customers": {"id", "email"}},
		spellings: map[ColKey][]string{email: {"customers.email", "public.customers.email"}},
		views:     map[ColKey][]viewCol{email: {{key: ColKey{Table: 20, Attnum: 1}, names: []string{"v.e", "public.v.e"}}}},
	}
}

func decision(rules ...*controlv1.MaskRule) *policyv1.Decision {
	return &policyv1.Decision{Action: "allow", Masks: rules}
}

func TestNewPlan(t *testing.T) {
	cat := testCatalog()
	p := NewPlan(testMasker(t), decision(
		&controlv1.MaskRule{Columns: []string{"Customers.Email"}, Action: "keep", Keep: 4},
		&controlv1.MaskRule{Columns: []string{"orders.card"}, Derived: "refuse"},
	), cat)
	assert.Equal(t, masking.Action{Kind: "keep", Keep: 4}, p.action, "the first rule's action")
	assert.True(t, p.Refuse(), "one rule refusing derived values is enough")
	assert.Same(t, cat, p.Catalog())
	assert.Equal(t, map[ColKey]string{{10, 2}: "customers.email", {20, 1}: "customers.email"}, p.whole,
		"the column and the view column that reads it are masked whole, under the rule's name")

	for src, want := range map[string]bool{
		"customers.email": true, "PUBLIC.CUSTOMERS.EMAIL": true, "v.e": true, "public.v.e": true,
		"orders.card": true, // not on the target, still a masked name
		"customers.*": true, "public.customers.*": true, "v.*": true, "orders.*": true,
		"customers.id": false, "other.*": false, "?": true, "": false,
	} {
		assert.Equal(t, want, p.Derives([]string{src}), "Derives(%q)", src)
	}
	assert.False(t, p.Derives(nil))
	assert.True(t, p.Derives([]string{"customers.id", "v.e"}), "any source is enough")
	assert.True(t, p.MasksColumn("Public.Customers.Email"))
	assert.True(t, p.MasksColumn("v.e"))
	assert.False(t, p.MasksColumn("customers.id"))
	assert.False(t, p.MasksColumn("customers.*"))
	assert.True(t, p.MasksRelation("customers"))
	assert.True(t, p.MasksRelation("PUBLIC.V"))
	assert.False(t, p.MasksRelation("other"))
	assert.Equal(t, []string{"id", "email"}, p.Catalog().Table("Public.Customers"))

	// Without a catalog only the rules' own names are known.
	p = NewPlan(testMasker(t), decision(&controlv1.MaskRule{Columns: []string{"customers.email"}}), nil)
	assert.False(t, p.Refuse())
	assert.Nil(t, p.Catalog())
	assert.Nil(t, p.Catalog().Table("customers"))
	assert.Empty(t, p.whole)
	assert.True(t, p.Derives([]string{"customers.email"}))
	assert.False(t, p.Derives([]string{"public.customers.email"}))
}

func TestMaskColumns(t *testing.T) {
	rules := []*controlv1.Rule{
		{Name: "a", Mask: &controlv1.MaskRule{Columns: []string{" Customers.Email ", "customers.ssn"}}},
		{Name: "b"},
		{Name: "c", Mask: &controlv1.MaskRule{Columns: []string{"customers.email", "public.orders.card"}}},
	}
	assert.Equal(t, []string{"customers.email", "customers.ssn", "public.orders.card"}, MaskColumns(rules))
	assert.Empty(t, MaskColumns(nil))
}

func TestColumns(t *testing.T) {
	p := NewPlan(testMasker(t), decision(&controlv1.MaskRule{Columns: []string{"customers.email"}}), testCatalog())
	fields := []pgproto3.FieldDescription{
		{Name: []byte("email"), TableOID: 10, TableAttributeNumber: 2, DataTypeOID: 25},
		{Name: []byte("e"), TableOID: 20, TableAttributeNumber: 1, DataTypeOID: 25},
		{Name: []byte("id"), TableOID: 10, TableAttributeNumber: 1, DataTypeOID: 23, Format: 1},
		{Name: []byte("upper"), DataTypeOID: 25},
		{Name: []byte("n"), DataTypeOID: 23},
		{Name: []byte("note"), TableOID: 10, TableAttributeNumber: 3, DataTypeOID: 25, Format: 1},
	}
	// Every computed column from every reference: all of them derive.
	cols := p.Columns(fields, nil, Lineage{Refs: []string{"customers.email"}})
	assert.Equal(t, []Column{
		{how: colWhole, label: "customers.email", typ: 25},
		{how: colWhole, label: "customers.email", typ: 25},
		{how: colPass, typ: 23, format: 1},
		{how: colDerived, label: "derived:upper", typ: 25},
		{how: colDerived, label: "derived:n", typ: 23},
		{how: colScan, typ: 25, format: 1}, // binary text is text
	}, cols)
	assert.Equal(t, "customers.email", cols[0].Label())
	assert.Equal(t, "", cols[2].Label())
	assert.True(t, HasDerived(cols))

	// Per output column when the targets line up.
	lin := Lineage{Refs: []string{"customers.email"}, Targets: [][]string{nil, nil, nil, {"customers.email"}, {"customers.id"}, nil}}
	cols = p.Columns(fields, nil, lin)
	assert.Equal(t, colDerived, cols[3].how)
	assert.Equal(t, colScan, cols[4].how)

	// Bind result formats: one for all, or one per column.
	cols = p.Columns(fields, []int16{1}, Lineage{})
	assert.Equal(t, colPass, cols[4].how)
	assert.Equal(t, int16(1), cols[4].format)
	cols = p.Columns(fields, []int16{0, 0, 0, 0, 1}, Lineage{})
	assert.Equal(t, []int16{0, 0, 0, 0, 1, 1}, []int16{cols[0].format, cols[1].format, cols[2].format, cols[3].format, cols[4].format, cols[5].format},
		"a column without a format of its own keeps the described one")
	assert.Equal(t, colScan, cols[2].how)
	assert.False(t, HasDerived(cols))

	// A whole row of a table (attribute 0), in either format, is what its
	// lineage says; so is what a statistics relation samples, though its
	// columns come from a relation of their own.
	rows := []pgproto3.FieldDescription{
		{Name: []byte("c"), TableOID: 10, TableAttributeNumber: 0, DataTypeOID: 16385, Format: 1},
		{Name: []byte("o"), TableOID: 30, TableAttributeNumber: 0, DataTypeOID: 16390, Format: 1},
	}
	cols = p.Columns(rows, nil, Lineage{Refs: []string{"customers.*", "orders.*"}, Targets: [][]string{{"customers.*"}, {"orders.*"}}})
	assert.Equal(t, []colHow{colDerived, colScanBinary}, []colHow{cols[0].how, cols[1].how}, "only the row holding a masked column; the other is scanned")
	stats := []pgproto3.FieldDescription{
		{Name: []byte("attname"), TableOID: 12000, TableAttributeNumber: 3, DataTypeOID: 19},
		{Name: []byte("histogram_bounds"), TableOID: 12000, TableAttributeNumber: 12, DataTypeOID: 2277, Format: 1},
	}
	for _, rel := range []string{"pg_stats", "pg_catalog.pg_stats", "pg_stats_ext_exprs", "pg_statistic"} {
		lin := Lineage{Refs: []string{rel + ".histogram_bounds"}, Targets: [][]string{{rel + ".attname"}, {rel + ".histogram_bounds"}}}
		cols = p.Columns(stats, nil, lin)
		assert.Equal(t, []colHow{colDerived, colDerived}, []colHow{cols[0].how, cols[1].how}, rel)
	}
	unmasked := NewPlan(testMasker(t), decision(&controlv1.MaskRule{Detectors: []string{"email"}}), testCatalog())
	cols = unmasked.Columns(stats, nil, Lineage{Refs: []string{"pg_stats.histogram_bounds"}})
	assert.Equal(t, colScanBinary, cols[1].how, "without masked columns statistics are not derived data; binary, they are scanned")
}

// A binary value of a type that may hold text (an array, a record) is
// scanned by the detectors; one they find something in is sent as NULL.
// Numbers and dates in binary pass.
func TestBinaryValuesThatMayHoldText(t *testing.T) {
	p := NewPlan(testMasker(t), decision(&controlv1.MaskRule{Detectors: []string{"email"}}), testCatalog())
	fields := []pgproto3.FieldDescription{
		{Name: []byte("a"), DataTypeOID: 1009, Format: 1}, // text[]
		{Name: []byte("n"), DataTypeOID: 23, Format: 1},
	}
	cols := p.Columns(fields, nil, Lineage{})
	assert.Equal(t, []colHow{colScanBinary, colPass}, []colHow{cols[0].how, cols[1].how})
	arr := append([]byte{0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 25, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 17}, "ada@example.com x"...)
	row := binary.BigEndian.AppendUint16(nil, 2)
	row = binary.BigEndian.AppendUint32(row, uint32(len(arr)))
	row = append(row, arr...)
	row = binary.BigEndian.AppendUint32(row, 4)
	row = append(row, 0, 0, 0, 7)
	var st Stats
	out, err := p.MaskRow(nil, row, cols, &st)
	require.NoError(t, err)
	require.NotNil(t, out)
	assert.NotContains(t, string(out), "ada@example.com")
	assert.Equal(t, []byte{0xff, 0xff, 0xff, 0xff}, out[7:11], "the array is NULL")
	assert.Equal(t, []byte{0, 0, 0, 4, 0, 0, 0, 7}, out[11:], "the number passes")
}

func TestMaskRow(t *testing.T) {
	p := testPlan(t)
	cols := []Column{
		{how: colScan, typ: 23},
		{how: colWhole, label: "customers.email", typ: 25},
		{how: colScan, typ: 25},
		{how: colWhole, label: "customers.doc", typ: 3802},            // jsonb, text
		{how: colWhole, label: "customers.doc", typ: 3802, format: 1}, // jsonb, binary
		{how: colWhole, label: "customers.json", typ: 114},            // json
		{how: colDerived, label: "derived:raw", typ: 17},              // bytea: NULL
		{how: colDerived, label: "derived:n", typ: 23, format: 1},     // int4, binary: NULL
		{how: colPass, typ: 23, format: 1},                            // binary int4
		{how: colWhole, label: "customers.email", typ: 25},            // NULL stays NULL
		{how: colScan, typ: 25},                                       // empty
	}
	body := row([]byte("1"), []byte("ada@example.com"), []byte("mail ada@example.com"), []byte(`{"a":1}`),
		append([]byte{1}, `{"a":1}`...), []byte(`"x"`), []byte{0xde, 0xad}, []byte{0, 0, 0, 7}, []byte{0, 0, 0, 9}, nil, []byte{})
	var st Stats
	out, err := p.MaskRow(nil, body, cols, &st)
	require.NoError(t, err)
	got := values(t, out)
	assert.Equal(t, [][]byte{
		[]byte("1"), []byte(masking.WholeMarker), []byte("mail [email]"), []byte(`"****"`),
		append([]byte{1}, `"****"`...), []byte(`"****"`), nil, nil, {0, 0, 0, 9}, nil, {},
	}, got)
	assert.Equal(t, map[string]int64{"customers.email": 1, "customers.doc": 2, "customers.json": 1, "derived:raw": 1, "derived:n": 1}, st.columns)
	assert.Equal(t, int64(1), st.Detectors().Get("email"))

	// MaskRow is MaskValue per value.
	var st2 Stats
	var dst []byte
	for i, v := range [][]byte{[]byte("1"), []byte("ada@example.com"), []byte("mail ada@example.com"), []byte(`{"a":1}`)} {
		var null bool
		dst, null = p.MaskValue(dst[:0], v, cols[i], &st2)
		assert.False(t, null)
		assert.Equal(t, string(got[i]), string(dst))
	}
	dst, null := p.MaskValue([]byte("keep"), []byte{0xde, 0xad}, cols[6], &st2)
	assert.True(t, null)
	assert.Equal(t, "keep", string(dst), "nothing appended for a NULL")

	// A clean row goes out as it came.
	out, err = p.MaskRow(out, row([]byte("2"), nil, []byte("nothing here")), cols[:3], &st)
	require.NoError(t, err)
	assert.Nil(t, out)
}

func TestMaskRowUndecodable(t *testing.T) {
	p := testPlan(t)
	cols := []Column{{how: colScan, typ: 25}, {how: colScan, typ: 25}}
	for name, body := range map[string][]byte{
		"empty":          nil,
		"short count":    {0},
		"other count":    row([]byte("a")),
		"cut length":     {0, 2, 0, 0, 0, 1, 'a', 0, 0},
		"value too long": {0, 2, 0, 0, 0, 1, 'a', 0, 0, 0, 5, 'b'},
		"trailing bytes": append(row([]byte("a"), []byte("b")), 'x'),
	} {
		_, err := p.MaskRow(nil, body, cols, &Stats{})
		assert.ErrorIs(t, err, ErrUndecodable, name)
	}
}

// TestMaskRowAllocs: masking a row into a reused buffer allocates nothing.
func TestMaskRowAllocs(t *testing.T) {
	p := testPlan(t)
	cols := []Column{{how: colScan, typ: 23}, {how: colWhole, label: "customers.email", typ: 25}, {how: colScan, typ: 25}, {how: colPass, typ: 23, format: 1}}
	body := row([]byte("1"), []byte("ada@example.com"), []byte("a note"), []byte{0, 0, 0, 1})
	var st Stats
	dst, err := p.MaskRow(nil, body, cols, &st)
	require.NoError(t, err)
	allocs := testing.AllocsPerRun(100, func() {
		dst, _ = p.MaskRow(dst, body, cols, &st)
	})
	assert.Zero(t, allocs)
	assert.Equal(t, int64(102), st.columns["customers.email"], "one call, a warm-up run and 100 runs")
}

func TestMaskFields(t *testing.T) {
	p := testPlan(t)
	msg, detail, empty := `invalid input syntax: "ada@example.com"`, "no value", ""
	var st Stats
	assert.True(t, p.MaskFields([]*string{&msg, nil, &detail, &empty}, &st))
	assert.Equal(t, `invalid input syntax: "[email]"`, msg)
	assert.Equal(t, "no value", detail)
	assert.False(t, p.MaskFields([]*string{&msg, &detail}, &st))
	assert.Equal(t, int64(1), st.Detectors().Get("email"))
}

func TestTextMasking(t *testing.T) {
	p := testPlan(t)
	assert.True(t, p.Contains([]byte("to ada@example.com")))
	assert.False(t, p.Contains([]byte("to nobody")))
	var st Stats
	assert.Equal(t, "to [email]", string(p.MaskText(nil, []byte("to ada@example.com"), &st)))
	assert.Equal(t, "to nobody", string(p.MaskText(nil, []byte("to nobody"), nil)), "a nil Stats counts nothing")
	assert.Equal(t, int64(1), st.Detectors().Get("email"))
	assert.Equal(t, "x"+masking.WholeMarker, string(p.MaskWholeText([]byte("x"), []byte("42"))))
}

func TestLineage(t *testing.T) {
	st := &policyv1.Statement{Sources: []string{"customers.email", "customers.id"}, Inputs: []string{"customers.email"},
		Targets: []*policyv1.Target{{Columns: []string{"customers.email"}}, {Columns: []string{"customers.id"}}}}
	l := StatementLineage(st)
	assert.Equal(t, Lineage{Refs: st.Sources, Inputs: st.Inputs, Targets: [][]string{{"customers.email"}, {"customers.id"}}}, l)
	assert.Nil(t, StatementLineage(&policyv1.Statement{Sources: []string{"t.*"}}).Targets)

	m := Lineage{Refs: []string{"orders.card"}, Inputs: []string{"orders.card"}, Targets: [][]string{{"orders.card"}, nil}}
	u := l.Union(m)
	assert.Equal(t, []string{"customers.email", "customers.id", "orders.card"}, u.Refs)
	assert.Equal(t, []string{"customers.email", "orders.card"}, u.Inputs)
	assert.Equal(t, [][]string{{"customers.email", "orders.card"}, {"customers.id"}}, u.Targets)
	assert.Equal(t, []string{"customers.email", "customers.id"}, l.Refs, "l is unchanged")
	assert.Equal(t, [][]string{{"customers.email"}, {"customers.id"}}, l.Targets)
	assert.Nil(t, l.Union(Lineage{Refs: []string{"x.y"}}).Targets, "targets that do not line up are dropped")

	p := testPlan(t)
	assert.True(t, UnknownLineage.derived(p, 0, 1))
	assert.True(t, UnknownLineage.Union(Lineage{}).derived(p, 0, 1))
	assert.Equal(t, []string{UnknownSource}, UnknownLineage.Refs, "UnknownLineage is unchanged")
}

func TestStatsEvent(t *testing.T) {
	var nilStats *Stats
	nilStats.Column("x")
	assert.Nil(t, nilStats.Event(1))
	assert.Nil(t, nilStats.Detectors())

	var st Stats
	assert.Nil(t, st.Event(1), "nothing masked, no event")
	p := testPlan(t)
	p.MaskText(nil, []byte("ada@example.com"), &st)
	st.Column("customers.ssn")
	st.Column("customers.email")
	st.Column("customers.email")
	ev := st.Event(7).GetMasking()
	require.NotNil(t, ev)
	assert.Equal(t, uint64(7), ev.GetCommandId())
	var got []string
	for _, c := range ev.GetCounts() {
		got = append(got, c.GetColumn()+c.GetDetector()+"="+string(rune('0'+c.GetCount())))
	}
	assert.Equal(t, []string{"customers.email=2", "customers.ssn=1", "email=1"}, got)
}

func TestWithholdValues(t *testing.T) {
	m, err := masking.New(masking.Config{Detectors: []string{"email"}})
	require.NoError(t, err)
	p := NewPlan(m, &policyv1.Decision{Masks: []*controlv1.MaskRule{{Columns: []string{"customers.name"}, Action: "redact"}}}, nil)
	msg, detail := `invalid input syntax for type integer: "Alice Smith"`, "Key (id)=(42) exists."
	require.True(t, p.WithholdValues([]string{"customers.name"}, &msg, &detail))
	assert.Equal(t, `invalid input syntax for type integer: "****"`, msg)
	assert.Contains(t, detail, "withheld")
	// Code whose reads are unknown: the whole message is withheld.
	msg = "Alice Smith, Bob Jones"
	require.True(t, p.WithholdValues([]string{UnknownSource}, &msg))
	assert.NotContains(t, msg, "Alice")
	// A statement that reads nothing masked keeps its message.
	msg = `relation "nope" does not exist`
	assert.False(t, p.WithholdValues([]string{"orders.amount"}, &msg))
	assert.Equal(t, `relation "nope" does not exist`, msg)
	assert.Equal(t, `a '****' b "****`, MaskQuoted(`a 'x' b "y`), "an open quote hides the rest")
}

// Rows a write returns without RETURNING come from a rule on its table,
// which the classification cannot see into: their sources are unknown.
func TestRowsOfAWriteComeFromARule(t *testing.T) {
	ins := StatementLineage(&policyv1.Statement{Kind: "write", Command: "INSERT", Inputs: []string{"probe.a"}})
	assert.Equal(t, []string{UnknownSource}, ins.Refs)
	assert.Equal(t, []string{"probe.a"}, ins.Inputs, "its errors keep the statement's own inputs")
	ret := StatementLineage(&policyv1.Statement{Kind: "write", Command: "INSERT", Sources: []string{"probe.a"},
		Targets: []*policyv1.Target{{Columns: []string{"probe.a"}}}})
	assert.Equal(t, []string{"probe.a"}, ret.Refs, "RETURNING has its own lineage")
	sel := StatementLineage(&policyv1.Statement{Kind: "read", Command: "SELECT", Targets: []*policyv1.Target{{}}})
	assert.Empty(t, sel.Refs, "SELECT 1 derives from nothing")
}

// A catalog covers a decision only if it was resolved for every column
// the decision masks; WithDecisionColumns adds those a policy lacks (a
// decision made under a policy the worker has not received yet).
func TestCatalogCoversItsDecision(t *testing.T) {
	d := decision(&controlv1.MaskRule{Columns: []string{"customers.ssn", " Customers.Email "}})
	cols := []string{"customers.ssn"}
	got := WithDecisionColumns(cols, d)
	assert.Equal(t, []string{"customers.ssn", "customers.email"}, got)
	assert.Equal(t, []string{"customers.ssn"}, cols, "the policy's list is not changed")
	same := []string{"customers.email", "customers.ssn"}
	assert.Equal(t, same, WithDecisionColumns(same, d))

	old := &Catalog{asked: map[string]bool{"customers.ssn": true}}
	assert.False(t, old.Covers(d), "a column the catalog was never told of")
	assert.True(t, (&Catalog{asked: map[string]bool{"customers.ssn": true, "customers.email": true}}).Covers(d))
	assert.True(t, old.Covers(decision()), "nothing masked")
	var none *Catalog
	assert.False(t, none.Covers(d))
}
