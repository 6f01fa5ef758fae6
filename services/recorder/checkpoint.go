package recorder

import (
	"context"
	"errors"
	"sort"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

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

// Checkpoint signs the heads advanced since the last checkpoint, if any.
func (s *Service) Checkpoint(ctx context.Context) error {
	s.mu.Lock()
	dirty := s.dirty
	s.dirty = map[string]*auditv1.ChainHead{}
	s.mu.Unlock()
	if len(dirty) == 0 {
		return nil
	}
	heads := make([]*auditv1.ChainHead, 0, len(dirty))
	for _, h := range dirty {
		heads = append(heads, h)
	}
	sort.Slice(heads, func(i, j int) bool { return heads[i].GetSessionId() < heads[j].GetSessionId() })
	var err error
	for attempt := 0; attempt < 10; attempt++ {
		if err = s.publishCheckpoint(ctx, heads); err == nil {
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

func (s *Service) publishCheckpoint(ctx context.Context, heads []*auditv1.ChainHead) error {
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
	auditchain.SignCheckpoint(cp, s.cfg.SigningKey, time.Now())
	data, err := proto.Marshal(cp)
	if err != nil {
		return err
	}
	m := nats.NewMsg(auditlog.SubjectCheckpoint)
	m.Data = data
	_, err = s.cfg.Conn.JS.PublishMsg(ctx, m, jetstream.WithMsgID("cp-"+cp.GetId()), jetstream.WithExpectStream(bus.StreamAudit),
		jetstream.WithExpectLastSequencePerSubject(lastSeq))
	return err
}
