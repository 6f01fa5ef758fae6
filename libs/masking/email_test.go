package masking

import "testing"

func TestEmail(t *testing.T) {
	m := only(t, Config{}, Email)
	runDetCases(t, m, []detCase{
		{"plain", "user@example.com", []string{"user@example.com"}},
		{"subdomains and plus", "first.last+tag@mail.example.co.uk", []string{"first.last+tag@mail.example.co.uk"}},
		{"upper case", "Mail: JANE.DOE@EXAMPLE.ORG.", []string{"JANE.DOE@EXAMPLE.ORG"}},
		{"odd local bytes", "x_y%z-1@domain-name.io", []string{"x_y%z-1@domain-name.io"}},
		{"punycode tld", "a@example.xn--p1ai", []string{"a@example.xn--p1ai"}},
		{"in json", `{"email":"user@example.com","id":1}`, []string{"user@example.com"}},
		{"angle brackets", "Jane <jane@example.com>", []string{"jane@example.com"}},
		{"mailto", "mailto:user@example.com?subject=x", []string{"user@example.com"}},
		{"csv", `1,"Jane",jane@example.com,2024-01-01`, []string{"jane@example.com"}},
		{"copy line", "1\tJane\tjane@example.com\t\\N\n", []string{"jane@example.com"}},
		{"after json escape", `"line\njane@example.com"`, []string{"jane@example.com"}},
		{"after unicode escape", `"\u0041bc@example.com"`, []string{"bc@example.com"}},
		{"escaped backslash is not an escape", `"\\nuser@example.com"`, []string{"nuser@example.com"}},
		{"trailing label not a tld", "user@example.com.123 x", []string{"user@example.com"}},
		{"several", "a@x.io, b@y.io; c@z.io", []string{"a@x.io", "b@y.io", "c@z.io"}},
		{"double at", "a@b@example.com", []string{"b@example.com"}},
		// near misses
		{"no tld", "a@b", nil},
		{"localhost", "root@localhost", nil},
		{"no local", "@example.com", nil},
		{"handle", "ping @jane.doe please", nil},
		{"empty label", "user@.example.com", nil},
		{"one letter tld", "user@example.c", nil},
		{"numeric tld", "user@10.0.0.1", nil},
		{"double dot local", "a..b@example.com", nil},
		{"trailing dot local", "a.@example.com", nil},
		{"hyphen label", "user@-example.com", nil},
		{"long local", string(make65('a')) + "@example.com", nil},
		{"version string", "go@1.26.8", nil},
	})
}

func make65(c byte) []byte {
	b := make([]byte, 65)
	for i := range b {
		b[i] = c
	}
	return b
}
