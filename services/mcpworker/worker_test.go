package mcpworker

import (
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"sluice.dev/sluice/libs/masking"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
)

func TestSQLParamsKeepEveryDigitAndHashNeverTheValues(t *testing.T) {
	params, hash, err := sqlParams(json.RawMessage(`{"sql":"x","params":[12345678901234567890, "a'b", null, true, 1.5, {"k":[1,2]}]}`))
	require.NoError(t, err)
	require.Len(t, params, 6)
	assert.Equal(t, "12345678901234567890", string(params[0]), "a big integer keeps every digit")
	assert.Equal(t, "a'b", string(params[1]))
	assert.Nil(t, params[2], "null is NULL")
	assert.Equal(t, "true", string(params[3]))
	assert.Equal(t, "1.5", string(params[4]))
	assert.JSONEq(t, `{"k":[1,2]}`, string(params[5]))
	assert.Len(t, hash, 64)
	assert.NotContains(t, hash, "a'b")

	_, other, err := sqlParams(json.RawMessage(`{"params":[12345678901234567891, "a'b", null, true, 1.5, {"k":[1,2]}]}`))
	require.NoError(t, err)
	assert.NotEqual(t, hash, other, "another value is another approval")
	// NULL and the empty string are different parameters.
	_, h1, _ := sqlParams(json.RawMessage(`{"params":[null]}`))
	_, h2, _ := sqlParams(json.RawMessage(`{"params":[""]}`))
	assert.NotEqual(t, h1, h2)
	// Value boundaries are part of the hash: ["ab","c"] is not ["a","bc"].
	_, h3, _ := sqlParams(json.RawMessage(`{"params":["ab","c"]}`))
	_, h4, _ := sqlParams(json.RawMessage(`{"params":["a","bc"]}`))
	assert.NotEqual(t, h3, h4)

	none, hash, err := sqlParams(json.RawMessage(`{"sql":"SELECT 1"}`))
	require.NoError(t, err)
	assert.Nil(t, none)
	assert.Empty(t, hash)
}

func TestJSONValues(t *testing.T) {
	assert.Equal(t, json.Number("42"), jsonValue(23, []byte("42")))
	assert.Equal(t, json.Number("-1.5"), jsonValue(1700, []byte("-1.5")))
	assert.Equal(t, "NaN", jsonValue(701, []byte("NaN")), "not a JSON number: text")
	assert.Equal(t, true, jsonValue(16, []byte("t")))
	// A value masking changed is text, whatever its column's type.
	assert.Equal(t, "[redacted]", jsonValue(20, []byte("[redacted]")))
	assert.Equal(t, `{"a":1}`, jsonValue(3802, []byte(`{"a":1}`)))
}

func TestOutputIsMaskedWholeBeforeItIsCut(t *testing.T) {
	m, err := masking.New(masking.Config{Detectors: []string{"email"}, Action: masking.Action{Kind: "redact"}})
	require.NoError(t, err)
	c := &capped{max: 40 + outputSlack}
	line := strings.Repeat("x", 30) + " ada.lovelace@example.com and more\n"
	_, _ = c.Write([]byte(line))
	var counts []*sessionv1.MaskCount
	out, truncated := finish(m, c, 40, "stdout", &counts)
	assert.True(t, truncated)
	assert.LessOrEqual(t, len(out), 40)
	assert.NotContains(t, out, "ada.love", "no part of a value cut by the limit leaks")
	require.Len(t, counts, 1)
	assert.Equal(t, "stdout", counts[0].GetField())

	// A value the capture cut in half is dropped, never released unmasked.
	c = &capped{max: 40}
	_, _ = c.Write([]byte("line one\ncontact ada.lovelace@example.com\n"))
	counts = nil
	out, truncated = finish(m, c, 1000, "stdout", &counts)
	assert.True(t, truncated)
	assert.Equal(t, "line one\n", out)

	// Bytes beyond what is kept are counted, not kept.
	c = &capped{max: 8}
	n, err := c.Write([]byte("0123456789"))
	require.NoError(t, err)
	assert.Equal(t, 10, n)
	assert.Equal(t, "01234567", string(c.bytes()))
	assert.True(t, c.over)

	// A cut never splits a character.
	c = &capped{max: 100}
	_, _ = c.Write([]byte("ééééé"))
	out, truncated = finish(nil, c, 3, "stdout", &counts)
	assert.True(t, truncated)
	assert.Equal(t, "é", out)
}

func TestOrigins(t *testing.T) {
	w := &Worker{cfg: Config{AllowedOrigins: []string{"https://console.example.com"}}}
	req := func(origin string) bool {
		r := httptest.NewRequest("POST", "http://127.0.0.1:8080/mcp", nil)
		if origin != "" {
			r.Header.Set("Origin", origin)
		}
		return w.originAllowed(r)
	}
	assert.True(t, req(""), "clients that are not browsers send no Origin")
	assert.True(t, req("http://127.0.0.1:8080"), "the endpoint's own origin")
	assert.True(t, req("https://console.example.com"))
	assert.False(t, req("http://attacker.example"))
	assert.False(t, req("http://127.0.0.1:9999"))
	assert.False(t, req("null"))

	w.cfg.PublicURL = "https://sluice.example.com/mcp"
	assert.True(t, req("https://sluice.example.com"))
	assert.False(t, req("http://127.0.0.1:8080"), "behind a public URL, only its origin")
}

func TestRepeatedKeys(t *testing.T) {
	assert.True(t, repeatedKeys(json.RawMessage(`{"max_rows": 5, "sql": "x", "max_rows": 5000}`)))
	assert.False(t, repeatedKeys(json.RawMessage(`{"max_rows": 5, "sql": "x", "params": [{"a":1,"a":2}]}`)), "only the top level is what tools and policies read")
	assert.False(t, repeatedKeys(json.RawMessage(`{}`)))
	assert.False(t, repeatedKeys(nil))
}
