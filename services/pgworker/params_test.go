package pgworker

import (
	"encoding/binary"
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// bindOf is a Bind from its statement name on, as a client sends it.
func bindOf(formats []int16, params [][]byte) []byte {
	b := append([]byte("stmt"), 0)
	b = binary.BigEndian.AppendUint16(b, uint16(len(formats)))
	for _, f := range formats {
		b = binary.BigEndian.AppendUint16(b, uint16(f))
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(params)))
	for _, p := range params {
		if p == nil {
			b = binary.BigEndian.AppendUint32(b, math.MaxUint32)
			continue
		}
		b = binary.BigEndian.AppendUint32(b, uint32(len(p)))
		b = append(b, p...)
	}
	return binary.BigEndian.AppendUint16(b, 0)
}

func be(n int, v uint64) []byte {
	out := make([]byte, 8)
	binary.BigEndian.PutUint64(out, v)
	return out[8-n:]
}

func TestShownBindDecodesWhatAnApproverReads(t *testing.T) {
	neg := int64(-42)
	params := [][]byte{
		be(8, uint64(neg)), be(4, 7), be(2, 3), {1}, be(8, math.Float64bits(1.5)),
		[]byte("O'Brien"), nil, {0xde, 0xad},
		{0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0},
		be(4, uint64(uint32(9468))), be(8, uint64(818_071_445_000_000)), append([]byte{1}, `{"a":1}`...),
		be(4, 5), be(4, 5),
	}
	types := []uint32{oidInt8, oidInt4, oidInt2, oidBool, oidFloat8, oidText, oidInt4, oidBytea, oidUUID, oidDate, oidTimestamptz, oidJSONB, 1700}
	formats := make([]int16, len(params))
	for i := range formats {
		formats[i] = 1
	}
	got, err := shownBind("UPDATE t SET ...", bindOf(formats, params), types)
	require.NoError(t, err)
	assert.Equal(t, `UPDATE t SET ...
-- bound parameters:
-- $1 = -42
-- $2 = 7
-- $3 = 3
-- $4 = true
-- $5 = 1.5
-- $6 = 'O''Brien'
-- $7 = NULL
-- $8 = '\xdead'::bytea
-- $9 = '12345678-9abc-def0-1234-56789abcdef0'::uuid
-- $10 = '2025-12-03'::date
-- $11 = '2025-12-03 10:04:05Z'::timestamptz
-- $12 = '{"a":1}'::jsonb
-- $13 = '\x00000005' (binary, 4 bytes, type oid 1700, of a type Sluice does not decode)
-- $14 = '\x00000005' (binary, 4 bytes, type oid 0, of a type the server has not described)`, got)

	// Text format, one code for all; a value cannot start a line of its own.
	got, err = shownBind("SELECT $1, $2", bindOf([]int16{0}, [][]byte{[]byte("x'\n-- $2 = 'ok"), {0xff}}), nil)
	require.NoError(t, err)
	assert.Equal(t, "SELECT $1, $2\n-- bound parameters:\n-- $1 = E'x\\'\\n-- $2 = \\'ok'\n-- $2 = '\\xff' (not UTF-8 text: its bytes)", got)

	// A length that does not match its type is shown as bytes, not guessed.
	got, err = shownBind("SELECT $1", bindOf([]int16{1}, [][]byte{{1, 2, 3}}), []uint32{oidInt4})
	require.NoError(t, err)
	assert.Contains(t, got, `-- $1 = '\x010203' (binary, 3 bytes, type oid 23`)

	_, err = shownBind("SELECT $1", bindOf(nil, [][]byte{[]byte("x")})[:12], nil)
	assert.Error(t, err, "a cut Bind")
}
