package masking

import "testing"

func benchMasker(b *testing.B) *Masker {
	b.Helper()
	m, err := New(Config{})
	if err != nil {
		b.Fatal(err)
	}
	return m
}

// clean32 is a typical 32-byte text value with nothing to mask.
var clean32 = []byte("Order shipped to Berlin, 3 items")

func BenchmarkContainsClean32(b *testing.B) {
	m := benchMasker(b)
	b.SetBytes(int64(len(clean32)))
	b.ReportAllocs()
	for b.Loop() {
		if m.Contains(clean32) {
			b.Fatal("clean value matched")
		}
	}
}

func BenchmarkAppendMaskedClean(b *testing.B) {
	m := benchMasker(b)
	dst := make([]byte, 0, 256)
	var c Counts
	b.SetBytes(int64(len(clean32)))
	b.ReportAllocs()
	for b.Loop() {
		dst = m.AppendMasked(dst[:0], clean32, &c)
	}
}

func BenchmarkAppendMaskedEmail(b *testing.B) {
	m := benchMasker(b)
	v := []byte("contact: jane.doe@example.com ok")
	dst := make([]byte, 0, 256)
	var c Counts
	b.SetBytes(int64(len(v)))
	b.ReportAllocs()
	for b.Loop() {
		dst = m.AppendMasked(dst[:0], v, &c)
	}
}

// customerRow is one DataRow of a typical customers table.
var customerRow = [][]byte{
	[]byte("42"),
	[]byte("Jane Doe"),
	[]byte("jane.doe@example.com"),
	[]byte("123-45-6789"),
	[]byte("4111 1111 1111 1111"),
	[]byte("(415) 555-2671"),
	[]byte("2024-01-01 12:30:45+00"),
}

func BenchmarkAppendMaskedRow(b *testing.B) {
	m := benchMasker(b)
	dst := make([]byte, 0, 512)
	var c Counts
	n := 0
	for _, v := range customerRow {
		n += len(v)
	}
	b.SetBytes(int64(n))
	b.ReportAllocs()
	for b.Loop() {
		dst = dst[:0]
		for _, v := range customerRow {
			dst = m.AppendMasked(dst, v, &c)
		}
	}
}

// cleanJSON is a 1 KiB JSON document with ids, dates, UUIDs and prose.
var cleanJSON = func() []byte {
	var b []byte
	b = append(b, '[')
	for len(b) < 1000 {
		b = append(b, `{"id":1234567,"at":"2024-01-01T12:30:45Z","ref":"550e8400-e29b-41d4-a716-446655440000","note":"Order shipped, 3 items"},`...)
	}
	b[len(b)-1] = ']'
	return b
}()

func BenchmarkAppendMaskedCleanJSON1K(b *testing.B) {
	m := benchMasker(b)
	dst := make([]byte, 0, 2048)
	b.SetBytes(int64(len(cleanJSON)))
	b.ReportAllocs()
	for b.Loop() {
		dst = m.AppendMasked(dst[:0], cleanJSON, nil)
	}
}

func BenchmarkAppendMaskedEmailToken(b *testing.B) {
	m, err := New(Config{Action: Action{Kind: Token}, TokenKey: testKey(1)})
	if err != nil {
		b.Fatal(err)
	}
	v := []byte("contact: jane.doe@example.com ok")
	dst := make([]byte, 0, 256)
	b.SetBytes(int64(len(v)))
	b.ReportAllocs()
	for b.Loop() {
		dst = m.AppendMasked(dst[:0], v, nil)
	}
}
