package pgworker

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"sluice.dev/sluice/libs/sqlclass"
)

// PostgreSQL type oids whose binary form an approver is shown decoded.
const (
	oidBool        = 16
	oidBytea       = 17
	oidName        = 19
	oidInt8        = 20
	oidInt2        = 21
	oidInt4        = 23
	oidText        = 25
	oidOid         = 26
	oidJSON        = 114
	oidXML         = 142
	oidFloat4      = 700
	oidFloat8      = 701
	oidUnknown     = 705
	oidBpchar      = 1042
	oidVarchar     = 1043
	oidDate        = 1082
	oidTimestamp   = 1114
	oidTimestamptz = 1184
	oidUUID        = 2950
	oidJSONB       = 3802
)

// paramTypes are a prepared statement's parameter types as far as the
// worker knows them: those its Parse named, then those the server
// described (ParameterDescription), which the server's goroutine stores.
type paramTypes struct {
	p atomic.Pointer[[]uint32]
}

func (t *paramTypes) set(oids []uint32) { t.p.Store(&oids) }

func (t *paramTypes) get() []uint32 {
	if t == nil {
		return nil
	}
	if p := t.p.Load(); p != nil {
		return *p
	}
	return nil
}

// parseParamTypes reads the parameter type oids that follow a Parse's
// query string.
func parseParamTypes(b []byte) []uint32 {
	if len(b) < 2 {
		return nil
	}
	n := int(binary.BigEndian.Uint16(b))
	b = b[2:]
	if len(b) < 4*n {
		return nil
	}
	out := make([]uint32, n)
	for i := range out {
		out[i] = binary.BigEndian.Uint32(b[4*i:])
	}
	return out
}

// shownBind is a held statement as its approver reads it: the text, then
// every parameter the Bind (from its statement name on) supplies, decoded
// by its type where the worker knows it.
func shownBind(text string, bind []byte, types []uint32) (string, error) {
	bad := errors.New("malformed Bind")
	_, b, err := cstring(bind)
	if err != nil || len(b) < 2 {
		return "", bad
	}
	nf := int(binary.BigEndian.Uint16(b))
	if len(b) < 2+2*nf+2 {
		return "", bad
	}
	formats := b[2 : 2+2*nf]
	b = b[2+2*nf:]
	np := int(binary.BigEndian.Uint16(b))
	b = b[2:]
	params := make([]string, 0, np)
	for i := 0; i < np; i++ {
		if len(b) < 4 {
			return "", bad
		}
		l := int(int32(binary.BigEndian.Uint32(b)))
		b = b[4:]
		if l < 0 {
			params = append(params, "NULL")
			continue
		}
		if l > len(b) {
			return "", bad
		}
		v := b[:l]
		b = b[l:]
		format := int16(0)
		switch {
		case nf == 1:
			format = int16(binary.BigEndian.Uint16(formats))
		case nf > i:
			format = int16(binary.BigEndian.Uint16(formats[2*i:]))
		}
		var oid uint32
		if i < len(types) {
			oid = types[i]
		}
		if format == 0 {
			params = append(params, textParam(v))
		} else {
			params = append(params, binaryParam(v, oid))
		}
	}
	return sqlclass.Shown(text, params), nil
}

// textParam is a parameter sent as text: a literal, whatever its type.
func textParam(v []byte) string {
	if !utf8.Valid(v) {
		return "'\\x" + hex.EncodeToString(v) + "' (not UTF-8 text: its bytes)"
	}
	return sqlclass.Literal(string(v))
}

// binaryParam is a parameter sent in binary: decoded for the types an
// approver most often meets, its bytes with its type oid otherwise.
func binaryParam(v []byte, oid uint32) string {
	be := binary.BigEndian
	switch {
	case oid == oidBool && len(v) == 1 && v[0] <= 1:
		return strconv.FormatBool(v[0] == 1)
	case oid == oidInt2 && len(v) == 2:
		return strconv.Itoa(int(int16(be.Uint16(v))))
	case oid == oidInt4 && len(v) == 4:
		return strconv.Itoa(int(int32(be.Uint32(v))))
	case oid == oidInt8 && len(v) == 8:
		return strconv.FormatInt(int64(be.Uint64(v)), 10)
	case oid == oidOid && len(v) == 4:
		return strconv.FormatUint(uint64(be.Uint32(v)), 10)
	case oid == oidFloat4 && len(v) == 4:
		return floatLiteral(float64(math.Float32frombits(be.Uint32(v))), 32)
	case oid == oidFloat8 && len(v) == 8:
		return floatLiteral(math.Float64frombits(be.Uint64(v)), 64)
	case (oid == oidText || oid == oidVarchar || oid == oidBpchar || oid == oidName || oid == oidJSON || oid == oidXML || oid == oidUnknown) && utf8.Valid(v):
		return sqlclass.Literal(string(v))
	case oid == oidJSONB && len(v) > 0 && v[0] == 1 && utf8.Valid(v[1:]):
		return sqlclass.Literal(string(v[1:])) + "::jsonb"
	case oid == oidBytea:
		return "'\\x" + hex.EncodeToString(v) + "'::bytea"
	case oid == oidUUID && len(v) == 16:
		h := hex.EncodeToString(v)
		return "'" + h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:] + "'::uuid"
	case oid == oidDate && len(v) == 4:
		days := int32(be.Uint32(v))
		if days == math.MaxInt32 || days == math.MinInt32 {
			return map[bool]string{true: "'infinity'::date", false: "'-infinity'::date"}[days > 0]
		}
		return "'" + pgEpoch.AddDate(0, 0, int(days)).Format("2006-01-02") + "'::date"
	case (oid == oidTimestamp || oid == oidTimestamptz) && len(v) == 8:
		us := int64(be.Uint64(v))
		kind := map[bool]string{true: "timestamptz", false: "timestamp"}[oid == oidTimestamptz]
		if us == math.MaxInt64 || us == math.MinInt64 {
			return map[bool]string{true: "'infinity'::", false: "'-infinity'::"}[us > 0] + kind
		}
		t := time.Unix(pgEpoch.Unix()+us/1e6, (us%1e6)*1e3).UTC()
		if oid == oidTimestamptz {
			return "'" + t.Format("2006-01-02 15:04:05.999999Z07:00") + "'::" + kind
		}
		return "'" + t.Format("2006-01-02 15:04:05.999999") + "'::" + kind
	}
	what := "of a type Sluice does not decode"
	if oid == 0 {
		what = "of a type the server has not described"
	}
	return fmt.Sprintf("'\\x%s' (binary, %d bytes, type oid %d, %s)", hex.EncodeToString(v), len(v), oid, what)
}

var pgEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

func floatLiteral(f float64, bits int) string {
	switch {
	case math.IsNaN(f):
		return "'NaN'"
	case math.IsInf(f, 1):
		return "'Infinity'"
	case math.IsInf(f, -1):
		return "'-Infinity'"
	}
	return strconv.FormatFloat(f, 'g', -1, bits)
}
