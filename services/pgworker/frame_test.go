package pgworker

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A session's target buffers, handed on as it ends, carry nothing of it
// into the next session: neither bytes read ahead from its target, nor
// bytes it had not flushed, nor a frame put back.
func TestServerBuffersCarryNothingOver(t *testing.T) {
	frame := func(typ byte, body string) []byte {
		return append([]byte{typ, 0, 0, 0, byte(4 + len(body))}, body...)
	}
	first := &bytes.Buffer{}
	first.Write(frame('D', "alice's row"))
	first.Write(frame('D', "read ahead"))
	a := takeServerBuffers(first, 1<<20)
	typ, body, _, err := a.r.next()
	require.NoError(t, err)
	assert.Equal(t, byte('D'), typ)
	assert.Equal(t, "alice's row", string(body))
	require.True(t, a.r.buffered(), "the next frame was read ahead")
	a.r.unread([]byte("put back"))
	_, _ = a.w.WriteString("not flushed")
	a.release()

	second := &bytes.Buffer{}
	second.Write(frame('C', "SELECT 1"))
	b := takeServerBuffers(second, 1<<20)
	defer b.release()
	assert.False(t, b.r.buffered())
	assert.Zero(t, b.w.Buffered())
	typ, body, _, err = b.r.next()
	require.NoError(t, err)
	assert.Equal(t, byte('C'), typ)
	assert.Equal(t, "SELECT 1", string(body))
	require.NoError(t, b.w.Flush())
	assert.Equal(t, "", second.String(), "nothing of the first session was written")
}
