package bus

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"
)

// HeaderError carries a transport-level failure in a reply (the request could
// not be decoded, the handler failed). Domain errors travel in the reply body.
const HeaderError = "Sluice-Error"

// HeaderCaller carries the access token of the caller on whose behalf a
// request is made: the service verifies it itself (through the identity
// service) and authorizes that principal, never one named in the body.
// Tokens cross NATS only over TLS or loopback (Config.RequireSecure) and are
// never logged or stored.
const HeaderCaller = "Sluice-Caller"

// ErrNoResponders means no replica of the service is running.
var ErrNoResponders = errors.New("bus: no service is answering")

type callerKey struct{}

// CallerToken is the access token the request being served carried ("" if
// none).
func CallerToken(ctx context.Context) string {
	t, _ := ctx.Value(callerKey{}).(string)
	return t
}

// WithCallerToken returns a context whose requests carry token (see
// Request): the API uses it to forward its caller, a worker its session's.
func WithCallerToken(ctx context.Context, token string) context.Context {
	return context.WithValue(ctx, callerKey{}, token)
}

// Handler answers one request.
type Handler[Req, Resp proto.Message] func(ctx context.Context, req Req) (Resp, error)

// Serve answers requests on subject as a member of queue group queue, decoding
// each into a fresh Req. Requests are handled concurrently, at most
// 4×GOMAXPROCS at a time, by goroutines that live as long as the
// subscription: a handler's deep stack (a SQL parse, a policy evaluation) is
// grown once, not for every request. When ctx is done the subscription
// drains: every request it had taken is still answered. It returns once
// the server holds the subscription.
func Serve[Req, Resp proto.Message](ctx context.Context, nc *nats.Conn, subject, queue string, newReq func() Req, h Handler[Req, Resp]) (*nats.Subscription, error) {
	requests := make(chan *nats.Msg)
	drained := make(chan struct{})
	sub, err := nc.QueueSubscribe(subject, queue, func(m *nats.Msg) {
		select {
		case requests <- m:
		case <-drained:
			reply(ctx, m, newReq, h) // the last one, delivered as the drain ended
		}
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", subject, err)
	}
	// Serve returns once the server holds the subscription, so that a
	// request sent after it returns, on any connection, finds a responder
	// (a disconnected connection subscribes again when it reconnects).
	if nc.IsConnected() {
		_ = nc.FlushTimeout(5 * time.Second)
	}
	for range 4 * runtime.GOMAXPROCS(0) {
		go func() {
			for {
				select {
				case m := <-requests:
					reply(ctx, m, newReq, h)
				case <-drained:
					return
				}
			}
		}()
	}
	go func() {
		<-ctx.Done()
		_ = sub.Drain()
		// The drain ends (the subscription becomes invalid) once every
		// message it holds was handed to the callback, or after the
		// connection's drain timeout.
		for sub.IsValid() {
			time.Sleep(10 * time.Millisecond)
		}
		close(drained)
	}()
	return sub, nil
}

func reply[Req, Resp proto.Message](ctx context.Context, m *nats.Msg, newReq func() Req, h Handler[Req, Resp]) {
	// A request comes from a caller's inbox. Anything else (a JetStream
	// delivery pushed onto a service subject, say) is not a request.
	if !strings.HasPrefix(m.Reply, "_INBOX.") {
		return
	}
	ctx = context.WithValue(ctx, callerKey{}, m.Header.Get(HeaderCaller))
	req := newReq()
	out := nats.NewMsg(m.Reply)
	if err := proto.Unmarshal(m.Data, req); err != nil {
		out.Header.Set(HeaderError, "malformed request")
		_ = m.RespondMsg(out)
		return
	}
	resp, err := h(ctx, req)
	if err != nil {
		out.Header.Set(HeaderError, err.Error())
		_ = m.RespondMsg(out)
		return
	}
	data, err := proto.Marshal(resp)
	if err != nil {
		out.Header.Set(HeaderError, "encode reply")
		_ = m.RespondMsg(out)
		return
	}
	out.Data = data
	_ = m.RespondMsg(out)
}

// Request sends req to subject and decodes the reply into resp. Without a
// deadline on ctx it waits at most five seconds.
func Request(ctx context.Context, nc *nats.Conn, subject string, req, resp proto.Message) error {
	return request(ctx, nc, subject, req, resp, 0)
}

// ResendAfter is how long RequestIdempotent waits for an answer before it
// sends the request again.
const ResendAfter = 500 * time.Millisecond

// ResendMax is the longest RequestIdempotent waits between sends.
const ResendMax = 2 * time.Second

// RequestIdempotent is Request for a request that may be served twice with
// the same effect (a policy decision, a token's verification): unanswered
// after ResendAfter, it is sent again, then after twice as long, up to
// ResendMax between sends, until ctx ends; the first answer to any copy is
// the answer. A request in flight on a connection whose NATS node dies is
// lost without an error: the client connects to another node, and the
// request would otherwise wait out the whole deadline. The waits grow so
// that a service slow under load is not sent every request again and
// again, and a copy's answer counts however late it comes.
func RequestIdempotent(ctx context.Context, nc *nats.Conn, subject string, req, resp proto.Message) error {
	return request(ctx, nc, subject, req, resp, ResendAfter)
}

func request(ctx context.Context, nc *nats.Conn, subject string, req, resp proto.Message, resend time.Duration) error {
	data, err := proto.Marshal(req)
	if err != nil {
		return fmt.Errorf("encode request: %w", err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
	}
	msg := nats.NewMsg(subject)
	msg.Data = data
	if tok := CallerToken(ctx); tok != "" {
		msg.Header.Set(HeaderCaller, tok)
	}
	var m *nats.Msg
	if resend > 0 {
		m, err = requestAgain(ctx, nc, msg, resend)
	} else {
		m, err = nc.RequestMsgWithContext(ctx, msg)
	}
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			return fmt.Errorf("%s: %w", subject, ErrNoResponders)
		}
		return fmt.Errorf("%s: %w", subject, err)
	}
	if msg := m.Header.Get(HeaderError); msg != "" {
		return fmt.Errorf("%s: %s", subject, msg)
	}
	if err := proto.Unmarshal(m.Data, resp); err != nil {
		return fmt.Errorf("%s: decode reply: %w", subject, err)
	}
	return nil
}

// requestAgain sends msg, and again each time wait passes without an
// answer (doubling it up to ResendMax), until a copy is answered, every copy
// failed (no responders, say: the error comes at once), or ctx ends.
func requestAgain(ctx context.Context, nc *nats.Conn, msg *nats.Msg, wait time.Duration) (*nats.Msg, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // the copies still waiting stop
	type answer struct {
		m   *nats.Msg
		err error
	}
	answers := make(chan answer, 1)
	waiting := 0
	send := func() {
		waiting++
		go func() {
			m, err := nc.RequestMsgWithContext(ctx, msg)
			select {
			case answers <- answer{m, err}:
			case <-ctx.Done():
			}
		}()
	}
	send()
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		select {
		case a := <-answers:
			waiting--
			if a.err == nil || waiting == 0 {
				return a.m, a.err
			}
		case <-t.C:
			send()
			wait = min(2*wait, ResendMax)
			t.Reset(wait)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}
