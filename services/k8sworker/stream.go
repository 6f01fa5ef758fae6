package k8sworker

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"sluice.dev/sluice/libs/gateway"
	"sluice.dev/sluice/libs/kubeclass"
	"sluice.dev/sluice/libs/masking"
	"sluice.dev/sluice/libs/recording"
	"sluice.dev/sluice/libs/targets"
	policyv1 "sluice.dev/sluice/proto/sluice/policy/v1"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
)

// streamProtocols are the websocket subprotocols of Kubernetes streams
// that Sluice reads: binary channels. The base64 ones (text messages, no
// client of the project's own uses them) would carry output past the
// masking and into the record undecoded, and are not offered.
var streamProtocols = map[string]bool{
	"v5.channel.k8s.io": true, "v4.channel.k8s.io": true, "v3.channel.k8s.io": true, "v2.channel.k8s.io": true,
	"channel.k8s.io":     true,
	"portforward.k8s.io": true, "v2.portforward.k8s.io": true,
}

// Stream limits.
const (
	// maxFrame bounds one websocket message either way.
	maxFrame = 1 << 20
	// streamChunk is the size of a stream's records.
	streamChunk = 32 << 10
)

// Channels of the Kubernetes stream protocols (v4/v5.channel.k8s.io):
// the first byte of every binary message.
const (
	chanStdin  = 0
	chanStdout = 1
	chanStderr = 2
	chanError  = 3
)

// relayStream carries an allowed exec, attach or port-forward stream: the
// client's websocket is accepted here, the cluster's dialled with the
// gateway's credential and the subprotocol the client offered, and every
// message relayed and recorded (stdin, stdout, stderr by channel; for
// port forwarding, what each side sent). What the cluster said is durable
// before the stream's status reaches the client. It reports whether the
// stream started, and the status code the client got.
func (s *session) relayStream(rw http.ResponseWriter, r *http.Request, rest string, up *upstream, info kubeclass.Request, start time.Time,
	d *policyv1.Decision, id uint64) (bool, int) {
	// Where masking applies, what the container prints (stdout, stderr)
	// is masked as it flows, a value split across messages included.
	var masks *streamMasks
	if len(d.GetMasks()) > 0 {
		m, err := s.w.k.Masker(gateway.MaskRulesKey(d), d)
		if err != nil {
			status(rw, http.StatusInternalServerError, "InternalError", "sluice: the masking rules cannot be applied")
			return false, http.StatusInternalServerError
		}
		masks = &streamMasks{out: m.NewStream(), err: m.NewStream()}
		defer masks.record(s, id)
	}
	if o := r.Header.Get("Origin"); o != "" {
		// kubectl sends none; a browser page must not drive a stream.
		status(rw, http.StatusForbidden, "Forbidden", "sluice: streams from a browser origin are refused")
		return false, http.StatusForbidden
	}
	target := *up.Server
	target.Scheme = "wss"
	target.Path = strings.TrimSuffix(up.Server.Path, "/") + rest
	target.RawQuery = r.URL.RawQuery
	header := http.Header{"Authorization": {"Bearer " + up.Token}}
	if up.spec.GetImpersonate() {
		if err := targets.Impersonate(header, s.principal); err != nil {
			status(rw, http.StatusForbidden, "Forbidden", "sluice: "+err.Error())
			return false, http.StatusForbidden
		}
	}
	// Only the stream protocols go on: a client could offer a bearer
	// token as a subprotocol, which the cluster would take as its own.
	var protocols []string
	for _, p := range websocket.Subprotocols(r) {
		if streamProtocols[p] {
			protocols = append(protocols, p)
		}
	}
	dialer := websocket.Dialer{TLSClientConfig: up.Transport.TLSClientConfig, HandshakeTimeout: 10 * time.Second,
		Subprotocols: protocols, NetDialContext: up.Transport.DialContext}
	upc, resp, err := dialer.DialContext(r.Context(), target.String(), header)
	if err != nil {
		if resp == nil {
			s.w.cfg.Log.Warn().Err(err).Str("target", s.target.GetName()).Msg("stream to the cluster failed")
			status(rw, http.StatusBadGateway, "ServiceUnavailable", "sluice: the cluster did not answer")
			return false, http.StatusBadGateway
		}
		// The cluster refused the stream: its answer goes to the client
		// (and to its SPDY retry).
		s.noteUpgradeFailure(rest, resp)
		body, _ := io.ReadAll(resp.Body)
		rw.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
		rw.WriteHeader(resp.StatusCode)
		_, _ = rw.Write(body)
		return false, resp.StatusCode
	}
	defer upc.Close()
	upgrader := websocket.Upgrader{Subprotocols: []string{upc.Subprotocol()}, HandshakeTimeout: 10 * time.Second,
		CheckOrigin: func(*http.Request) bool { return true }}
	cc, err := upgrader.Upgrade(rw, r, nil)
	if err != nil {
		return false, http.StatusBadRequest
	}
	defer cc.Close()
	upc.SetReadLimit(maxFrame)
	cc.SetReadLimit(maxFrame)

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	rec := &streamRecorder{s: s, start: start, portForward: info.Subresource == "portforward", fail: cancel}
	done := make(chan struct{}, 2)
	go func() {
		<-ctx.Done()
		_ = cc.Close()
		_ = upc.Close()
	}()
	// Client to cluster.
	go func() {
		defer func() { done <- struct{}{} }()
		for {
			mt, data, err := cc.ReadMessage()
			if err != nil {
				return
			}
			if rec.record(ctx, false, mt, data) != nil {
				return
			}
			if err := upc.WriteMessage(mt, data); err != nil {
				return
			}
		}
	}()
	// Cluster to client: the status (channel 3) waits for the record.
	go func() {
		defer func() { done <- struct{}{} }()
		for {
			mt, data, err := upc.ReadMessage()
			if err != nil {
				_ = rec.durable(ctx)
				return
			}
			if masks != nil {
				var flushed [][]byte
				data, flushed = masks.mask(mt, data)
				for _, f := range flushed {
					// What the masker held back goes out before the status.
					if rec.record(ctx, true, websocket.BinaryMessage, f) != nil || cc.WriteMessage(websocket.BinaryMessage, f) != nil {
						return
					}
				}
				if data == nil {
					continue
				}
			}
			if rec.record(ctx, true, mt, data) != nil {
				return
			}
			if !rec.portForward && mt == websocket.BinaryMessage && len(data) > 0 && data[0] == chanError {
				if rec.durable(ctx) != nil {
					return
				}
			}
			if err := cc.WriteMessage(mt, data); err != nil {
				return
			}
		}
	}()
	select {
	case <-done:
	case <-s.ended:
	}
	cancel()
	return true, http.StatusSwitchingProtocols
}

