package masking

import (
	"bytes"
	"encoding/json"
	"testing"
)

var fuzzSeeds = []string{
	"",
	"plain text without anything",
	`{"email":"jane.doe@example.com","ssn":"123-45-6789","card":4111111111111111}`,
	"42\tJane\tjane@example.com\t\\N\t4111 1111 1111 1111\t(415) 555-2671\n",
	`1,"Doe, Jane",+44 20 7946 0958,GB82 WEST 1234 5698 7654 32`,
	"Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl1.4111111111111111",
	"AKIAIOSFODNN7EXAMPLE aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
	"ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789 sk-proj-Xy9_Ab3Xy9_Ab3Xy9_Ab3Xy9_Ab3Xy9_Ab3",
	"xoxb-1234567890-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx https://hooks.slack.com/services/T0/B0/XXXXXXXXXXXX",
	"-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\nMIIEow==\n-----END RSA PRIVATE KEY-----\n",
	`{"k":"-----BEGIN PRIVATE KEY-----\nMIIEvQ`,
	`["\u0041bc@example.com","\n4111111111111111",-4111111111111111]`,
	"4111111111111111@example.com 123-45-6789-4111111111111111 1.4111111111111111",
	"2024-01-01 12:30:45 550e8400-e29b-41d4-a716-446655440000 d41d8cd98f00b204e9800998ecf8427e",
	"123456789 000-12-3456 a@b user@localhost",
	"\x00\xff\xfe\xc3\x28 jane@example.com",
}

// FuzzAppendMasked checks the invariants on arbitrary input: no panic; a
// clean value comes back unchanged; the output holds no match of any
// detector; quotes and tabs (JSON, CSV and COPY structure) are untouched
// and valid JSON stays valid; under redact and token no detected raw value
// survives except where it also occurs undetected in the input.
func FuzzAppendMasked(f *testing.F) {
	for i, s := range fuzzSeeds {
		f.Add([]byte(s), uint8(i))
	}
	maskers := fuzzMaskers(f)
	failClosed = false
	f.Cleanup(func() { failClosed = true })

	f.Fuzz(func(t *testing.T, in []byte, mode uint8) {
		checkInvariants(t, maskers[int(mode)%len(maskers)], in)
	})
}

func fuzzMaskers(f *testing.F) [6]*Masker {
	var maskers [6]*Masker
	for i := range maskers {
		cfg := Config{TokenKey: testKey(1), SSNBare: i&1 == 1}
		switch i / 2 {
		case 1:
			cfg.Action = Action{Kind: Keep, Keep: 4}
		case 2:
			cfg.Action = Action{Kind: Token}
		}
		m, err := New(cfg)
		if err != nil {
			f.Fatal(err)
		}
		maskers[i] = m
	}
	return maskers
}

// composeParts are sensitive values and near misses that FuzzComposed glues
// together with fuzzer-chosen bytes, to explore boundaries between values.
var composeParts = []string{
	"jane.doe@example.com", "a@b", "123-45-6789", "123456789", "4111111111111111", "4111 1111 1111 1111",
	"3782 822463 10005", "(415) 555-2671", "+44 20 7946 0958", "+14155552671", "415-555-2671",
	"GB82 WEST 1234 5698 7654 32", "DE89370400440532013000",
	"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln", "AKIAIOSFODNN7EXAMPLE",
	"aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
	"ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789", "sk-proj-Xy9_Ab3Xy9_Ab3Xy9_Ab3Xy9_Ab3Xy9_Ab3",
	"xoxb-1234567890-1234567890123-AbCdEfGh", "hooks.slack.com/services/T0/B0/XXXXXXXXXXXX",
	`-----BEGIN PRIVATE KEY-----\nMIIEvQ==\n-----END PRIVATE KEY-----`, "-----BEGIN EC PRIVATE KEY-----\nMHcC",
	"2024-01-01", "1.2.3", `\n`, `\u0041`, "%2C", `\`, "\t", `"`, ",", ".", "-", "@", "0", "9", `\N`,
}

// FuzzComposed glues known values with fuzzer bytes: picks[i] chooses a
// part, and glue is split between them.
func FuzzComposed(f *testing.F) {
	f.Add([]byte(" , 	"), []byte{0, 2, 4}, uint8(0))
	f.Add([]byte("x.-"), []byte{13, 31, 4, 32}, uint8(3))
	f.Add([]byte(`"":[]`), []byte{5, 7, 20}, uint8(5))
	maskers := fuzzMaskers(f)
	failClosed = false
	f.Cleanup(func() { failClosed = true })
	f.Fuzz(func(t *testing.T, glue, picks []byte, mode uint8) {
		var in []byte
		for i, p := range picks[:min(len(picks), 256)] {
			if len(glue) > 0 {
				g := glue[i%len(glue):]
				in = append(in, g[:min(len(g), int(p>>5)+1)]...)
			}
			in = append(in, composeParts[int(p)%len(composeParts)]...)
		}
		checkInvariants(t, maskers[int(mode)%len(maskers)], in)
	})
}

func checkInvariants(t *testing.T, m *Masker, in []byte) {
	{
		var c Counts
		out := m.AppendMasked([]byte("P:"), in, &c)
		if !bytes.HasPrefix(out, []byte("P:")) {
			t.Fatalf("prefix lost: %q", out)
		}
		out = out[2:]
		dirty := m.Contains(in)
		if !dirty {
			if !bytes.Equal(out, in) || c.Total() != 0 {
				t.Fatalf("clean input changed: %q -> %q (%d)", in, out, c.Total())
			}
			return
		}
		if bytes.Equal(out, in) || c.Total() == 0 {
			t.Fatalf("dirty input unchanged: %q", in)
		}
		if m.Contains(out) {
			sp, _ := m.next(out, 0)
			t.Fatalf("output still matches %s %q: %q -> %q", detNames[sp.det], out[sp.start:sp.end], in, out)
		}
		if string(out) == WholeMarker {
			return
		}
		for _, b := range []byte{'\t', '"', '\''} {
			if bytes.Count(in, []byte{b}) != bytes.Count(out, []byte{b}) {
				t.Fatalf("count of %q changed: %q -> %q", b, in, out)
			}
		}
		if json.Valid(in) && !json.Valid(out) {
			t.Fatalf("JSON broken: %q -> %q", in, out)
		}
		if m.action.Kind == Keep || len(in) > 8<<10 {
			return // keep shows tails; the raw check is quadratic
		}
		// Raw values: each detected occurrence must be gone.
		detected := map[string]int{}
		for i := 0; ; {
			sp, ok := m.next(in, i)
			if !ok {
				break
			}
			detected[string(in[sp.start:sp.end])]++
			i = sp.end
		}
		for raw, n := range detected {
			if got, had := countOverlapping(out, raw), countOverlapping(in, raw); got > had-n {
				t.Fatalf("raw %q survives (%d in output, %d in input, %d detected): %q -> %q", raw, got, had, n, in, out)
			}
		}
	}
}

func countOverlapping(b []byte, s string) int {
	n := 0
	for i := 0; i+len(s) <= len(b); i++ {
		if string(b[i:i+len(s)]) == s {
			n++
		}
	}
	return n
}
