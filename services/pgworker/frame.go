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
//
// A reader with a pool lets go of its buffers while it waits for input
// that may not come for a long time (park: an idle session's client and
// target connections): they go back to their pools, the wait reads into a
// small array of the reader's own, and the buffers are taken again once
// input has come. Thousands of idle sessions then hold kilobytes each, not
// the tens of kilobytes their buffers take.
type reader struct {
	r   *bufio.Reader // nil while parked
	pre *prefixed
	buf []byte
	max int
	// torn says a read stopped inside a message: the stream is out of
	// step and the connection must not be reused.
	torn bool
	// pool is where r comes from and returns to; nil: never parked.
	pool *readerPool
	// wait is what a parked reader reads into (pool.parked bytes, made at
	// its first park).
	wait []byte
}

// Pools of the buffers readers and writers let go of: the client side's
// and the target side's, by size. A parked reader's first read takes
// `parked` bytes: a typical statement (client side) or answer of a few
// rows (target side) whole, so that a busy session's park between
// statements costs no extra system call.
var (
	clientReaders = &readerPool{size: 8 << 10, parked: 1 << 10}
	serverReaders = &readerPool{size: 32 << 10, parked: 4 << 10}
	clientWriters = &writerPool{size: 4 << 10}
	serverWriters = &writerPool{size: 32 << 10}
	// frames holds readers' frame buffers of the usual size.
	frames = sync.Pool{New: func() any { return new([frameSize]byte) }}
)

// frameSize is a reader's frame buffer unless a larger message needs more.
const frameSize = 8 << 10

type readerPool struct {
	size, parked int
	p            sync.Pool
}

func (p *readerPool) get(src io.Reader) *bufio.Reader {
	if r, ok := p.p.Get().(*bufio.Reader); ok {
		r.Reset(src)
		return r
	}
	return bufio.NewReaderSize(src, p.size)
}

func (p *readerPool) put(r *bufio.Reader) {
	r.Reset(nil)
	p.p.Put(r)
}

type writerPool struct {
	size int
	p    sync.Pool
}

func (p *writerPool) get(dst io.Writer) *bufio.Writer {
	if w, ok := p.p.Get().(*bufio.Writer); ok {
		w.Reset(dst)
		return w
	}
	return bufio.NewWriterSize(dst, p.size)
}

func (p *writerPool) put(w *bufio.Writer) {
	w.Reset(nil)
	p.p.Put(w)
}

// newReader reads frames from src with buffers from pool, taken at once.
func newReader(src io.Reader, pool *readerPool, max int) *reader {
	p := &prefixed{src: src}
	return &reader{r: pool.get(p), pre: p, max: max, pool: pool}
}

// park lets go of the reader's buffers if nothing is buffered; the next
// read takes them again.
func (r *reader) park() {
	if r.pool == nil || r.r == nil || r.r.Buffered() > 0 || len(r.pre.pre) > 0 {
		return
	}
	r.pool.put(r.r)
	r.r = nil
	r.dropFrame()
	if r.wait == nil {
		r.wait = make([]byte, r.pool.parked)
	}
}

// release lets go of the reader's buffers for good (its session ends),
// whatever they hold.
func (r *reader) release() {
	if r.pool != nil && r.r != nil {
		r.pool.put(r.r)
	}
	r.r = nil
	if r.pre != nil {
		r.pre.src, r.pre.pre = nil, nil
	}
	r.dropFrame()
}

func (r *reader) dropFrame() {
	if cap(r.buf) == frameSize {
		frames.Put((*[frameSize]byte)(r.buf[:frameSize]))
	}
	r.buf = nil
}

// take makes a parked reader read again: it waits for input with its own
// small array, then takes its buffers, in front of which the input goes.
func (r *reader) take() error {
	if r.r != nil {
		return nil
	}
	for range 100 {
		n, err := r.pre.Read(r.wait)
		if n > 0 {
			// An error with the input recurs on the next read.
			r.pre.pre = r.wait[:n]
			r.r = r.pool.get(r.pre)
			return nil
		}
		if err != nil {
			return err
		}
	}
	return io.ErrNoProgress
}

// input is what the reader reads from, buffers taken.
func (r *reader) input() (io.Reader, error) {
	if err := r.take(); err != nil {
		return nil, err
	}
	return r.r, nil
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
	if p.src == nil {
		return 0, io.EOF // released
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
	if err := r.take(); err != nil {
		return 0, nil, nil, err
	}
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
		if total <= frameSize && r.buf == nil {
			r.buf = frames.Get().(*[frameSize]byte)[:]
		} else {
			r.dropFrame()
			r.buf = make([]byte, total, max(total, frameSize))
		}
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
	if err := r.take(); err != nil {
		return nil, err
	}
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
func (r *reader) buffered() bool {
	return (r.pre != nil && len(r.pre.pre) > 0) || (r.r != nil && r.r.Buffered() > 0)
}

// writer is a buffered writer that lets go of its buffer while it holds
// nothing (park), taking one from its pool at the next write.
type writer struct {
	w    *bufio.Writer // nil while parked
	dst  io.Writer
	pool *writerPool
}

func newWriter(dst io.Writer, pool *writerPool) *writer {
	return &writer{dst: dst, pool: pool}
}

// errReleased is a write after the session let go of its writer (a late
// shutdown of a session that already ended).
var errReleased = errors.New("the session has ended")

func (w *writer) Write(b []byte) (int, error) {
	if w.dst == nil {
		return 0, errReleased
	}
	if w.w == nil {
		w.w = w.pool.get(w.dst)
	}
	return w.w.Write(b)
}

func (w *writer) Flush() error {
	if w.w == nil {
		return nil
	}
	return w.w.Flush()
}

// Buffered is how many bytes are written and not flushed.
func (w *writer) Buffered() int {
	if w.w == nil {
		return 0
	}
	return w.w.Buffered()
}

// park lets go of the buffer if it holds nothing.
func (w *writer) park() {
	if w.w != nil && w.w.Buffered() == 0 {
		w.pool.put(w.w)
		w.w = nil
	}
}

// release lets go of the buffer for good, whatever it holds.
func (w *writer) release() {
	if w.w != nil {
		w.pool.put(w.w)
		w.w = nil
	}
	w.dst = nil
}

// encoder is a pgproto3 message.
type encoder interface {
	Encode(dst []byte) ([]byte, error)
}

// writeMsg encodes and writes one message.
func writeMsg(w io.Writer, scratch *[]byte, m encoder) error {
	b, err := m.Encode((*scratch)[:0])
	if err != nil {
		return err
	}
	*scratch = b
	_, err = w.Write(b)
	return err
}
