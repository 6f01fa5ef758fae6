package masking

import (
	"encoding/csv"
	"encoding/json"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestNewErrors(t *testing.T) {
	_, err := New(Config{Detectors: []string{Email, "passport"}})
	require.ErrorIs(t, err, ErrUnknownDetector)
	assert.Contains(t, err.Error(), `"passport"`)

	_, err = New(Config{Action: Action{Kind: "scramble"}})
	require.ErrorIs(t, err, ErrInvalidAction)
	assert.Contains(t, err.Error(), `"scramble"`)

	_, err = New(Config{Action: Action{Kind: Keep, Keep: 9}})
	require.ErrorIs(t, err, ErrInvalidAction)

	_, err = New(Config{Action: Action{Kind: Token}})
	require.ErrorIs(t, err, ErrTokenKey)

	_, err = New(Config{TokenKey: []byte("short")})
	require.ErrorIs(t, err, ErrTokenKey)

	m, err := New(Config{})
	require.NoError(t, err)
	assert.Equal(t, Detectors(), []string{Email, SSN, Card, Phone, IBAN, JWT, AWSKey, GitHubToken, OpenAIKey, SlackToken, PrivateKey})
	for _, d := range Detectors() {
		assert.True(t, m.on[mustDet(t, d)], d)
	}
}

func mustDet(t *testing.T, name string) detID {
	d, ok := detByName(name)
	require.True(t, ok, name)
	return d
}

func TestDetectorSubset(t *testing.T) {
	m := only(t, Config{}, Email)
	in := "jane@example.com 123-45-6789 4111111111111111"
	assert.Equal(t, "[email] 123-45-6789 4111111111111111", mask(t, m, in))
	m = only(t, Config{}, SSN, Card)
	assert.Equal(t, "jane@example.com [ssn] [card]", mask(t, m, in))
}

func TestAppendMaskedAppends(t *testing.T) {
	m, err := New(Config{})
	require.NoError(t, err)
	dst := []byte("prefix:")
	var c Counts
	dst = m.AppendMasked(dst, []byte("a@example.com"), &c)
	dst = m.AppendMasked(dst, []byte("|clean|"), &c)
	dst = m.AppendMasked(dst, []byte("123-45-6789"), &c)
	assert.Equal(t, "prefix:[email]|clean|[ssn]", string(dst))
	assert.Equal(t, int64(2), c.Total())
}

func TestCounts(t *testing.T) {
	m, err := New(Config{})
	require.NoError(t, err)
	var c Counts
	m.AppendMasked(nil, []byte("a@x.io b@y.io 123-45-6789 AKIAIOSFODNN7EXAMPLE"), &c)
	type kv struct {
		name string
		n    int64
	}
	var got []kv
	c.Each(func(name string, n int64) { got = append(got, kv{name, n}) })
	assert.Equal(t, []kv{{Email, 2}, {SSN, 1}, {AWSKey, 1}}, got)
	assert.Equal(t, int64(2), c.Get(Email))
	assert.Equal(t, int64(0), c.Get("nope"))

	var sum Counts
	sum.Add(&c)
	sum.Add(&c)
	assert.Equal(t, int64(8), sum.Total())
	c.Reset()
	assert.Equal(t, int64(0), c.Total())
	assert.NotPanics(t, func() { m.AppendMasked(nil, []byte("a@x.io"), nil) })
}

// TestFixedPoint: masking a JWT makes the card after it stand alone (its
// neighbour was a digit of the signature), and the re-scan masks it.
func TestFixedPoint(t *testing.T) {
	m, err := New(Config{})
	require.NoError(t, err)
	tok := jwtOf(`{"alg":"HS256"}`, `{"sub":"x"}`, "c2lnbmF0dXJl1")
	in := tok + ".4111111111111111"
	require.Equal(t, []string{tok}, matches(m, in), "first pass sees only the jwt")
	var c Counts
	out := m.AppendMasked(nil, []byte(in), &c)
	assert.Equal(t, "[jwt].[card]", string(out))
	assert.Equal(t, int64(1), c.Get(JWT))
	assert.Equal(t, int64(1), c.Get(Card))
	assert.False(t, m.Contains(out))
}

func TestPassLimitFallback(t *testing.T) {
	defer func(n int) { maxPasses = n }(maxPasses)
	maxPasses = 1
	m, err := New(Config{})
	require.NoError(t, err)
	tok := jwtOf(`{"alg":"HS256"}`, `{"sub":"x"}`, "c2lnbmF0dXJl1")
	in := "1\t" + tok + ".4111111111111111\t\\N\n"
	out := string(m.AppendMasked(nil, []byte(in), nil))
	assert.Equal(t, "*\t"+strings.Repeat("*", 20)+"."+strings.Repeat("*", 15)+"."+strings.Repeat("*", 13)+"."+strings.Repeat("*", 16)+"\t\\*\n", out)
	assert.False(t, m.Contains([]byte(out)))
}

func TestBinaryAndInvalidUTF8(t *testing.T) {
	m, err := New(Config{SSNBare: true})
	require.NoError(t, err)
	in := []byte("\x00\xff\xfe jane@example.com \xc3\x28 123-45-6789 \xed\xa0\x80")
	out := m.AppendMasked(nil, in, nil)
	assert.Equal(t, "\x00\xff\xfe [email] \xc3\x28 [ssn] \xed\xa0\x80", string(out))
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	assert.Equal(t, all, m.AppendMasked(nil, all, nil))
}

// sensitiveDoc holds one value of each kind in JSON strings and numbers.
func sensitiveDoc(t *testing.T) string {
	doc := map[string]any{
		"email":   "jane.doe@example.com",
		"ssn":     "123-45-6789",
		"card":    "4111 1111 1111 1111",
		"cardnum": json.Number("4111111111111111"),
		"neg":     json.Number("-5555555555554444"),
		"phone":   "(415) 555-2671",
		"iban":    "GB82 WEST 1234 5698 7654 32",
		"jwt":     jwtOf(`{"alg":"HS256"}`, `{"sub":"1"}`, "sig"),
		"aws":     "AKIAIOSFODNN7EXAMPLE",
		"gh":      "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
		"key":     "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n",
		"note":    "call +44 20 7946 0958\tor mail \"x@y.io\"\n",
		"list":    []any{json.Number("4111111111111111"), "a@b.io"},
	}
	b, err := json.Marshal(doc)
	require.NoError(t, err)
	return string(b)
}

func TestStructureSafetyJSON(t *testing.T) {
	doc := sensitiveDoc(t)
	var orig map[string]any
	require.NoError(t, json.Unmarshal([]byte(doc), &orig))
	for _, a := range []Action{{Kind: Redact}, {Kind: Keep, Keep: 4}, {Kind: Keep}, {Kind: Token}} {
		t.Run(a.Kind, func(t *testing.T) {
			m, err := New(Config{Action: a, TokenKey: testKey(7), SSNBare: true})
			require.NoError(t, err)
			var c Counts
			out := m.AppendMasked(nil, []byte(doc), &c)
			require.True(t, json.Valid(out), "%s", out)
			var got map[string]any
			require.NoError(t, json.Unmarshal(out, &got))
			assert.Len(t, got, len(orig))
			assert.Len(t, got["list"], 2)
			assert.False(t, m.Contains(out), "%s", out)
			assert.Equal(t, int64(15), c.Total(), "%s", out)
			for _, raw := range []string{"jane.doe@example.com", "123-45-6789", "4111 1111 1111 1111", "MIIEvQIBAD", "AKIAIOSFODNN7EXAMPLE"} {
				assert.NotContains(t, string(out), raw)
			}
		})
	}
}

func TestStructureSafetyCOPYAndCSV(t *testing.T) {
	copyLine := "42\tJane\tjane@example.com\t123-45-6789\t\\N\t4111 1111 1111 1111\tnote:\\tcard\\n5555555555554444\t(415) 555-2671\n"
	csvLine := `42,"Doe, Jane",jane@example.com,123-45-6789,,4111111111111111,"say ""hi"" at +14155552671"` + "\n"
	for _, a := range []Action{{Kind: Redact}, {Kind: Keep, Keep: 4}, {Kind: Token}} {
		t.Run(a.Kind, func(t *testing.T) {
			m, err := New(Config{Action: a, TokenKey: testKey(9)})
			require.NoError(t, err)

			out := string(m.AppendMasked(nil, []byte(copyLine), nil))
			assert.Equal(t, strings.Count(copyLine, "\t"), strings.Count(out, "\t"), out)
			assert.True(t, strings.HasSuffix(out, "\n"))
			assert.Equal(t, 1, strings.Count(out, "\n"))
			assert.Contains(t, out, "\t\\N\t")
			assert.Contains(t, out, "note:\\tcard\\n")
			assert.NotContains(t, out, "5555555555554444")

			out = string(m.AppendMasked(nil, []byte(csvLine), nil))
			want, err := csv.NewReader(strings.NewReader(csvLine)).Read()
			require.NoError(t, err)
			got, err := csv.NewReader(strings.NewReader(out)).Read()
			require.NoError(t, err, out)
			assert.Len(t, got, len(want))
			assert.Equal(t, "Doe, Jane", got[1])
		})
	}
}

func TestContainsAgreesWithAppendMasked(t *testing.T) {
	m, err := New(Config{SSNBare: true})
	require.NoError(t, err)
	for _, in := range []string{
		"", "x", "plain text", "2024-01-01", "jane@example.com", "a@b", "123456789",
		"eyJhbGciOiJIUzI1NiJ9", "4111111111111112", "-----BEGIN PRIVATE KEY-----",
	} {
		out := m.AppendMasked(nil, []byte(in), nil)
		assert.Equal(t, m.Contains([]byte(in)), string(out) != in, "%q", in)
	}
}

func TestConcurrentUse(t *testing.T) {
	m, err := New(Config{Action: Action{Kind: Token}, TokenKey: testKey(4)})
	require.NoError(t, err)
	in := []byte("jane@example.com and 123-45-6789")
	want := string(m.AppendMasked(nil, in, nil))
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var c Counts
			buf := make([]byte, 0, 128)
			for i := 0; i < 500; i++ {
				buf = m.AppendMasked(buf[:0], in, &c)
				if string(buf) != want {
					t.Errorf("got %q want %q", buf, want)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func TestFailClosedOnPanic(t *testing.T) {
	m, err := New(Config{Action: Action{Kind: Token}, TokenKey: testKey(6)})
	require.NoError(t, err)
	m.macs = sync.Pool{} // no New: Get returns nil and the token path panics
	out := m.AppendMasked([]byte("p:"), []byte("jane@example.com"), nil)
	assert.Equal(t, "p:"+WholeMarker, string(out))

	failClosed = false
	defer func() { failClosed = true }()
	assert.Panics(t, func() { m.AppendMasked(nil, []byte("jane@example.com"), nil) })
}

func TestAllocations(t *testing.T) {
	m, err := New(Config{TokenKey: testKey(5)})
	require.NoError(t, err)
	clean := []byte("Order shipped to Berlin, 3 items")
	dirty := []byte("contact: jane.doe@example.com ok")
	dst := make([]byte, 0, 256)
	var c Counts

	assert.Zero(t, testing.AllocsPerRun(200, func() { dst = m.AppendMasked(dst[:0], clean, &c) }), "clean AppendMasked")
	assert.Zero(t, testing.AllocsPerRun(200, func() { m.Contains(clean) }), "Contains")
	assert.Zero(t, testing.AllocsPerRun(200, func() { m.Contains(dirty) }), "Contains dirty")
	assert.Zero(t, testing.AllocsPerRun(200, func() { dst = m.AppendMasked(dst[:0], dirty, &c) }), "redact AppendMasked")

	if raceEnabled {
		return // sync.Pool drops items under -race
	}
	tm, err := New(Config{Action: Action{Kind: Token}, TokenKey: testKey(5)})
	require.NoError(t, err)
	assert.Less(t, testing.AllocsPerRun(200, func() { dst = tm.AppendMasked(dst[:0], dirty, &c) }), 1.0, "token AppendMasked")
}
