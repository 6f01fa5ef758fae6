package pgworker

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"sluice.dev/sluice/libs/pgmask"
	"sluice.dev/sluice/libs/recording"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
)

// serverLoop relays the server's messages to the client, attributing
// results to the commands they answer, holding results until their record
// is durable, and turning probe failures into denials.
func (s *session) serverLoop(ctx context.Context) {
	for {
		if !s.sr.buffered() && s.head() == nil {
			// Nothing asked of the target: it may stay silent long.
			s.sr.park()
			s.cwMu.Lock()
			s.cw.park()
			s.cwMu.Unlock()
		}
		typ, body, frame, err := s.sr.next()
		if err != nil {
			if s.parking.Load() {
				return // the session ends; run decides on the connection
			}
			if errors.Is(err, errTooLarge) {
				s.shutdown("server message too large", fatal(stateProtocolViolation, "sluice: the target sent a message larger than allowed", ""))
				return
			}
			s.shutdown("the target closed the connection", fatal(stateConnectionFailure, "sluice: the target closed the connection", ""))
			return
		}
		s.bytesOut.Add(int64(len(frame)))
		out, end, err := s.onServer(ctx, typ, body, frame)
		if err != nil {
			return // onServer has shut the session down
		}
		s.cwMu.Lock()
		switch {
		case out != nil:
			_, err = s.cw.Write(out)
		case s.rewrite != nil:
			err = writeMsg(s.cw, &s.out, s.rewrite)
			s.rewrite = nil
		}
		if err == nil && !s.sr.buffered() {
			err = s.cw.Flush()
		}
		s.cwMu.Unlock()
		if err != nil {
			s.shutdown("the client connection failed", nil)
			return
		}
		if end != "" {
			s.shutdown(end, nil)
			return
		}
	}
}

// gate holds a command's results until its record is durable.
func (s *session) gate(ctx context.Context, e *expect) error {
	if e == nil || e.durable || e.seq == 0 {
		return nil
	}
	if err := s.rec.WaitFor(ctx, e.seq); err != nil {
		if !errors.Is(err, recording.ErrNotRecording) {
			return errClosed // the session is ending: the result stays withheld
		}
		s.shutdown("the audit stream stopped accepting records", fatal(stateSystemError,
			"sluice: the audit stream is not accepting records; the result is withheld and the session is closed", ""))
		return errClosed
	}
	e.durable = true
	return nil
}

