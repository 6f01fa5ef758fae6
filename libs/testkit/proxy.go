package testkit

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
)

// Proxy is a TCP relay in front of a server that a test can make lose what
// is in flight, as a node that dies does: after Drop, every byte either way
// is read and thrown away (the sender's writes succeed, nothing arrives);
// after DropReplies, only what the server sends. Cut then closes every
// connection, so clients notice and connect again, and relays again from
// then on.
type Proxy struct {
	ln     net.Listener
	target string
	// drop: 0 relays, dropBoth or dropReplies.
	drop atomic.Int32

	mu    sync.Mutex
	conns []net.Conn
}

// NewProxy relays connections on a loopback port to target until the test
// ends.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &Proxy{ln: ln, target: target}
	t.Cleanup(func() {
		ln.Close()
		p.closeAll()
	})
	go p.accept()
	return p
}

// Addr is the proxy's host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

const (
	dropBoth = 1 + iota
	dropReplies
)

// Drop makes every connection lose, from now on, whatever is sent either way.
func (p *Proxy) Drop() { p.drop.Store(dropBoth) }

// DropReplies makes every connection lose, from now on, what the server
// sends: what clients send still arrives.
func (p *Proxy) DropReplies() { p.drop.Store(dropReplies) }

// Cut closes every connection and relays again.
func (p *Proxy) Cut() {
	p.closeAll()
	p.drop.Store(0)
}

func (p *Proxy) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *Proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, s)
		p.mu.Unlock()
		go p.copy(s, c, false)
		go p.copy(c, s, true)
	}
}

// copy relays src to dst until either closes, throwing away what it reads
// while dropping that direction.
func (p *Proxy) copy(dst, src net.Conn, fromServer bool) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		drop := p.drop.Load()
		if n > 0 && drop != dropBoth && (drop != dropReplies || !fromServer) {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
