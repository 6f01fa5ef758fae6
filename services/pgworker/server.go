package pgworker

import (
	"bytes"
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
)

// serverLoop relays the server's messages to the client, attributing
// results to the commands they answer, holding results until their record
// is durable, and turning probe failures into denials.
func (s *session) serverLoop(ctx context.Context) {
	for {
		typ, body, frame, err := s.sr.next()
		if err != nil {
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
		if out != nil {
			_, err = s.cw.Write(out)
		} else {
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
		s.shutdown("the audit stream stopped accepting records", fatal(stateSystemError,
			"sluice: the audit stream is not accepting records; the result is withheld and the session is closed", ""))
		return errClosed
	}
	e.durable = true
	return nil
}

// onServer decides what to send for one server message: the frame itself,
// or nil with s.rewrite set to a replacement. end, if set, ends the session
// after the message is delivered.
func (s *session) onServer(ctx context.Context, typ byte, body, frame []byte) (out []byte, end string, err error) {
	h := s.head()
	switch typ {
	case 'D':
		if h != nil {
			if err := s.gate(ctx, h); err != nil {
				return nil, "", err
			}
			h.rows++
		}
	case 'T', 'H', 'd', 'c', 'G':
		if err := s.gate(ctx, h); err != nil {
			return nil, "", err
		}
	case 'C', 'I', 's':
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
		if h != nil && (h.kind == expProbeQuery || h.kind == expProbeParse) && er.Code == "42703" && bytes.Contains([]byte(er.Message), []byte(h.marker)) {
			s.rewrite = h.denial
			if h.kind == expProbeParse {
				s.pop()
			}
			return nil, "", nil
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
		if er.Severity == "FATAL" || er.Severity == "PANIC" {
			return frame, "the target ended the session: " + er.Message, nil
		}
	case 'Z':
		if err := s.gate(ctx, h); err != nil {
			return nil, "", err
		}
		for h != nil {
			s.pop()
			if h.endsWithReady() {
				break
			}
			h = s.head()
		}
	case 'S':
		var ps pgproto3.ParameterStatus
		if err := ps.Decode(body); err == nil {
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

// result records what a command produced.
func (s *session) result(e *expect, tag, code, msg string) {
	r := &sessionv1.Result{CommandId: e.cmdID, CommandTag: tag, Rows: e.rows, DurationUs: time.Since(e.start).Microseconds(), ErrorCode: code, ErrorMessage: msg}
	if n, ok := tagRows(tag); ok {
		r.Rows = n
	}
	e.rows = 0
	_, _ = s.rec.Emit(&sessionv1.Event{Body: &sessionv1.Event_Result{Result: r}})
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
