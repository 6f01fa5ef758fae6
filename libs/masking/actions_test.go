package masking

import (
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func mask(t *testing.T, m *Masker, in string) string {
	t.Helper()
	return string(m.AppendMasked(nil, []byte(in), nil))
}

func TestRedact(t *testing.T) {
	m, err := New(Config{})
	require.NoError(t, err)
	for _, tc := range []struct{ name, in, want string }{
		{"email", "mail jane@example.com now", "mail [email] now"},
		{"ssn", "ssn 123-45-6789", "ssn [ssn]"},
		{"card spaced", "card 4111 1111 1111 1111 12/27", "card [card] 12/27"},
		{"phone", "call (415) 555-2671", "call [phone]"},
		{"iban", "IBAN GB82 WEST 1234 5698 7654 32", "IBAN [iban]"},
		{"aws", "id AKIAIOSFODNN7EXAMPLE", "id [aws_key]"},
		{"several", "a@x.io 123-45-6789 b@y.io", "[email] [ssn] [email]"},
		{"whole numeric value", "4111111111111111", "0"},
		{"json number", `{"card": 4111111111111111, "n": [5555555555554444]}`, `{"card": 0, "n": [0]}`},
		{"negative json number", `[-4111111111111111]`, `[-0]`},
		{"csv numeric field", "1,4111111111111111,x", "1,0,x"},
		{"json string stays text", `{"card":"4111111111111111"}`, `{"card":"[card]"}`},
		{"card merged into email", "4111111111111111@example.com", "[card]"},
		{"clean", "nothing to see", "nothing to see"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, mask(t, m, tc.in))
		})
	}
}

func TestKeep(t *testing.T) {
	m, err := New(Config{Action: Action{Kind: Keep, Keep: 4}})
	require.NoError(t, err)
	for _, tc := range []struct{ name, in, want string }{
		{"ssn", "ssn 123-45-6789", "ssn ***-**-6789"},
		{"card", "card 4242424242424242 ok", "card ************4242 ok"},
		{"card spaced", "card 4111 1111 1111 1111 ok", "card **** **** **** 1111 ok"},
		{"phone", "call (415) 555-2671", "call (***) ***-2671"},
		{"e164", "call +14155552671", "call +*******2671"},
		{"email local part", "mail jane.doe@example.com", "mail ****.doe@*******.com"},
		{"iban", "GB82 WEST 1234 5698 7654 32", "**** **** **** **** **54 32"},
		{"private key always redacted", "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----", "[private_key]"},
		{"numeric position keeps digits", `{"card":4242424242424242}`, `{"card":9999999999994242}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, mask(t, m, tc.in))
		})
	}
	m0, err := New(Config{Action: Action{Kind: Keep}})
	require.NoError(t, err)
	assert.Equal(t, "ssn ***-**-****", mask(t, m0, "ssn 123-45-6789"))
	assert.Equal(t, "**@*******.com", mask(t, m0, "jd@example.com"))
}

var tokenRE = regexp.MustCompile(`^tok_[a-z2-7]{16}$`)

func TestToken(t *testing.T) {
	k1, k2 := testKey(1), testKey(2)
	m1, err := New(Config{Action: Action{Kind: Token}, TokenKey: k1})
	require.NoError(t, err)
	m1b, err := New(Config{Action: Action{Kind: Token}, TokenKey: k1})
	require.NoError(t, err)
	m2, err := New(Config{Action: Action{Kind: Token}, TokenKey: k2})
	require.NoError(t, err)

	out := mask(t, m1, "mail jane@example.com now")
	tok := strings.TrimSuffix(strings.TrimPrefix(out, "mail "), " now")
	assert.Regexp(t, tokenRE, tok)

	// Deterministic across calls and Masker instances with one key.
	assert.Equal(t, out, mask(t, m1, "mail jane@example.com now"))
	assert.Equal(t, out, mask(t, m1b, "mail jane@example.com now"))
	// A span and the same bytes as a whole value share the token (joins).
	assert.Equal(t, tok, string(m1.AppendWhole(nil, []byte("jane@example.com"), Action{Kind: Token})))
	// Other value, other token; other key, other token.
	assert.NotEqual(t, out, mask(t, m1, "mail john@example.com now"))
	assert.NotEqual(t, out, mask(t, m2, "mail jane@example.com now"))

	// Numeric positions get a same-length number starting with 9.
	num := mask(t, m1, "4111111111111111")
	assert.Regexp(t, `^9[0-9]{15}$`, num)
	assert.Equal(t, num, mask(t, m1, "4111111111111111"))
	assert.NotEqual(t, num, mask(t, m2, "4111111111111111"))
	assert.False(t, m1.Contains([]byte(num)))
}

func TestAppendWhole(t *testing.T) {
	m, err := New(Config{TokenKey: testKey(3)})
	require.NoError(t, err)
	noKey, err := New(Config{})
	require.NoError(t, err)
	for _, tc := range []struct {
		name string
		m    *Masker
		in   string
		a    Action
		want string
	}{
		{"redact", m, "Jane Doe", Action{}, WholeMarker},
		{"redact explicit", m, "Jane Doe", Action{Kind: Redact}, WholeMarker},
		{"redact empty", m, "", Action{}, WholeMarker},
		{"keep name", m, "Jane Doe", Action{Kind: Keep, Keep: 2}, "**** *oe"},
		{"keep runes", m, "Zoë Ñúñez", Action{Kind: Keep, Keep: 3}, "*** **ñez"},
		{"keep email", m, "jane@example.com", Action{Kind: Keep, Keep: 2}, "**ne@*******.com"},
		{"keep invalid utf8", m, "\xff\xfeab", Action{Kind: Keep, Keep: 1}, "***b"},
		{"keep at most half", m, "ab", Action{Kind: Keep, Keep: 8}, "*b"},
		{"keep short email", m, "bob@example.com", Action{Kind: Keep, Keep: 4}, "**b@*******.com"},
		{"keep digits whole", m, "123456789", Action{Kind: Keep, Keep: 4}, "*****6789"},
		{"invalid kind fails closed", m, "secret", Action{Kind: "shuffle"}, WholeMarker},
		{"keep out of range fails closed", m, "secret", Action{Kind: Keep, Keep: 99}, WholeMarker},
		{"token without key fails closed", noKey, "secret", Action{Kind: Token}, WholeMarker},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, string(tc.m.AppendWhole(nil, []byte(tc.in), tc.a)))
		})
	}
	tok := string(m.AppendWhole([]byte("x="), []byte("Jane Doe"), Action{Kind: Token}))
	assert.Regexp(t, `^x=tok_[a-z2-7]{16}$`, tok)
}

func TestActionValidate(t *testing.T) {
	assert.NoError(t, Action{}.Validate())
	assert.NoError(t, Action{Kind: Keep, Keep: MaxKeep}.Validate())
	assert.ErrorIs(t, Action{Kind: Keep, Keep: -1}.Validate(), ErrInvalidAction)
	assert.ErrorIs(t, Action{Kind: Keep, Keep: MaxKeep + 1}.Validate(), ErrInvalidAction)
	err := Action{Kind: "hash"}.Validate()
	assert.ErrorIs(t, err, ErrInvalidAction)
	assert.Contains(t, err.Error(), `"hash"`)
}
