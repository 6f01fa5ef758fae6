package recording

import (
	"fmt"

	"github.com/klauspost/compress/s2"

	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
)

// TerminalIO builds the record of a chunk of terminal or command output
// (or input). A chunk of 1 KiB or more is stored S2-compressed when that
// saves a tenth or more: terminal output (logs, listings) usually shrinks
// by several times, and every recorded byte is stored twice (SESSIONS,
// then AUDIT) and hashed into the chain.
func TerminalIO(stream string, data []byte, offsetMs int64) *sessionv1.TerminalIO {
	io := &sessionv1.TerminalIO{Stream: stream, OffsetMs: offsetMs, Size: int64(len(data))}
	if len(data) >= 1<<10 {
		if c := s2.Encode(nil, data); len(c) < len(data)*9/10 {
			io.Data, io.Encoding = c, "s2"
			return io
		}
	}
	io.Data = append([]byte(nil), data...)
	return io
}

// IOData is the chunk a TerminalIO record holds, decoded.
func IOData(io *sessionv1.TerminalIO) ([]byte, error) {
	switch io.GetEncoding() {
	case "":
		return io.GetData(), nil
	case "s2":
		b, err := s2.Decode(nil, io.GetData())
		if err != nil {
			return nil, fmt.Errorf("recording: terminal data: %w", err)
		}
		return b, nil
	}
	return nil, fmt.Errorf("recording: terminal data in an unknown encoding %q", io.GetEncoding())
}
