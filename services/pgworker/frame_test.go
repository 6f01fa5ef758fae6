package pgworker

import (
	"bytes"
	"io"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func testFrame(typ byte, body string) []byte {
	return append([]byte{typ, 0, 0, 0, byte(4 + len(body))}, body...)
}

// A session's buffers, handed on as it ends, carry nothing of it into the
// next session: neither bytes read ahead from its target, nor bytes it had
// not flushed, nor a frame put back.
func TestServerBuffersCarryNothingOver(t *testing.T) {
	first := &bytes.Buffer{}
	first.Write(testFrame('D', "alice's row"))
	first.Write(testFrame('D', "read ahead"))
	r, w := newReader(first, serverReaders, 1<<20), newWriter(first, serverWriters)
	typ, body, _, err := r.next()
	require.NoError(t, err)
	assert.Equal(t, byte('D'), typ)
	assert.Equal(t, "alice's row", string(body))
	require.True(t, r.buffered(), "the next frame was read ahead")
	r.unread([]byte("put back"))
	_, _ = w.Write([]byte("not flushed"))
	r.release()
	w.release()

	second := &bytes.Buffer{}
	second.Write(testFrame('C', "SELECT 1"))
	r, w = newReader(second, serverReaders, 1<<20), newWriter(second, serverWriters)
	defer r.release()
	defer w.release()
	assert.False(t, r.buffered())
	assert.Zero(t, w.Buffered())
	typ, body, _, err = r.next()
	require.NoError(t, err)
	assert.Equal(t, byte('C'), typ)
	assert.Equal(t, "SELECT 1", string(body))
	require.NoError(t, w.Flush())
	assert.Equal(t, "", second.String(), "nothing of the first session was written")
}

// trickle hands out its input a few bytes per read, as a slow network
// would, and counts the reads.
type trickle struct {
	data  []byte
	per   int
	reads int
}

func (t *trickle) Read(b []byte) (int, error) {
	t.reads++
	if len(t.data) == 0 {
		return 0, io.EOF
	}
	n := min(len(b), t.per, len(t.data))
	copy(b, t.data[:n])
	t.data = t.data[n:]
	return n, nil
}

// A parked reader holds no buffer, loses no byte, and reads a message
// that fits its small array in one read.
func TestParkedReaderLosesNothing(t *testing.T) {
	var in []byte
	in = append(in, testFrame('Z', "I")...)
	big := bytes.Repeat([]byte("x"), 3*serverReaders.parked)
	in = append(in, testFrame('D', string(big[:200]))...)
	in = append(in, 'D', 0, 0, byte((len(big)+4)>>8), byte(len(big)+4))
	in = append(in, big...)
	in = append(in, testFrame('C', "SELECT 2")...)

	for _, per := range []int{1, 3, 100, 1 << 20} {
		src := &trickle{data: append([]byte(nil), in...), per: per}
		r := newReader(src, serverReaders, 1<<20)
		var got []string
		for {
			r.park()
			if !r.buffered() {
				assert.Nil(t, r.r, "a parked reader with nothing buffered holds no buffer")
				assert.Nil(t, r.buf, "nor a frame buffer")
			}
			typ, body, _, err := r.next()
			if err == io.EOF {
				break
			}
			require.NoError(t, err, "per %d", per)
			got = append(got, string(typ)+":"+string(body[:min(len(body), 8)])+":"+string(rune('0'+len(body)%10)))
		}
		r.release()
		assert.Equal(t, []string{"Z:I:1", "D:xxxxxxxx:0", "D:xxxxxxxx:" + string(rune('0'+len(big)%10)), "C:SELECT 2:8"}, got, "per %d", per)
	}

	// A whole small message comes in the parked reader's one read.
	src := &trickle{data: testFrame('Z', "I"), per: 1 << 20}
	r := newReader(src, serverReaders, 1<<20)
	r.park()
	_, _, _, err := r.next()
	require.NoError(t, err)
	assert.Equal(t, 1, src.reads)
}

// A parked writer holds no buffer, and writes on as if it had never let
// go of it.
func TestParkedWriter(t *testing.T) {
	var out bytes.Buffer
	w := newWriter(&out, clientWriters)
	_, _ = w.Write([]byte("a"))
	w.park()
	assert.NotNil(t, w.w, "a writer holding bytes keeps its buffer")
	require.NoError(t, w.Flush())
	w.park()
	assert.Nil(t, w.w)
	assert.Zero(t, w.Buffered())
	require.NoError(t, w.Flush())
	_, _ = w.Write([]byte("b"))
	require.NoError(t, w.Flush())
	assert.Equal(t, "ab", out.String())
}

// A writer or a reader let go of for good refuses to write or read, and
// never panics: a shutdown may come after its session has ended.
func TestReleasedBuffersRefuse(t *testing.T) {
	var out bytes.Buffer
	w := newWriter(&out, clientWriters)
	w.release()
	_, err := w.Write([]byte("late"))
	assert.ErrorIs(t, err, errReleased)
	assert.NoError(t, w.Flush())
	assert.Zero(t, out.Len())

	r := newReader(bytes.NewBufferString("x"), serverReaders, 1<<20)
	r.release()
	_, _, _, err = r.next()
	assert.ErrorIs(t, err, io.EOF)
}
