package auditchain

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	auditv1 "sluice.dev/sluice/proto/sluice/audit/v1"
)

// Anchor is a signed checkpoint's fingerprint kept outside the AUDIT
// stream: in a file the operator names (the recorder appends one per
// checkpoint), in the SIEM (the exporter sends one per checkpoint), or
// wherever `sluice audit anchor` output is kept. Whoever can delete and
// recreate the stream cannot reach it, so verification against it finds a
// stream that lost its history. One anchor is one JSON line.
type Anchor struct {
	Kind       string    `json:"kind"` // always "checkpoint"
	Checkpoint string    `json:"checkpoint"`
	Hash       string    `json:"hash"` // hex of CheckpointHash
	StreamSeq  uint64    `json:"stream_seq"`
	Time       time.Time `json:"time"`
	KeyID      string    `json:"key_id"`
	// PublicKey (base64) pins the key that signed the checkpoint: a key
	// replaced in the stream's key bucket does not count.
	PublicKey string `json:"public_key,omitempty"`
	// Sessions is how many session heads the checkpoint signed.
	Sessions int `json:"sessions"`
}

// KindCheckpoint is an anchor's kind.
const KindCheckpoint = "checkpoint"

// AnchorOf is the anchor of checkpoint c, stored at streamSeq.
func AnchorOf(c *auditv1.Checkpoint, streamSeq uint64, pub ed25519.PublicKey) Anchor {
	a := Anchor{Kind: KindCheckpoint, Checkpoint: c.GetId(), Hash: hex.EncodeToString(CheckpointHash(c)), StreamSeq: streamSeq,
		Time: c.GetTime().AsTime().UTC(), KeyID: c.GetKeyId(), Sessions: len(c.GetHeads())}
	if len(pub) == ed25519.PublicKeySize && KeyID(pub) == c.GetKeyId() {
		a.PublicKey = base64.StdEncoding.EncodeToString(pub)
	}
	return a
}

// Check reports what is wrong with a, or nil.
func (a *Anchor) Check() error {
	if a.Kind != KindCheckpoint || a.Checkpoint == "" {
		return errors.New("not a checkpoint anchor")
	}
	if h, err := hex.DecodeString(a.Hash); err != nil || len(h) != 32 {
		return errors.New("the anchor's hash is not 32 bytes of hex")
	}
	if a.PublicKey != "" {
		pub, err := base64.StdEncoding.DecodeString(a.PublicKey)
		if err != nil || len(pub) != ed25519.PublicKeySize || KeyID(pub) != a.KeyID {
			return errors.New("the anchor's public key is not the Ed25519 key its key id names")
		}
	}
	return nil
}

// Key is the anchored public key, if the anchor pins one.
func (a *Anchor) Key() ed25519.PublicKey {
	pub, err := base64.StdEncoding.DecodeString(a.PublicKey)
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return nil
	}
	return pub
}

// Matches reports whether c is the anchored checkpoint.
func (a *Anchor) Matches(c *auditv1.Checkpoint) bool {
	return c.GetId() == a.Checkpoint && hex.EncodeToString(CheckpointHash(c)) == a.Hash
}

// ReadAnchor returns the last anchor in r: the recorder's anchor file, a
// SIEM export (syslog lines or HEC events holding anchors), or saved
// `sluice audit anchor` output (other lines are skipped). It fails if r
// holds none.
func ReadAnchor(r io.Reader) (*Anchor, error) {
	var last *Anchor
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		// An anchor alone, or in a syslog line, or as a HEC event.
		line := sc.Bytes()
		i := bytes.IndexByte(line, '{')
		if i < 0 {
			continue
		}
		var a Anchor
		if json.Unmarshal(line[i:], &a) != nil || a.Kind != KindCheckpoint {
			var hec struct {
				Event Anchor `json:"event"`
			}
			if json.Unmarshal(line[i:], &hec) != nil || hec.Event.Kind != KindCheckpoint {
				continue
			}
			a = hec.Event
		}
		if err := a.Check(); err != nil {
			return nil, err
		}
		last = &a
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if last == nil {
		return nil, errors.New("no checkpoint anchor in it")
	}
	return last, nil
}

// LastAnchor reads the last anchor of the file at path; a missing file has
// none (nil, nil).
func LastAnchor(path string) (*Anchor, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	a, err := ReadAnchor(f)
	if err != nil {
		return nil, fmt.Errorf("audit anchor %s: %w", path, err)
	}
	return a, nil
}

// AppendAnchor appends a to the file at path (created 0600) and syncs it.
func AppendAnchor(path string, a Anchor) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	b, err := json.Marshal(a)
	if err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
