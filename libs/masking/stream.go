package masking

import (
	"bytes"
	"strings"
)

// Stream masks a byte stream that arrives in chunks (terminal and command
// output), so that a value split across two chunks is still found. It
// releases what no later byte can change: whole lines, or, in a long line,
// everything up to the last blank; it holds the rest until more arrives or
// Flush. A private key block is held from its BEGIN line until its END
// line; one that grows past MaxHold is masked whole, and so is everything
// after it up to its END line.
type Stream struct {
	m     *Masker
	carry []byte
	out   []byte
	// inKey: a key block was released masked before its END line; bytes
	// up to that line are part of it.
	inKey  bool
	Counts Counts
}

// Stream thresholds.
const (
	// MaxLine is how much of a line without a newline is held before
	// it is released up to a blank.
	MaxLine = 4 << 10
	// MaxHold bounds a held private key block.
	MaxHold = 64 << 10
)

// NewStream starts masking a stream.
func (m *Masker) NewStream() *Stream { return &Stream{m: m} }

// Write takes the next chunk and returns the masked bytes that may be
// released now (possibly none), valid until the next call.
func (s *Stream) Write(chunk []byte) []byte {
	// Without a held tail the chunk is scanned where it is: no copy.
	buf := chunk
	if len(s.carry) > 0 {
		buf = append(s.carry, chunk...)
	}
	s.carry = nil
	// The output reuses the stream's buffer: it is valid until the next
	// call (callers send or copy it at once).
	out := s.out[:0]
	defer func() { s.out = out[:0] }()
	if s.inKey {
		end := keyEnd(buf)
		if end < 0 {
			if len(buf) > 0 {
				// Still inside the key: nothing of it leaves. Keep the
				// last bytes in case the END line is split.
				keep := min(len(buf), 64)
				s.carry = append([]byte(nil), buf[len(buf)-keep:]...)
			}
			return nil
		}
		s.inKey = false
		buf = buf[end:]
	}
	cut := s.cut(buf)
	if cut < 0 {
		// An open key block bigger than we hold: mask it whole and
		// everything up to its END line.
		begin := openKey(buf)
		out = s.m.AppendMasked(out, buf[:begin], &s.Counts)
		out = append(out, WholeMarker...)
		s.Counts.inc(detPEM)
		s.inKey = true
		return out
	}
	out = s.m.AppendMasked(out, buf[:cut], &s.Counts)
	s.carry = append([]byte(nil), buf[cut:]...)
	return out
}

// Flush releases what is held (the stream paused or ended), masked. A key
// block still open is masked to its end and the stream treats what follows
// as part of it until its END line.
func (s *Stream) Flush() []byte {
	if len(s.carry) == 0 {
		return nil
	}
	buf := s.carry
	s.carry = nil
	if s.inKey {
		return nil
	}
	if openKey(buf) >= 0 {
		s.inKey = true
	}
	return s.m.AppendMasked(nil, buf, &s.Counts)
}

// FlushWords releases what is held up to its last blank (an interactive
// prompt, "$ "), keeping a word that may still grow into a value.
func (s *Stream) FlushWords() []byte {
	if len(s.carry) == 0 || s.inKey || openKey(s.carry) >= 0 {
		return nil
	}
	sp := safeBlank(s.carry)
	if sp < 0 {
		return nil
	}
	buf := s.carry[:sp+1]
	s.carry = append([]byte(nil), s.carry[sp+1:]...)
	return s.m.AppendMasked(nil, buf, &s.Counts)
}

// Held is how many bytes wait for more input.
func (s *Stream) Held() int { return len(s.carry) }

// cut is how much of buf may be masked and released now; -1 when an open
// key block has grown past MaxHold.
func (s *Stream) cut(buf []byte) int {
	limit := len(buf)
	if begin := openKey(buf); begin >= 0 {
		if len(buf)-begin > MaxHold {
			return -1
		}
		limit = begin
	}
	if nl := bytes.LastIndexByte(buf[:limit], '\n'); nl >= 0 {
		return notInKey(buf, nl+1)
	}
	if limit < len(buf) {
		return limit // up to the key block, which is held
	}
	if len(buf) <= MaxLine {
		return 0
	}
	// A long line: release up to its last blank between two words that
	// are not groups of one number (a card, an IBAN, a phone number), so
	// that no value is split.
	if sp := safeBlank(buf); sp > 0 {
		return sp + 1
	}
	// No such blank (minified JSON, base64): hold up to MaxHold, then
	// release all but the last 8 KiB, longer than any value a detector
	// matches.
	if len(buf) <= MaxHold {
		return 0
	}
	return len(buf) - 8<<10
}

// safeBlank is the index of the last blank in b that is not between two
// digits, or -1.
func safeBlank(b []byte) int {
	for i := len(b) - 1; i > 0; i-- {
		if b[i] != ' ' && b[i] != '\t' {
			continue
		}
		if i+1 < len(b) && isDigit(b[i-1]) && isDigit(b[i+1]) {
			continue
		}
		return i
	}
	return -1
}

// notInKey moves a cut back to the start of a key block that spans it, so
// that a block is masked whole, END line included.
func notInKey(buf []byte, cut int) int {
	const begin = "-----BEGIN "
	for i := 0; i < cut; {
		j := bytes.Index(buf[i:cut], []byte(begin))
		if j < 0 {
			break
		}
		j += i
		if n, ok := matchPEM(buf, j); ok && n > cut {
			return j
		}
		i = j + len(begin)
	}
	return cut
}

// openKey is where a private key block opens in buf without closing, or -1.
func openKey(buf []byte) int {
	const begin = "-----BEGIN "
	at := -1
	for i := 0; ; {
		j := bytes.Index(buf[i:], []byte(begin))
		if j < 0 {
			break
		}
		j += i
		if n, ok := matchPEM(buf, j); ok && !closedAt(buf, j, n) {
			at = j
			break
		}
		i = j + len(begin)
	}
	if at < 0 {
		// The last line, still incomplete, may be a BEGIN line whose
		// label has not all arrived.
		tail := buf[bytes.LastIndexByte(buf, '\n')+1:]
		if k := bytes.Index(tail, []byte("-----BEGIN")); k >= 0 && len(tail)-k < len(begin)+64 {
			return len(buf) - len(tail) + k
		}
		if k := bytes.LastIndexByte(tail, ' '); len(tail) > 0 && strings.HasPrefix(begin, string(tail[k+1:])) && tail[len(tail)-1] == '-' {
			return len(buf) - len(tail) + k + 1
		}
	}
	return at
}

// closedAt reports whether the block matched at buf[i:n] ends with its END
// line (rather than at the end of the buffer).
func closedAt(buf []byte, i, n int) bool {
	return bytes.Contains(buf[i:n], []byte("-----END "))
}

// keyEnd is the index just past the END line of a private key block, or -1.
func keyEnd(buf []byte) int {
	i := bytes.Index(buf, []byte("-----END "))
	if i < 0 {
		return -1
	}
	j := bytes.Index(buf[i+len("-----END "):], []byte("-----"))
	if j < 0 {
		return -1
	}
	return i + len("-----END ") + j + len("-----")
}
