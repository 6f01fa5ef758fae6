package pgworker

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
)

// errTooLarge is returned for a message longer than the configured maximum.
var errTooLarge = errors.New("message too large")

// reader reads PostgreSQL protocol frames: a type byte and a 4-byte length
// that counts itself. The returned body is valid until the next call.
type reader struct {
	r   *bufio.Reader
	pre *prefixed
	buf []byte
	max int
	// torn says a read stopped inside a message: the stream is out of
	// step and the connection must not be reused.
	torn bool
}

// serverBuffers are the buffered reader and writer a session uses on its
// target connection (32 KiB each). A session hands them to the next one as
// it ends: with a connection per statement, allocating and clearing them
// for each was a measurable share of a connection's cost.
type serverBuffers struct {
	r *reader
	w *bufio.Writer
}

var serverBufferPool = sync.Pool{New: func() any {
	return &serverBuffers{r: newReader(nil, 32<<10, 0), w: bufio.NewWriterSize(nil, 32<<10)}
}}

// maxPooledFrame bounds the frame buffer a pooled reader keeps: one grown
// for a large message is let go.
const maxPooledFrame = 64 << 10

// takeServerBuffers returns buffers on conn, with nothing of an earlier
// session's in them.
func takeServerBuffers(conn io.ReadWriter, max int) *serverBuffers {
	b := serverBufferPool.Get().(*serverBuffers)
	b.r.pre.src, b.r.pre.pre = conn, nil
	b.r.r.Reset(b.r.pre)
	b.r.max, b.r.torn = max, false
	b.w.Reset(conn)
	return b
}

// release hands the buffers to the next session; the session that took
// them must not use them any more.
func (b *serverBuffers) release() {
	b.r.pre.src, b.r.pre.pre = nil, nil
	b.r.r.Reset(b.r.pre)
	if cap(b.r.buf) > maxPooledFrame {
		b.r.buf = nil
	}
	b.w.Reset(nil)
	serverBufferPool.Put(b)
}

func newReader(r io.Reader, size, max int) *reader {
	p := &prefixed{src: r}
	return &reader{r: bufio.NewReaderSize(p, size), pre: p, max: max}
}

// prefixed reads pre, then src.
type prefixed struct {
	pre []byte
	src io.Reader
}

func (p *prefixed) Read(b []byte) (int, error) {
	if len(p.pre) > 0 {
		n := copy(b, p.pre)
		p.pre = p.pre[n:]
		return n, nil
	}
	return p.src.Read(b)
}

// unread puts b, read from r.r until its buffer was empty, back in front
// of what is still to be read.
func (r *reader) unread(b []byte) {
	if len(b) > 0 {
		r.pre.pre = append(b, r.pre.pre...)
	}
}

// next returns the message type, the body, and the whole frame (header and
// body) for forwarding untouched.
func (r *reader) next() (typ byte, body, frame []byte, err error) {
	hdr, err := r.r.Peek(5)
	if err != nil {
		return 0, nil, nil, err
	}
	typ = hdr[0]
	n := int(binary.BigEndian.Uint32(hdr[1:5]))
	if n < 4 {
		return 0, nil, nil, fmt.Errorf("malformed message length %d", n)
	}
	if n-4 > r.max {
		return 0, nil, nil, fmt.Errorf("%w: %d bytes (limit %d)", errTooLarge, n-4, r.max)
	}
	total := n + 1
	if cap(r.buf) < total {
		r.buf = make([]byte, total, max(total, 8192))
	}
	r.buf = r.buf[:total]
	if n, err := io.ReadFull(r.r, r.buf); err != nil {
		r.torn = r.torn || n > 0
		return 0, nil, nil, err
	}
	return typ, r.buf[5:], r.buf, nil
}

// startup reads an untyped startup-phase message (length, then body).
func (r *reader) startup() (body []byte, err error) {
	hdr, err := r.r.Peek(4)
	if err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint32(hdr))
	if n < 8 || n > 10000 {
		return nil, fmt.Errorf("malformed startup message length %d", n)
	}
	if cap(r.buf) < n {
		r.buf = make([]byte, n)
	}
	r.buf = r.buf[:n]
	if _, err := io.ReadFull(r.r, r.buf); err != nil {
		return nil, err
	}
	return r.buf[4:], nil
}

// buffered reports whether more input is already buffered (so that a flush
// can wait).
func (r *reader) buffered() bool { return r.r.Buffered() > 0 }

// encoder is a pgproto3 message.
type encoder interface {
	Encode(dst []byte) ([]byte, error)
}

// writeMsg encodes and writes one message.
func writeMsg(w *bufio.Writer, scratch *[]byte, m encoder) error {
	b, err := m.Encode((*scratch)[:0])
	if err != nil {
		return err
	}
	*scratch = b
	_, err = w.Write(b)
	return err
}