// onServer decides what to send for one server message: out (the frame,
// or frames of our own), or nil with s.rewrite set to a replacement, or nil
// without a rewrite to drop the message. end, if set, ends the session
// after the message is delivered.
func (s *session) onServer(ctx context.Context, typ byte, body, frame []byte) (out []byte, end string, err error) {
	h := s.head()
	if h != nil && h.refusing {
		// A result refused by masking: drop it up to its end.
		switch typ {
		case 'D', 'd', 'c':
			return nil, "", nil
		case 'C', 'I', 's':
			if h.kind == expExecute {
				s.pop()
			}
			return nil, "", nil
		}
	}
	switch typ {
	case 'T':
		if h != nil && h.kind == expDescribe {
			if h.plan != nil {
				var rd pgproto3.RowDescription
				if err := rd.Decode(body); err != nil {
					return nil, "", s.undecodable()
				}
				s.descs[h.describe] = cloneFields(rd.Fields)
			}
			s.pop()
			if h.internal {
				return nil, "", nil
			}
			return frame, "", nil
		}
		if err := s.gate(ctx, h); err != nil {
			return nil, "", err
		}
		if h != nil && h.plan != nil {
			var rd pgproto3.RowDescription
			if err := rd.Decode(body); err != nil {
				return nil, "", s.undecodable()
			}
			h.cols = h.plan.Columns(rd.Fields, h.formats, h.lin)
			if h.plan.Refuse() && pgmask.HasDerived(h.cols) {
				h.refusing = true
				s.rewrite = refusal("the result would show values computed from masked columns")
				return nil, "", nil
			}
		}
	case 't':
		if h != nil && h.kind == expDescribe && h.types != nil {
			// The server's word on the parameters' types, for an approver
			// of a binary parameter.
			if oids := parseParamTypes(body); len(oids) > 0 {
				h.types.set(oids)
			}
		}
	case 'n':
		if h != nil && h.kind == expDescribe {
			s.pop()
			if h.internal {
				return nil, "", nil
			}
		}
	case 'D':
		if h == nil {
			return nil, "", s.outOfStep(typ)
		}
		if err := s.gate(ctx, h); err != nil {
			return nil, "", err
		}
		h.rows++
		if h.plan == nil {
			break
		}
		if h.cols == nil {
			fields, ok := s.descs[h.describe]
			if !ok {
				fields, ok = s.descs[h.stmtKey]
			}
			if !ok {
				return nil, "", s.undecodable()
			}
			h.cols = h.plan.Columns(fields, h.formats, h.lin)
			if h.plan.Refuse() && pgmask.HasDerived(h.cols) {
				h.refusing = true
				s.rewrite = refusal("the result would show values computed from masked columns")
				return nil, "", nil
			}
		}
		masked, err := h.plan.MaskRow(s.maskBuf, body, h.cols, &h.stats)
		if err != nil {
			return nil, "", s.undecodable()
		}
		if masked != nil {
			s.maskBuf = masked
			return masked, "", nil
		}
	case 'H':
		if err := s.gate(ctx, h); err != nil {
			return nil, "", err
		}
		if h != nil && h.plan != nil {
			cm, err := newCopyMask(h.plan, h.text, h.lin)
			if err != nil {
				h.refusing = true
				s.rewrite = refusal("COPY output in this form cannot be masked (use text or CSV format)")
				return nil, "", nil
			}
			h.copy = cm
		}
	case 'd':
		if h != nil && h.copy != nil {
			rows := h.copy.feed(body, &h.stats)
			if len(rows) == 0 {
				return nil, "", nil
			}
			return s.copyData(rows), "", nil
		}
	case 'c':
		if h != nil && h.copy != nil {
			rest := h.copy.flush(&h.stats)
			if len(rest) > 0 {
				return append(s.copyData(rest), frame...), "", nil
			}
		}
	case 'G':
		if h != nil && h.copyIn != nil {
			h.copyIn.settle(true)
		}
		if err := s.gate(ctx, h); err != nil {
			return nil, "", err
		}
	case '1', '2', '3':
		// ParseComplete, BindComplete, CloseComplete: the name changed.
		if h == nil || h.kind != expName || h.msg != map[byte]byte{'1': 'P', '2': 'B', '3': 'C'}[typ] {
			return nil, "", s.outOfStep(typ)
		}
		if h.names != nil {
			h.names.settle(true)
		}
		if h.describe != "" {
			delete(s.descs, h.describe) // a new statement or portal: described anew
		}
		s.pop()
	case 'C', 'I', 's':
		if h != nil && h.kind == expQuery && h.names != nil && typ == 'C' {
			h.names.settle(true) // a PREPARE, DEALLOCATE or DISCARD, alone in its Query
		}
		if err := s.gate(ctx, h); err != nil {
			return nil, "", err
		}
		if h != nil && (h.kind == expQuery || h.kind == expExecute) {
			tag := ""
			if typ == 'C' {
				tag, _, _ = cstring(body)
			} else if typ == 's' {
				tag = "(portal suspended)"
			}
			s.result(h, tag, "", "")
			if h.kind == expExecute {
				s.pop()
			}
		}
	case 'E':
		var er pgproto3.ErrorResponse
		if err := er.Decode(body); err != nil {
			s.shutdown("malformed error from the target", fatal(stateProtocolViolation, "sluice: the target sent a malformed error", ""))
			return nil, "", errClosed
		}
		if h != nil && h.kind == expName {
			// The Parse, Bind or Close failed: the server's names are as
			// they were (pop settles the change as refused).
			s.pop()
			if h.msg != 'B' {
				return frame, "", nil // about the client's own message
			}
			// A Bind plans the statement: functions folded into constants
			// run then, and their errors can echo what they read. Masked
			// as an Execute's below.
		}
		if h != nil && (h.kind == expProbeQuery || h.kind == expProbeParse) && er.Code == "42703" && bytes.Contains([]byte(er.Message), []byte(h.marker)) {
			s.rewrite = h.denial
			if h.kind == expProbeParse {
				s.pop()
			}
			return nil, "", nil
		}
		// Errors can echo values (a failed cast shows the input): mask them
		// before the client or the audit log sees them.
		if p := s.planOf(h); p != nil {
			var st pgmask.Stats
			withheld := h != nil && h.plan != nil && p.WithholdValues(h.lin.Inputs, &er.Message, &er.Detail, &er.Hint, &er.Where, &er.InternalQuery)
			if p.MaskFields([]*string{&er.Message, &er.Detail, &er.Hint, &er.Where, &er.InternalQuery}, &st) || withheld {
				s.rewrite = &er
				if ev := st.Event(cmdOf(h)); ev != nil {
					_, _ = s.rec.Emit(ev)
				}
			}
		}
		if h != nil && (h.kind == expQuery || h.kind == expExecute) {
			if err := s.gate(ctx, h); err != nil {
				return nil, "", err
			}
			s.result(h, "", er.Code, er.Message)
			if h.kind == expExecute {
				s.pop()
			}
		}
		if h != nil && h.kind == expDescribe {
			s.pop()
		}
		if er.Severity == "FATAL" || er.Severity == "PANIC" {
			if s.rewrite != nil {
				_ = s.writeClient(s.rewrite)
				s.rewrite = nil
				return nil, "the target ended the session: " + er.Message, nil
			}
			return frame, "the target ended the session: " + er.Message, nil
		}
		if s.rewrite != nil {
			return nil, "", nil
		}
	case 'N':
		if p := s.planOf(h); p != nil {
			var nr pgproto3.NoticeResponse
			if err := nr.Decode(body); err == nil {
				var st pgmask.Stats
				withheld := h != nil && h.plan != nil && p.WithholdValues(h.lin.Inputs, &nr.Message, &nr.Detail, &nr.Hint, &nr.Where, &nr.InternalQuery)
				if p.MaskFields([]*string{&nr.Message, &nr.Detail, &nr.Hint, &nr.Where, &nr.InternalQuery}, &st) || withheld {
					s.rewrite = &nr
					return nil, "", nil
				}
			}
		}
	case 'A':
		if p := s.lastPlan.Load(); p != nil {
			var nr pgproto3.NotificationResponse
			if err := nr.Decode(body); err == nil && (p.Contains([]byte(nr.Payload)) || p.Contains([]byte(nr.Channel))) {
				var st pgmask.Stats
				nr.Payload = string(p.MaskText(nil, []byte(nr.Payload), &st))
				s.rewrite = &nr
				return nil, "", nil
			}
		}
	case 'Z':
		if err := s.gate(ctx, h); err != nil {
			return nil, "", err
		}
		if len(body) > 0 {
			s.lastTx.Store(uint32(body[0]))
		}
		// What the server skipped after an error, then what this answers.
		for h != nil && !h.endsWithReady() {
			s.pop()
			h = s.head()
		}
		if h == nil {
			return nil, "", s.outOfStep(typ)
		}
		if h.ends != nil {
			h.ends.settle(len(body) > 0 && body[0] == 'I') // the transaction ended
		}
		s.pop()
	case 'S':
		var ps pgproto3.ParameterStatus
		if err := ps.Decode(body); err == nil {
			s.upParams[ps.Name] = ps.Value
			if (ps.Name == "client_encoding" && ps.Value != "UTF8") || (ps.Name == "standard_conforming_strings" && ps.Value != "on") {
				s.shutdown("a lexer setting changed", fatal(stateFeatureNotSupported, "sluice: "+ps.Name+" changed to "+ps.Value+"; the session is closed", ""))
				return nil, "", errClosed
			}
		}
	case 'W':
		s.shutdown("replication refused", fatal(stateInsufficientPrivilege, "sluice: replication (COPY BOTH) is not allowed", ""))
		return nil, "", errClosed
	}
	return frame, "", nil
}

