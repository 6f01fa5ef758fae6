package mcpworker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"google.golang.org/protobuf/types/known/timestamppb"

	"sluice.dev/sluice/libs/gateway"
	"sluice.dev/sluice/libs/recording"
	commonv1 "sluice.dev/sluice/proto/sluice/common/v1"
	policyv1 "sluice.dev/sluice/proto/sluice/policy/v1"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
)

// session is an MCP session as Sluice sees it: the principal that opened
// it, and the audit session its calls are recorded in. It starts with the
// first tool call and ends when the MCP session does (the client deletes
// it, it idles out, an administrator kills it, the worker stops).
type session struct {
	w         *Worker
	id        string // the audit session
	ss        *mcp.ServerSession
	principal *commonv1.Principal
	pkey      [16]byte
	client    string // the MCP client's name and version
	rec       *recording.Session
	// started is closed once the session's start is recorded (startErr
	// says if it could not be).
	started  chan struct{}
	startErr error
	// ctx ends with the session: calls still running stop with it.
	ctx    context.Context
	cancel context.CancelFunc
	// running bounds the calls the session runs at once on targets.
	running chan struct{}

	mu      sync.Mutex
	token   string
	cmdID   uint64
	pending map[string]*held
	why     string

	commands, denied atomic.Int64
	endOnce          sync.Once
	ended            chan struct{}
}

// maxRunning bounds the calls one MCP session runs at once (each holds a
// target connection).
const maxRunning = 4

func (s *session) ID() string             { return s.id }
func (s *session) PrincipalKey() [16]byte { return s.pkey }
func (s *session) CallerToken() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.token
}

func (s *session) isEnded() (bool, string) {
	select {
	case <-s.ended:
		s.mu.Lock()
		defer s.mu.Unlock()
		return true, s.why
	default:
		return false, ""
	}
}

// End ends the session at once: calls still running are cancelled, no new
// one starts, the MCP session is closed (the client's next request learns
// it no longer exists), its held calls are withdrawn, and the audit session
// records why.
func (s *session) End(_ gateway.EndCode, reason string) {
	s.endOnce.Do(func() {
		s.mu.Lock()
		s.why = reason
		waiting := make([]*held, 0, len(s.pending))
		for _, h := range s.pending {
			waiting = append(waiting, h)
		}
		s.pending = map[string]*held{}
		token := s.token
		s.mu.Unlock()
		close(s.ended)
		s.cancel()
		go func() { _ = s.ss.Close() }()
		for _, h := range waiting {
			// A call collecting it now counts its own outcome.
			if h.busy.TryLock() {
				s.w.k.AbandonedHold()
				h.busy.Unlock()
			}
			s.w.k.Withdraw(token, s.id, h.id, "the MCP session ended before the call was collected: "+reason)
			_, _ = s.emit(&sessionv1.Event{Body: &sessionv1.Event_Approval{Approval: &sessionv1.Approval{
				CommandId: h.cmdID, ApprovalId: h.id, State: "withdrawn", Reason: "the MCP session ended: " + reason}}})
		}
		s.w.k.RecordEnd(s.rec, &sessionv1.Ended{Reason: reason, Commands: s.commands.Load(), Denied: s.denied.Load()})
		s.w.k.Unregister(s)
	})
}

