package pgworker_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"

	"github.com/jackc/pgx/v5/pgproto3"
)

func errorAs(err error, target any) bool { return errors.As(err, target) }

// cancelVia sends a CancelRequest (over TLS, as libpq does) to addr.
func cancelVia(ctx context.Context, addr string, pid uint32, secret []byte) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.Write([]byte{0, 0, 0, 8, 4, 210, 22, 47}); err != nil {
		return err
	}
	b := make([]byte, 1)
	if _, err := c.Read(b); err != nil {
		return err
	}
	tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true})
	if err := tc.HandshakeContext(ctx); err != nil {
		return err
	}
	msg, _ := (&pgproto3.CancelRequest{ProcessID: pid, SecretKey: secret}).Encode(nil)
	_, err = tc.Write(msg)
	return err
}