// planOf is the masking that applies to messages about h, else the
// session's most recent plan.
func (s *session) planOf(h *expect) *pgmask.Plan {
	if h != nil && h.plan != nil {
		return h.plan
	}
	return s.lastPlan.Load()
}

func cmdOf(h *expect) uint64 {
	if h == nil {
		return 0
	}
	return h.cmdID
}

func refusal(why string) *pgproto3.ErrorResponse {
	return &pgproto3.ErrorResponse{Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: stateInsufficientPrivilege,
		Message: "sluice: " + why + "; refused by the masking policy"}
}

// undecodable ends a session whose masked data cannot be inspected.
func (s *session) undecodable() error {
	s.shutdown("masked data could not be decoded", fatal(stateFeatureNotSupported,
		"sluice: "+pgmask.ErrUndecodable.Error()+"; the session is closed rather than pass it through", ""))
	return errClosed
}

// copyData frames rows as one CopyData message.
func (s *session) copyData(rows []byte) []byte {
	out := make([]byte, 5, 5+len(rows))
	out[0] = 'd'
	binary.BigEndian.PutUint32(out[1:], uint32(4+len(rows)))
	return append(out, rows...)
}

func cloneFields(f []pgproto3.FieldDescription) []pgproto3.FieldDescription {
	out := make([]pgproto3.FieldDescription, len(f))
	for i, x := range f {
		x.Name = append([]byte(nil), x.Name...)
		out[i] = x
	}
	return out
}