// streamRecorder records a stream's messages in chunks, as the SSH worker
// records a terminal.
type streamRecorder struct {
	s           *session
	start       time.Time
	portForward bool
	// fail ends the stream: nothing flows unrecorded.
	fail func()

	mu      sync.Mutex
	last    uint64
	pending int
	err     error
}

// flowWindow is how much a stream may have recorded and not yet durable:
// beyond it, the stream waits (a fast stream cannot fill the worker's
// memory with records).
const flowWindow = 1 << 20

// record records a message; an error ends the stream.
func (r *streamRecorder) record(ctx context.Context, fromCluster bool, mt int, data []byte) error {
	if err := r.recordMessage(fromCluster, mt, data); err != nil {
		r.fail()
		return err
	}
	r.mu.Lock()
	wait := r.pending > flowWindow
	if wait {
		r.pending = 0
	}
	r.mu.Unlock()
	if wait {
		if err := r.durable(ctx); err != nil {
			r.fail()
			return err
		}
	}
	return nil
}

func (r *streamRecorder) recordMessage(fromCluster bool, mt int, data []byte) error {
	if mt != websocket.BinaryMessage && mt != websocket.TextMessage {
		return nil
	}
	stream := "i"
	if fromCluster {
		stream = "o"
	}
	payload := data
	if !r.portForward && len(data) > 0 {
		switch data[0] {
		case chanStdin:
			stream = "i"
		case chanStdout:
			stream = "o"
		case chanStderr, chanError:
			stream = "e"
		default:
			stream = "x" // resize, close: recorded as they are
		}
		payload = data[1:]
	}
	if len(payload) == 0 {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return r.err
	}
	at := time.Since(r.start).Milliseconds()
	for b := payload; len(b) > 0; {
		n := min(len(b), streamChunk)
		io := recording.TerminalIO(stream, b[:n], at)
		seq, err := r.s.emit(&sessionv1.Event{Body: &sessionv1.Event_Io{Io: io}})
		if err != nil {
			r.err = err
			return err
		}
		r.last = seq
		r.pending += len(io.GetData())
		b = b[n:]
	}
	return nil
}

// durable waits until everything recorded so far is durable.
func (r *streamRecorder) durable(ctx context.Context) error {
	r.mu.Lock()
	last, err := r.last, r.err
	r.mu.Unlock()
	if err != nil || last == 0 {
		return err
	}
	return r.s.rec.WaitFor(ctx, last)
}

// streamMasks masks an exec or attach stream's output channels.
type streamMasks struct {
	out, err *masking.Stream
}

// mask masks one message from the cluster. It returns the message to
// send (nil: nothing yet, the masker holds it) and, before a status or a
// close, what the maskers still held.
func (m *streamMasks) mask(mt int, data []byte) ([]byte, [][]byte) {
	if mt != websocket.BinaryMessage {
		// Not a channel message: nothing the maskers can read goes out.
		return nil, nil
	}
	if len(data) == 0 {
		return data, nil
	}
	switch data[0] {
	case chanStdout, chanStderr:
		st := m.out
		if data[0] == chanStderr {
			st = m.err
		}
		out := st.Write(data[1:])
		if len(out) == 0 {
			return nil, nil
		}
		return append([]byte{data[0]}, out...), nil
	default:
		// The status (or a close): everything held goes first.
		var flushed [][]byte
		if b := m.out.Flush(); len(b) > 0 {
			flushed = append(flushed, append([]byte{chanStdout}, b...))
		}
		if b := m.err.Flush(); len(b) > 0 {
			flushed = append(flushed, append([]byte{chanStderr}, b...))
		}
		return data, flushed
	}
}

func (m *streamMasks) record(s *session, id uint64) {
	var counts []*sessionv1.MaskCount
	for _, c := range []struct {
		field string
		st    *masking.Stream
	}{{"stdout", m.out}, {"stderr", m.err}} {
		c.st.Counts.Each(func(name string, n int64) {
			if n > 0 {
				counts = append(counts, &sessionv1.MaskCount{Detector: name, Count: n, Field: c.field})
			}
		})
	}
	if len(counts) > 0 {
		_, _ = s.emit(&sessionv1.Event{Body: &sessionv1.Event_Masking{Masking: &sessionv1.Masking{CommandId: id, Counts: counts}}})
	}
}
