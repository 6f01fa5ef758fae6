package gateway

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"sluice.dev/sluice/libs/bus"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
)

// announce writes the worker's presence to sluice_workers, and again every
// bus.WorkerPresenceEvery until ctx ends or withdraw is called, which
// deletes it (the worker's sessions have ended by then). A worker killed
// outright goes silent instead: once it has been for bus.WorkerSilence,
// the sessions it left open are shown lost (sessionindex.Workers).
//
// Presence is what the sessions list shows, not a control: a write that
// fails is said in the log and tried again, and never stops the worker.
// The first is tried before the worker serves, for up to a few seconds.
func (k *Kernel) announce(ctx context.Context) (withdraw func()) {
	data, _ := proto.Marshal(&sessionv1.WorkerPresence{Name: k.cfg.Name, Protocol: k.cfg.Protocol, StartedAt: timestamppb.New(k.started)})
	p := &presence{k: k, key: bus.WorkerKey(k.cfg.Name), data: data}
	first, cancelFirst := context.WithTimeout(ctx, 3*time.Second)
	for p.put(first) != nil && first.Err() == nil {
		select {
		case <-first.Done():
		case <-time.After(250 * time.Millisecond):
		}
	}
	cancelFirst()
	pctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.keep(pctx)
	}()
	return func() {
		cancel()
		<-done
		dctx, dcancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer dcancel()
		if err := p.delete(dctx); err != nil {
			k.cfg.Log.Warn().Err(err).Msg("presence not withdrawn: this worker's sessions (all ended) will be shown lost once it counts as silent")
		}
	}
}

// presence writes one worker's presence (one goroutine at a time).
type presence struct {
	k    *Kernel
	kv   jetstream.KeyValue
	key  string
	data []byte
	// failing says the last write failed (the log said so).
	failing bool
}

func (p *presence) put(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, bus.WorkerPresenceEvery)
	defer cancel()
	var err error
	if p.kv == nil {
		p.kv, err = p.k.cfg.Conn.JS.KeyValue(ctx, bus.BucketWorkers)
	}
	if err == nil {
		_, err = p.kv.Put(ctx, p.key, p.data)
	}
	switch {
	case err != nil && ctx.Err() != nil && errors.Is(ctx.Err(), context.Canceled):
	case err != nil && !p.failing:
		p.failing = true
		p.k.cfg.Log.Warn().Err(err).Msg("presence write failed; past " + bus.WorkerSilence.String() + " of failures this worker's open sessions are shown lost")
	case err == nil && p.failing:
		p.failing = false
		p.k.cfg.Log.Info().Msg("presence written again")
	}
	return err
}

// keep writes the presence every bus.WorkerPresenceEvery until ctx ends.
func (p *presence) keep(ctx context.Context) {
	t := time.NewTicker(bus.WorkerPresenceEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_ = p.put(ctx)
		}
	}
}

func (p *presence) delete(ctx context.Context) error {
	if p.kv == nil {
		return nil // never written
	}
	err := p.kv.Delete(ctx, p.key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	return err
}
