package recorder

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"sort"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"sluice.dev/sluice/libs/auditchain"
	"sluice.dev/sluice/libs/auditlog"
	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/recording"
	auditv1 "sluice.dev/sluice/proto/sluice/audit/v1"
)

// checkpoints signs the chain heads advanced since the last checkpoint.
func (s *Service) checkpoints(ctx context.Context) error {
	t := time.NewTicker(s.cfg.CheckpointInterval)
	defer t.Stop()
	// At once: a stream that lost its history while no recorder ran says
	// so before anything new is recorded in it.
	if err := s.Checkpoint(ctx); err != nil && ctx.Err() == nil {
		s.cfg.Log.Warn().Err(err).Msg("checkpoint failed; will retry")
	}
	for {
		select {
		case <-ctx.Done():
			// One last checkpoint for what was recorded since the last one.
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = s.Checkpoint(sctx)
			cancel()
			return nil
		case <-t.C:
			if err := s.Checkpoint(ctx); err != nil && ctx.Err() == nil {
				s.cfg.Log.Warn().Err(err).Msg("checkpoint failed; will retry")
			}
		}
	}
}

// Checkpoint signs the heads advanced since the last checkpoint, if any,
// and checks that the last anchored checkpoint is still in the stream.
func (s *Service) Checkpoint(ctx context.Context) error {
	lost, err := s.lostHistory(ctx)
	if err != nil {
		return err
	}
	s.mu.Lock()
	dirty := s.dirty
	s.dirty = map[string]*auditv1.ChainHead{}
	s.mu.Unlock()
	if len(dirty) == 0 && lost == nil {
		return nil
	}
	heads := make([]*auditv1.ChainHead, 0, len(dirty))
	for _, h := range dirty {
		heads = append(heads, h)
	}
	sort.Slice(heads, func(i, j int) bool { return heads[i].GetSessionId() < heads[j].GetSessionId() })
	for attempt := 0; attempt < 10; attempt++ {
		if err = s.publishCheckpoint(ctx, heads, lost); err == nil {
			return nil
		}
		if ctx.Err() != nil {
			break
		}
		time.Sleep(time.Duration(attempt+1) * 20 * time.Millisecond)
	}
	// Put the heads back so the next round covers them.
	s.mu.Lock()
	for k, h := range dirty {
		if newer, ok := s.dirty[k]; ok {
			newer.Records = append(h.Records, newer.Records...)
		} else {
			s.dirty[k] = h
		}
	}
	s.mu.Unlock()
	return err
}

// lostHistory reports the anchored checkpoint if the stream no longer
// holds it: the stream was deleted, purged or replaced.
func (s *Service) lostHistory(ctx context.Context) (*auditv1.LostHistory, error) {
	a := s.anchor
	if a == nil {
		return nil, nil
	}
	m, err := s.audit.GetMsg(ctx, a.StreamSeq)
	if err == nil && m.Subject == auditlog.SubjectCheckpoint {
		var cp auditv1.Checkpoint
		if proto.Unmarshal(m.Data, &cp) == nil && a.Matches(&cp) {
			return nil, nil
		}
	} else if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, err // the stream cannot be read now: no verdict
	}
	hash, _ := hex.DecodeString(a.Hash)
	return &auditv1.LostHistory{Checkpoint: a.Checkpoint, Hash: hash, StreamSeq: a.StreamSeq, AnchoredAt: timestamppb.New(a.Time)}, nil
}

func (s *Service) publishCheckpoint(ctx context.Context, heads []*auditv1.ChainHead, lost *auditv1.LostHistory) error {
	cp := &auditv1.Checkpoint{Id: recording.NewSessionID(), Heads: heads}
	var lastSeq uint64
	raw, err := s.audit.GetLastMsgForSubject(ctx, auditlog.SubjectCheckpoint)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
	case err != nil:
		return err
	default:
		var prev auditv1.Checkpoint
		if err := proto.Unmarshal(raw.Data, &prev); err != nil {
			return err
		}
		cp.Previous, cp.PreviousHash = prev.GetId(), auditchain.CheckpointHash(&prev)
		lastSeq = raw.Sequence
	}
	if lost != nil {
		// Chain to what was anchored, and say that it is gone: never a
		// new chain that looks as if nothing had been before it.
		cp.Previous, cp.PreviousHash, cp.LostHistory = lost.GetCheckpoint(), lost.GetHash(), lost
	}
	auditchain.SignCheckpoint(cp, s.cfg.SigningKey, time.Now())
	data, err := proto.Marshal(cp)
	if err != nil {
		return err
	}
	m := nats.NewMsg(auditlog.SubjectCheckpoint)
	m.Data = data
	ack, err := s.cfg.Conn.JS.PublishMsg(ctx, m, jetstream.WithMsgID("cp-"+cp.GetId()), jetstream.WithExpectStream(bus.StreamAudit),
		jetstream.WithExpectLastSequencePerSubject(lastSeq))
	if err != nil {
		return err
	}
	if lost != nil {
		s.cfg.Log.Error().Str("anchored_checkpoint", lost.GetCheckpoint()).Uint64("anchored_stream_seq", lost.GetStreamSeq()).
			Time("anchored_at", lost.GetAnchoredAt().AsTime()).Str("checkpoint", cp.GetId()).
			Msg("the audit stream lost its history: the anchored checkpoint is gone (deleted, purged or replaced); recorded a signed lost-history checkpoint")
	}
	a := auditchain.AnchorOf(cp, ack.Sequence, s.cfg.SigningKey.Public().(ed25519.PublicKey))
	s.anchor = &a
	if s.cfg.AnchorFile != "" {
		if err := auditchain.AppendAnchor(s.cfg.AnchorFile, a); err != nil {
			s.cfg.Log.Error().Err(err).Str("file", s.cfg.AnchorFile).Msg("audit anchor not written")
		}
	}
	return nil
}