// sessionFor is the session of a tool call, started on its first call: the
// caller must be the principal that opened it, and it must not have ended.
func (w *Worker) sessionFor(ctx context.Context, req *mcp.CallToolRequest) (*session, error) {
	c, ok := callerOf(req.Extra.TokenInfo)
	if !ok {
		return nil, errNoCaller
	}
	ss := req.Session
	w.mu.Lock()
	s, ok := w.sessions[ss.ID()]
	if !ok {
		if w.k.Active() >= int64(w.cfg.MaxSessions) {
			w.mu.Unlock()
			return nil, errors.New("too many MCP sessions are open; try again later")
		}
		client := "mcp client"
		if ip := ss.InitializeParams(); ip != nil && ip.ClientInfo != nil {
			client = ip.ClientInfo.Name
			if v := ip.ClientInfo.Version; v != "" {
				client += "/" + v
			}
		}
		s = &session{
			w: w, id: recording.NewSessionID(), ss: ss, principal: c.principal, pkey: c.pkey, client: client,
			token: c.token, pending: map[string]*held{}, ended: make(chan struct{}), started: make(chan struct{}),
			running: make(chan struct{}, maxRunning),
		}
		s.ctx, s.cancel = context.WithCancel(w.runCtx)
		s.rec = w.k.Rec.Open(s.id)
		w.sessions[ss.ID()] = s
		w.mu.Unlock()
		// The start is recorded outside the lock: a slow recorder stalls
		// this session, not every other.
		go w.start(s, c.addr)
	} else {
		w.mu.Unlock()
	}
	select {
	case <-s.started:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if s.startErr != nil {
		return nil, s.startErr
	}
	if s.pkey != c.pkey {
		// The transport refuses this already (TokenInfo.UserID); a second
		// check costs nothing.
		return nil, errors.New("this MCP session belongs to another principal")
	}
	if ended, why := s.isEnded(); ended {
		return nil, fmt.Errorf("this MCP session has ended: %s", why)
	}
	s.mu.Lock()
	s.token = c.token
	s.mu.Unlock()
	return s, nil
}

// start records a session's start and follows its MCP session's end.
func (w *Worker) start(s *session, addr string) {
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	err := s.rec.Record(ctx, &sessionv1.Event{Time: timestamppb.Now(), Body: &sessionv1.Event_Started{Started: &sessionv1.Started{
		Principal: s.principal, Protocol: "mcp", ClientAddr: addr, ClientApplication: s.client, Worker: w.cfg.Name,
	}}})
	cancel()
	if err != nil {
		s.startErr = errors.New("the audit stream is not accepting records; no call can run")
		close(s.started)
		w.forget(s)
		return
	}
	w.k.Register(s)
	close(s.started)
	// The MCP session ends: idle timeout, DELETE, closed, killed.
	_ = s.ss.Wait()
	s.End(gateway.EndShutdown, "the MCP session was closed")
	w.forget(s)
}

// forget drops an ended session (the SDK refuses its id from now on).
func (w *Worker) forget(s *session) {
	w.mu.Lock()
	if w.sessions[s.ss.ID()] == s {
		delete(w.sessions, s.ss.ID())
	}
	w.mu.Unlock()
}

// bind is ctx, also cancelled when the session ends.
func (s *session) bind(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(s.ctx, cancel)
	return ctx, func() { stop(); cancel() }
}

func (s *session) nextCommand() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cmdID++
	return s.cmdID
}

// emit records an event without waiting; a recording that fails ends the
// session.
func (s *session) emit(ev *sessionv1.Event) (uint64, error) {
	if ev.Time == nil {
		ev.Time = timestamppb.Now()
	}
	seq, err := s.rec.Emit(ev)
	if err != nil {
		go s.End(gateway.EndShutdown, "the audit stream is not accepting records")
	}
	return seq, err
}

// durable waits until an event is durable; a recording that fails ends
// the session. A call given up before (its request cancelled) ends only
// the wait: the session records on.
func (s *session) durable(ctx context.Context, seq uint64) error {
	if err := s.rec.WaitFor(ctx, seq); err != nil {
		if !errors.Is(err, recording.ErrNotRecording) {
			return fmt.Errorf("the call ended before its record was durable: %w", err)
		}
		go s.End(gateway.EndShutdown, "the audit stream is not accepting records")
		return fmt.Errorf("the call's record could not be made durable: %w", err)
	}
	return nil
}

// recordListing records a list_targets call: which targets it showed (each
// one by a decision of the policy).
func (s *session) recordListing(shown []string) {
	id := s.nextCommand()
	s.commands.Add(1)
	_, _ = s.emit(&sessionv1.Event{Body: &sessionv1.Event_Command{Command: &sessionv1.Command{CommandId: id, Text: toolListTargets, Via: toolListTargets,
		Decision: &policyv1.Decision{Action: "allow", Rule: "builtin:list-targets", Revision: s.w.k.View.Policy().GetRevision(), Reason: "shown, each as the policy rules on list_targets: " + strings.Join(shown, ", "),
			Mcp: &policyv1.MCPInput{Tool: toolListTargets, Client: s.client}}}}})
	_, _ = s.emit(&sessionv1.Event{Body: &sessionv1.Event_Result{Result: &sessionv1.Result{CommandId: id, CommandTag: fmt.Sprintf("LIST %d", len(shown)), Rows: int64(len(shown))}}})
}