// result records what a command produced.
func (s *session) result(e *expect, tag, code, msg string) {
	if ev := e.stats.Event(e.cmdID); ev != nil {
		_, _ = s.rec.Emit(ev)
		e.stats = pgmask.Stats{}
	}
	r := &sessionv1.Result{CommandId: e.cmdID, CommandTag: tag, Rows: e.rows, DurationUs: time.Since(e.start).Microseconds(), ErrorCode: code, ErrorMessage: msg}
	if n, ok := tagRows(tag); ok {
		r.Rows = n
	}
	e.rows = 0
	s.resMu.Lock()
	s.pendingRes = append(s.pendingRes, r)
	if s.resTimer == nil {
		s.resTimer = time.AfterFunc(resultDelay, s.flushResults)
	}
	s.resMu.Unlock()
}

// resultDelay bounds how long a result summary waits for the next command
// to travel with.
const resultDelay = 20 * time.Millisecond

// takeResults hands over the results not yet recorded.
func (s *session) takeResults() []*sessionv1.Result {
	s.resMu.Lock()
	defer s.resMu.Unlock()
	out := s.pendingRes
	s.pendingRes = nil
	if s.resTimer != nil {
		s.resTimer.Stop()
		s.resTimer = nil
	}
	return out
}

// flushResults records pending results on their own (the session is idle).
func (s *session) flushResults() {
	for _, r := range s.takeResults() {
		_, _ = s.rec.Emit(&sessionv1.Event{Body: &sessionv1.Event_Result{Result: r}})
	}
}

// tagRows reads the row count at the end of a command tag.
func tagRows(tag string) (int64, bool) {
	i := len(tag)
	for i > 0 && tag[i-1] >= '0' && tag[i-1] <= '9' {
		i--
	}
	if i == len(tag) || i == 0 || tag[i-1] != ' ' {
		return 0, false
	}
	n, err := strconv.ParseInt(tag[i:], 10, 64)
	return n, err == nil
}

// outOfStep ends a session whose server answers no longer line up with
// what the worker sent (a message the server ignored): nothing more is
// relayed, since what an answer belongs to decides how it is masked.
func (s *session) outOfStep(typ byte) error {
	s.w.cfg.Log.Error().Str("session", s.id).Str("message", string(typ)).Msg("server answers out of step with the client's messages; session closed")
	s.shutdown("protocol out of step", fatal(stateProtocolViolation, "sluice: the session's messages and the server's answers are out of step; the session is closed", ""))
	return errClosed
}
