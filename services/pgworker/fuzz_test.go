package pgworker

import (
	"bytes"
	"encoding/binary"
	"testing"

	"sluice.dev/sluice/libs/masking"
)

func testPlan(t testing.TB) *maskPlan {
	m, err := masking.New(masking.Config{TokenKey: make([]byte, 32)})
	if err != nil {
		t.Fatal(err)
	}
	cat := &catalog{byName: map[string][]colKey{"customers.email": {{1, 2}}}, tables: map[string][]string{"customers": {"id", "email", "note"}}}
	return &maskPlan{masker: m, whole: map[colKey]string{{1, 2}: "customers.email"}, cols: map[string]bool{"customers.email": true},
		rels: map[string]bool{"customers": true}, catalog: cat}
}

// FuzzResultFormats: a Bind body from the network never crashes the worker.
func FuzzResultFormats(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 0, 1, 0, 1})
	f.Add([]byte{0, 1, 0, 1, 0, 1, 0, 0, 0, 3, 'a', 'b', 'c', 0, 2, 0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = resultFormats(b)
	})
}

// FuzzMaskRow: any DataRow body is either refused or masked; a masked row
// never shows the email it carried.
func FuzzMaskRow(f *testing.F) {
	row := func(vals ...[]byte) []byte {
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
	f.Add(row([]byte("1"), []byte("ada@example.com"), []byte("note ada@example.com")))
	f.Add(row([]byte("2"), nil, []byte("x")))
	f.Add([]byte{0, 3, 0xff})
	p := testPlan(f)
	cols := []colPlan{{how: colScan, typ: 23}, {how: colWhole, label: "customers.email", typ: 25}, {how: colScan, typ: 25}}
	f.Fuzz(func(t *testing.T, body []byte) {
		var st maskStats
		out, err := p.maskRow(nil, body, cols, &st)
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

// FuzzCopyMask: COPY data split anywhere is masked the same.
func FuzzCopyMask(f *testing.F) {
	f.Add([]byte("1\tada@example.com\tnote\n2\tbob@example.com\t\\N\n"), uint8(5))
	f.Add([]byte("1,\"a,\nb\",x\n"), uint8(3))
	p := testPlan(f)
	f.Fuzz(func(t *testing.T, data []byte, cut uint8) {
		cm := &copyMask{plan: p, delim: '\t', whole: map[int]string{1: "customers.email"}}
		var st maskStats
		var out []byte
		at := int(cut) % (len(data) + 1)
		out = append(out, cm.feed(data[:at], &st)...)
		out = append(out, cm.feed(data[at:], &st)...)
		out = append(out, cm.flush(&st)...)
		whole := &copyMask{plan: p, delim: '\t', whole: map[int]string{1: "customers.email"}}
		ref := append(append([]byte(nil), whole.feed(data, &st)...), whole.flush(&st)...)
		if !bytes.Equal(out, ref) {
			t.Fatalf("split at %d changes the result:\n%q\n%q", at, out, ref)
		}
	})
}
