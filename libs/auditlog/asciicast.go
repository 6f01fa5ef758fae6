package auditlog

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"sluice.dev/sluice/libs/recording"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
)

// Asciicast writes a session's terminal streams as asciicast v2 (the
// asciinema format): a header line, then one [seconds, code, data] line per
// chunk — "o" for what the client's terminal showed (standard output and
// standard error, as a terminal shows both), "i" for a shell's input, "r"
// for a resize. It reports whether the session recorded any terminal data.
//
// Chunks split UTF-8 sequences wherever the network did: an incomplete
// sequence at a chunk's end is carried over to the next chunk of its
// stream, so no character becomes U+FFFD.
func Asciicast(w io.Writer, entries []Entry) (bool, error) {
	width, height := 80, 24
	var started int64
	for _, e := range entries {
		if e.Event == nil {
			continue
		}
		if s := e.Event.GetStarted(); s != nil && started == 0 {
			started = e.Event.GetTime().AsTime().Unix()
		}
		if io := e.Event.GetIo(); io != nil && io.GetStream() == "r" {
			if _, err := fmt.Sscanf(string(io.GetData()), "%dx%d", &width, &height); err == nil {
				break
			}
		}
	}
	header := map[string]any{"version": 2, "width": width, "height": height, "timestamp": started}
	enc := json.NewEncoder(w)
	if err := enc.Encode(header); err != nil {
		return false, err
	}
	carry := map[string][]byte{}
	recorded := false
	for _, e := range entries {
		io := e.Event.GetIo()
		if io == nil {
			continue
		}
		recorded = true
		code := io.GetStream()
		switch code {
		case "e":
			code = "o"
		case "o", "i", "r":
		default:
			continue
		}
		t := float64(io.GetOffsetMs()) / 1000
		if code == "r" {
			if err := enc.Encode([]any{t, "r", string(io.GetData())}); err != nil {
				return recorded, err
			}
			continue
		}
		chunk, err := recording.IOData(io)
		if err != nil {
			return recorded, err
		}
		data := append(carry[code], chunk...)
		cut := completeUTF8(data)
		carry[code] = append([]byte(nil), data[cut:]...)
		if cut == 0 {
			continue
		}
		if err := enc.Encode([]any{t, code, string(data[:cut])}); err != nil {
			return recorded, err
		}
	}
	return recorded, nil
}

// completeUTF8 is how much of b ends on a character boundary: b without an
// incomplete sequence at its end (at most three bytes). Invalid bytes
// elsewhere stay (the encoder replaces them).
func completeUTF8(b []byte) int {
	for i := len(b) - 1; i >= 0 && i >= len(b)-3; i-- {
		c := b[i]
		if c < 0x80 {
			return len(b)
		}
		if utf8.RuneStart(c) {
			if !utf8.FullRune(b[i:]) {
				return i
			}
			return len(b)
		}
	}
	return len(b)
}

// terminalText is a chunk of terminal output as lines a transcript can
// show: escape sequences dropped, carriage returns folded, other control
// characters made visible.
func terminalText(b []byte) string {
	s := string(b)
	var out strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == 0x1b:
			// CSI: ESC [ params final; OSC: ESC ] ... BEL or ESC \.
			if i+1 < len(s) && s[i+1] == '[' {
				j := i + 2
				for j < len(s) && (s[j] < 0x40 || s[j] > 0x7e) {
					j++
				}
				i = j
				continue
			}
			if i+1 < len(s) && s[i+1] == ']' {
				j := i + 2
				for j < len(s) && s[j] != 0x07 && !(s[j] == 0x1b && j+1 < len(s) && s[j+1] == '\\') {
					j++
				}
				if j < len(s) && s[j] == 0x1b {
					j++
				}
				i = j
				continue
			}
			i++
		case c == '\r':
		case c == '\n' || c == '\t':
			out.WriteByte(c)
		case c < 0x20 || c == 0x7f:
			fmt.Fprintf(&out, "\\x%02x", c)
		default:
			out.WriteByte(c)
		}
	}
	return out.String()
}

// ioBlock gathers consecutive terminal chunks of a transcript.
type ioBlock struct {
	streams []string
	data    []byte
}

func (b *ioBlock) add(io *sessionv1.TerminalIO) {
	if io.GetStream() == "r" {
		return
	}
	data, err := recording.IOData(io)
	if err != nil {
		data = []byte(fmt.Sprintf("[%s]", err))
	}
	b.data = append(b.data, data...)
	if len(b.streams) == 0 || b.streams[len(b.streams)-1] != io.GetStream() {
		b.streams = append(b.streams, io.GetStream())
	}
}

func (b *ioBlock) flush(w io.Writer) {
	if len(b.data) == 0 {
		return
	}
	text := strings.TrimRight(terminalText(b.data), "\n")
	for _, line := range strings.Split(text, "\n") {
		fmt.Fprintf(w, "              │ %s\n", line)
	}
	b.data, b.streams = nil, nil
}
