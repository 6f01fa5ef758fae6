package main

import (
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The relay is the floor of any Go proxy on this machine: it terminates the
// client's TLS (the same certificate as PgBouncer and Sluice) and copies
// bytes to and from PostgreSQL, without reading a single message. What it
// costs per transaction, Sluice costs before doing any of its work.

// The codes of PostgreSQL's SSLRequest and GSSENCRequest.
const (
	sslRequest    = 80877103
	gssencRequest = 80877104
)

// serveRelay is `benchrun -relay LISTEN,UPSTREAM,TLSDIR`: run the relay
// until killed. It returns only on failure.
func serveRelay(spec string) error {
	f := strings.Split(spec, ",")
	if len(f) != 3 {
		return fmt.Errorf("-relay wants LISTEN,UPSTREAM,TLSDIR, got %q", spec)
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(f[2], "cert.pem"), filepath.Join(f[2], "key.pem"))
	if err != nil {
		return err
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	ln, err := net.Listen("tcp", f[0])
	if err != nil {
		return err
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go relayConn(c, f[1], cfg)
	}
}

func relayConn(c net.Conn, upstream string, cfg *tls.Config) {
	defer c.Close()
	// Until the relay starts copying, a silent client is dropped.
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	var head [8]byte
	if _, err := io.ReadFull(c, head[:]); err != nil {
		return
	}
	if binary.BigEndian.Uint32(head[4:]) == gssencRequest {
		// Declined, as PostgreSQL does without Kerberos; the client goes on
		// with an SSLRequest or a plaintext startup.
		if _, err := c.Write([]byte{'N'}); err != nil {
			return
		}
		if _, err := io.ReadFull(c, head[:]); err != nil {
			return
		}
	}
	client := c
	var first []byte
	if binary.BigEndian.Uint32(head[4:]) == sslRequest {
		if _, err := c.Write([]byte{'S'}); err != nil {
			return
		}
		tc := tls.Server(c, cfg)
		if err := tc.Handshake(); err != nil {
			return
		}
		client = tc
	} else {
		first = head[:]
	}
	_ = c.SetDeadline(time.Time{})
	up, err := net.Dial("tcp", upstream)
	if err != nil {
		return
	}
	defer up.Close()
	if _, err := up.Write(first); err != nil {
		return
	}
	done := make(chan struct{})
	go func() {
		_, _ = io.CopyBuffer(client, up, make([]byte, 32<<10))
		_ = c.Close()
		close(done)
	}()
	_, _ = io.CopyBuffer(up, client, make([]byte, 32<<10))
	_ = up.Close()
	<-done
}

// startRelay runs the relay as its own process, so that its CPU time is
// measured like PgBouncer's.
func (e *env) startRelay() error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(self, "-relay", fmt.Sprintf("127.0.0.1:%d,127.0.0.1:%d,%s", e.relayPort, e.demoPort, filepath.Join(e.dir, "tls")))
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	e.relay = cmd
	for i := 0; i < 100; i++ {
		if c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(e.relayPort)); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("the Go relay did not come up on port %d", e.relayPort)
}

func (e *env) relayDSN() string {
	return fmt.Sprintf("host=127.0.0.1 port=%d dbname=demo user=sluice_gateway password=%s sslmode=require", e.relayPort, e.demoPassword)
}

// floor runs pgbench -S at 8 clients through PgBouncer, the bare Go relay
// and Sluice, rotating their order every round.
func (e *env) floor(res *results) error {
	secs := strconv.Itoa(int(duration.Seconds()))
	order := []string{"pgbouncer", "relay", "sluice"}
	var set cellSet
	for r := 0; r < *rounds; r++ {
		for _, mode := range []string{"simple", "prepared"} {
			for i := range order {
				t := order[(i+r)%len(order)]
				step(fmt.Sprintf("round %d: floor, pgbench -S -M %s -c 8 -> %s", r+1, mode, t))
				tps, lat, cpu, err := e.measure(t, "-n", "-S", "-M", mode, "-c", "8", "-j", "2", "-T", secs)
				if err != nil {
					return err
				}
				set.add(cellKey{mode, 8, false, t}, tps, lat, cpu)
			}
		}
	}
	res.Floor = set.list()
	return nil
}
