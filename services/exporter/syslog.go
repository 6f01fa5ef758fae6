package exporter

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

// Syslog delivers RFC 5424 messages over TCP (RFC 6587 octet counting),
// optionally over TLS (RFC 5425). Facility: log audit (13).
type Syslog struct {
	Addr string
	// TLS, when set, wraps the connection.
	TLS      *tls.Config
	Hostname string
	conn     net.Conn
	w        *bufio.Writer
}

// Name implements Sink.
func (s *Syslog) Name() string { return "syslog" }

func (s *Syslog) dial(ctx context.Context) error {
	d := net.Dialer{Timeout: 10 * time.Second}
	var c net.Conn
	var err error
	if s.TLS != nil {
		td := tls.Dialer{NetDialer: &d, Config: s.TLS}
		c, err = td.DialContext(ctx, "tcp", s.Addr)
	} else {
		c, err = d.DialContext(ctx, "tcp", s.Addr)
	}
	if err != nil {
		return fmt.Errorf("syslog dial %s: %w", s.Addr, err)
	}
	s.conn, s.w = c, bufio.NewWriterSize(c, 64<<10)
	return nil
}

// Deliver writes the batch; a write error drops the connection so the next
// attempt reconnects and resends.
func (s *Syslog) Deliver(ctx context.Context, batch []Item) error {
	if s.conn == nil {
		if err := s.dial(ctx); err != nil {
			return err
		}
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = s.conn.SetWriteDeadline(dl)
	} else {
		_ = s.conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
	}
	host := s.Hostname
	if host == "" {
		host, _ = os.Hostname()
	}
	for _, it := range batch {
		msg := FormatSyslog(it, host)
		if _, err := fmt.Fprintf(s.w, "%d %s", len(msg), msg); err != nil {
			s.Close()
			return err
		}
	}
	if err := s.w.Flush(); err != nil {
		s.Close()
		return fmt.Errorf("syslog write: %w", err)
	}
	return nil
}

// FormatSyslog renders one RFC 5424 message (without framing).
func FormatSyslog(it Item, host string) string {
	const facility = 13 // log audit
	severity := 6       // informational
	if it.Denied {
		severity = 4 // warning
	}
	msgid := strings.ToUpper(it.Kind)
	if msgid == "" {
		msgid = "-"
	}
	sd := fmt.Sprintf(`[sluice@32473 event_id="%s" session="%s" seq="%d"]`, sdEscape(it.ID), sdEscape(it.Session), it.Seq)
	return fmt.Sprintf("<%d>1 %s %s sluice - %s %s %s", facility*8+severity, it.Time.UTC().Format(time.RFC3339Nano), nilDash(host), msgid, sd, it.Body)
}

func sdEscape(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, `]`, `\]`)
	return r.Replace(s)
}

func nilDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// Close implements Sink.
func (s *Syslog) Close() error {
	if s.conn == nil {
		return nil
	}
	err := s.conn.Close()
	s.conn, s.w = nil, nil
	return err
}

func marshalJSON(v any) ([]byte, error) { return json.Marshal(v) }
