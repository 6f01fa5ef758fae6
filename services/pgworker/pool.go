package pgworker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"sort"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"google.golang.org/protobuf/proto"

	"sluice.dev/sluice/libs/pgmask"
	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
)

// upstreamPool keeps the target connections of sessions that ended cleanly
// (the client said Terminate while the connection was idle, outside a
// transaction, with nothing in flight), so that the next session on the same
// target, with the same connection parameters, skips the target's login and
// backend start. Every target connection logs in with the same
// gateway-held credential, so a pooled connection carries no more authority
// than a new one; before reuse it is reset with DISCARD ALL (session
// settings and role, prepared statements, cursors, temporary tables,
// LISTEN, advisory locks, cached plans), which also proves it is alive. A
// connection is never shared by two sessions at once.
type upstreamPool struct {
	mu      sync.Mutex
	idle    map[string][]*pooledConn
	max     int
	timeout time.Duration
	maxAge  time.Duration
	closed  bool
}

type pooledConn struct {
	hj    *pgconn.HijackedConn
	born  time.Time
	since time.Time
}

func newUpstreamPool(max int, idle, maxAge time.Duration) *upstreamPool {
	if max <= 0 {
		return nil
	}
	return &upstreamPool{idle: map[string][]*pooledConn{}, max: max, timeout: idle, maxAge: maxAge}
}

func (p *pooledConn) expired(now time.Time, timeout, maxAge time.Duration) bool {
	return now.Sub(p.since) > timeout || now.Sub(p.born) > maxAge
}

// get takes the most recently parked live connection for key.
func (p *upstreamPool) get(key string) *pooledConn {
	if p == nil {
		return nil
	}
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	list := p.idle[key]
	for len(list) > 0 {
		c := list[len(list)-1]
		list[len(list)-1] = nil
		list = list[:len(list)-1]
		if c.expired(now, p.timeout, p.maxAge) {
			go c.hj.Conn.Close()
			continue
		}
		p.idle[key] = list
		return c
	}
	delete(p.idle, key)
	return nil
}

// put parks c under key; it reports false (the caller closes c) when the
// pool is closed or full.
func (p *upstreamPool) put(key string, c *pooledConn) bool {
	if p == nil {
		return false
	}
	now := time.Now()
	c.since = now
	if c.expired(now, p.timeout, p.maxAge) {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.pruneLocked(now)
	if len(p.idle[key]) >= p.max {
		return false
	}
	p.idle[key] = append(p.idle[key], c)
	return true
}

// pruneLocked closes connections idle too long, on every key.
func (p *upstreamPool) pruneLocked(now time.Time) {
	for k, list := range p.idle {
		keep := list[:0]
		for _, c := range list {
			if c.expired(now, p.timeout, p.maxAge) {
				go c.hj.Conn.Close()
			} else {
				keep = append(keep, c)
			}
		}
		clear(list[len(keep):])
		if len(keep) == 0 {
			delete(p.idle, k)
		} else {
			p.idle[k] = keep
		}
	}
}

// close closes every parked connection and refuses new ones.
func (p *upstreamPool) close() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for _, list := range p.idle {
		for _, c := range list {
			c.hj.Conn.Close()
		}
	}
	p.idle = map[string][]*pooledConn{}
}

// size is the number of parked connections.
func (p *upstreamPool) size() int {
	if p == nil {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, l := range p.idle {
		n += len(l)
	}
	return n
}

// poolKey names the connections a session may reuse: the same target
// settings (host, database, user, credential reference, TLS) and the same
// client parameters passed to the target.
func poolKey(pg *controlv1.PostgresTarget, runtime map[string]string) string {
	h := sha256.New()
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(pg)
	h.Write(b)
	keys := make([]string, 0, len(runtime))
	for k := range runtime {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		h.Write([]byte{0})
		h.Write([]byte(k))
		h.Write([]byte{0})
		h.Write([]byte(runtime[k]))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// reuse resets a parked connection and resolves the masked columns again
// (the policy or the schema may have changed since), unless a recent
// resolution is at hand; any failure means the connection is closed and
// not used.
func reuse(ctx context.Context, c *pooledConn, cols []string, cached, prev *pgmask.Catalog) (*pgconn.HijackedConn, *pgmask.Catalog, error) {
	pc, err := pgconn.Construct(c.hj)
	if err != nil {
		c.hj.Conn.Close()
		return nil, nil, err
	}
	fail := func(err error) (*pgconn.HijackedConn, *pgmask.Catalog, error) {
		pc.Close(context.Background())
		return nil, nil, err
	}
	if _, err := pc.Exec(ctx, "DISCARD ALL").ReadAll(); err != nil {
		return fail(err)
	}
	if pc.TxStatus() != 'I' {
		return fail(errors.New("the pooled connection is not idle after reset"))
	}
	return handOver(ctx, pc, cols, cached, prev)
}
