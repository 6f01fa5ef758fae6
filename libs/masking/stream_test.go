package masking

import (
	"bytes"
	"math/rand"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// streamAll feeds s in the given chunk sizes and flushes at the end.
func streamAll(t *testing.T, m *Masker, in []byte, sizes func() int) ([]byte, *Stream) {
	t.Helper()
	st := m.NewStream()
	var out []byte
	for len(in) > 0 {
		n := min(sizes(), len(in))
		out = append(out, st.Write(in[:n])...)
		in = in[n:]
	}
	out = append(out, st.Flush()...)
	return out, st
}

func TestStreamFindsValuesAcrossChunks(t *testing.T) {
	m, err := New(Config{})
	require.NoError(t, err)
	key := "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\nQyNTUxOQAAACBGy0pW1v0s1mXk1Z9eJ2mX1u7cA9S2W2u3a4Zz1m6cWQAAAJjQ2r6Z0Nq+\n-----END OPENSSH PRIVATE KEY-----\n"
	env := "DATABASE_URL=postgres://app@db/prod\nCONTACT=ada.lovelace@example.com\nCARD=4111 1111 1111 1111\nAWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE\n" + key + "DONE=1\n"
	whole := m.AppendMasked(nil, []byte(env), nil)
	require.NotEqual(t, env, string(whole))
	rnd := rand.New(rand.NewSource(1))
	for _, sizes := range []func() int{
		func() int { return 1 },
		func() int { return 3 },
		func() int { return 7 },
		func() int { return 1 + rnd.Intn(40) },
		func() int { return 4096 },
	} {
		out, st := streamAll(t, m, []byte(env), sizes)
		s := string(out)
		for _, secret := range []string{"ada.lovelace@example.com", "4111 1111 1111 1111", "AKIAIOSFODNN7EXAMPLE", "b3BlbnNzaC1rZXktdjEAAAAABG5vbmU", "QyNTUxOQAAACBGy0pW1v0s1mXk1Z9eJ2mX1u7c"} {
			assert.NotContains(t, s, secret)
		}
		assert.Contains(t, s, "DATABASE_URL=postgres://app@db/prod")
		assert.Contains(t, s, "DONE=1\n")
		assert.Equal(t, string(whole), s, "chunking changes nothing")
		assert.Positive(t, st.Counts.Total())
	}
}

func TestStreamReleasesLinesAndBoundsWhatItHolds(t *testing.T) {
	m, err := New(Config{})
	require.NoError(t, err)
	st := m.NewStream()
	assert.Equal(t, "line one\n", string(st.Write([]byte("line one\nline t"))))
	assert.Equal(t, len("line t"), st.Held())
	assert.Equal(t, "line two\n", string(st.Write([]byte("wo\n"))))
	// A long line without a newline is released up to its last blank.
	long := bytes.Repeat([]byte("word "), MaxLine/5+10)
	out := st.Write(long)
	assert.NotEmpty(t, out)
	assert.LessOrEqual(t, st.Held(), MaxLine)
	assert.Equal(t, string(long), string(out)+string(st.Flush()))

	// A long line whose values are spaced digit groups or that has no
	// blank at all: no value is split.
	st = m.NewStream()
	line := strings.Repeat("x", MaxLine) + " card 4111 1111 1111 1111"
	out = append(st.Write([]byte(line)), st.Write([]byte(" and more\n"))...)
	assert.NotContains(t, string(out), "1111 1111")
	jwt := "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MTcwMDAwMDAwMH0." + strings.Repeat("A", 300)
	minified := `{"a":"` + strings.Repeat("b", MaxLine+100) + `","token":"` + jwt + `"}`
	st = m.NewStream()
	out = nil
	for i := 0; i < len(minified); i += 1000 {
		out = append(out, st.Write([]byte(minified[i:min(i+1000, len(minified))]))...)
	}
	out = append(out, st.Flush()...)
	assert.NotContains(t, string(out), "eyJzdWIiOiJhbGljZSIs", "a token in a long line without blanks is masked")

	// A key block that never ends: held up to MaxHold, then masked whole,
	// and whatever follows up to its END line too.
	st = m.NewStream()
	begin := "-----BEGIN RSA PRIVATE KEY-----\n"
	assert.Empty(t, st.Write([]byte(begin)))
	body := strings.Repeat("MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw\n", MaxHold/60)
	out = st.Write([]byte(body))
	assert.Contains(t, string(out), WholeMarker)
	assert.NotContains(t, string(out), "MIIEow")
	assert.Empty(t, st.Write([]byte("MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw\n")))
	assert.Equal(t, "\nafter\n", string(st.Write([]byte("-----END RSA PRIVATE KEY-----\nafter\n"))), "the block ends with its END line")
}
