package pgworker

import (
	"bytes"
	"testing"

	"sluice.dev/sluice/libs/masking"
	"sluice.dev/sluice/libs/pgmask"
	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
	policyv1 "sluice.dev/sluice/proto/sluice/policy/v1"
)

// testPlan masks customers.email whole, with the default detectors and
// action (COPY fields are planned by the test itself).
func testPlan(t testing.TB) *pgmask.Plan {
	m, err := masking.New(masking.Config{TokenKey: make([]byte, 32)})
	if err != nil {
		t.Fatal(err)
	}
	return pgmask.NewPlan(m, &policyv1.Decision{Masks: []*controlv1.MaskRule{{Columns: []string{"customers.email"}}}}, nil)
}

// FuzzResultFormats: a Bind body from the network never crashes the worker.
func FuzzResultFormats(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 0, 1, 0, 1})
	f.Add([]byte{0, 1, 0, 1, 0, 1, 0, 0, 0, 3, 'a', 'b', 'c', 0, 2, 0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = resultFormats(b)
	})
}

// FuzzCopyMask: COPY data split anywhere is masked the same.
func FuzzCopyMask(f *testing.F) {
	f.Add([]byte("1\tada@example.com\tnote\n2\tbob@example.com\t\\N\n"), uint8(5))
	f.Add([]byte("1,\"a,\nb\",x\n"), uint8(3))
	p := testPlan(f)
	f.Fuzz(func(t *testing.T, data []byte, cut uint8) {
		cm := &copyMask{plan: p, delim: '\t', null: `\N`, whole: map[int]string{1: "customers.email"}}
		var st pgmask.Stats
		var out []byte
		at := int(cut) % (len(data) + 1)
		out = append(out, cm.feed(data[:at], &st)...)
		out = append(out, cm.feed(data[at:], &st)...)
		out = append(out, cm.flush(&st)...)
		whole := &copyMask{plan: p, delim: '\t', null: `\N`, whole: map[int]string{1: "customers.email"}}
		ref := append(append([]byte(nil), whole.feed(data, &st)...), whole.flush(&st)...)
		if !bytes.Equal(out, ref) {
			t.Fatalf("split at %d changes the result:\n%q\n%q", at, out, ref)
		}
	})
}
