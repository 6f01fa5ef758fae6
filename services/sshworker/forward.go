package sshworker

import (
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"sluice.dev/sluice/libs/gateway"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
)

// globalRequests answers connection-level requests. Remote port forwarding
// (tcpip-forward) is a policy decision, recorded; Sluice does not offer it
// whatever the policy says, since the target would open connections back
// through the gateway. Everything else (keepalives) is answered no.
func (s *session) globalRequests(ctx context.Context, reqs <-chan *ssh.Request) {
	for req := range reqs {
		s.touch()
		switch req.Type {
		case "tcpip-forward":
			var f struct {
				Addr string
				Port uint32
			}
			_ = ssh.Unmarshal(req.Payload, &f)
			d, cached := s.decide(ctx, "remote_forward", net.JoinHostPort(f.Addr, strconv.Itoa(int(f.Port))))
			if d.GetAction() == "allow" {
				d = deny(d, ruleUnsupported, "Sluice does not offer remote port forwarding")
			}
			id := s.nextCommand()
			s.commands.Add(1)
			s.denied.Add(1)
			_, _ = s.emit(&sessionv1.Event{Body: &sessionv1.Event_Command{Command: &sessionv1.Command{CommandId: id,
				Text: "remote_forward " + net.JoinHostPort(f.Addr, strconv.Itoa(int(f.Port))), Via: "remote_forward",
				Decision: gateway.Recorded(d), Cached: cached}}})
			_ = req.Reply(false, nil)
		default:
			if req.WantReply {
				_ = req.Reply(false, nil)
			}
		}
	}
}

// forwardChannel is local port forwarding (ssh -L): a policy decision; when
// allowed, the connection is made from the target and both directions are
// recorded. Masking cannot look inside it: it is refused when masking
// applies.
func (s *session) forwardChannel(ctx context.Context, nc ssh.NewChannel) {
	var f struct {
		Host     string
		Port     uint32
		OrigHost string
		OrigPort uint32
	}
	if ssh.Unmarshal(nc.ExtraData(), &f) != nil {
		_ = nc.Reject(ssh.ConnectionFailed, "sluice: malformed forwarding request")
		return
	}
	s.mu.Lock()
	s.forwards++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.forwards--
		s.mu.Unlock()
	}()
	dest := net.JoinHostPort(f.Host, strconv.Itoa(int(f.Port)))
	d, cached := s.decide(ctx, "port_forward", dest)
	if len(d.GetMasks()) > 0 && d.GetAction() != "deny" {
		d = deny(d, ruleMaskedBinary, "masking applies to you on this target, and a forwarded connection carries data Sluice cannot mask")
	}
	id := s.nextCommand()
	s.commands.Add(1)
	seq, err := s.emit(&sessionv1.Event{Body: &sessionv1.Event_Command{Command: &sessionv1.Command{CommandId: id,
		Text: "port_forward " + dest, Via: "port_forward", Decision: gateway.Recorded(d), Cached: cached}}})
	if err != nil {
		_ = nc.Reject(ssh.ConnectionFailed, "sluice: the audit stream is not accepting records")
		return
	}
	if d.GetAction() != "allow" {
		s.denied.Add(1)
		_ = nc.Reject(ssh.Prohibited, fmt.Sprintf("sluice: forwarding to %s denied by rule %q: %s", dest, d.GetRule(), d.GetReason()))
		return
	}
	if s.durable(ctx, seq) != nil {
		_ = nc.Reject(ssh.ConnectionFailed, "sluice: the audit stream is not accepting records")
		return
	}
	start := time.Now()
	up, upReqs, err := s.up.OpenChannel("direct-tcpip", nc.ExtraData())
	if err != nil {
		_ = nc.Reject(ssh.ConnectionFailed, "sluice: the target could not connect: "+err.Error())
		return
	}
	go ssh.DiscardRequests(upReqs)
	ch, reqs, err := nc.Accept()
	if err != nil {
		up.Close()
		return
	}
	go ssh.DiscardRequests(reqs)
	rec := &recorder{s: s}
	var wg sync.WaitGroup
	relay := func(dst io.WriteCloser, src io.Reader, stream string, count func(int64)) {
		defer wg.Done()
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				s.touch()
				count(int64(n))
				rec.io(ctx, stream, buf[:n])
				if _, werr := dst.Write(buf[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
	}
	wg.Add(2)
	go relay(up, ch, "i", func(n int64) { s.bytesIn.Add(n) })
	go relay(ch, up, "o", func(n int64) { s.bytesOut.Add(n) })
	wg.Wait()
	_ = rec.flush(ctx)
	ch.Close()
	up.Close()
	_, _ = s.emit(&sessionv1.Event{Body: &sessionv1.Event_Result{Result: &sessionv1.Result{CommandId: id,
		CommandTag: "closed", DurationUs: time.Since(start).Microseconds()}}})
}
