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
// The presence is also the worker's lease. "Lost" says a session will never
// go on, and an administrator who kills a lost session is told nobody holds
// it; a worker only cut off from NATS (a partition, a paused VM) would
// otherwise take its sessions up again once it is back. So a worker that
// has not written its presence for FenceAfter (bus.WorkerFence, shorter
// than bus.WorkerSilence) is fenced: its sessions end, and nothing more is
// recorded, so nothing runs, until a write succeeds again. The recorder
// asks before every batch (recording.Recorder.Fenced), so even a worker
// that wakes from a pause with statements in hand records none of them.
// The first write is tried before the worker serves, for up to a few
// seconds; the lease starts then.
func (k *Kernel) announce(ctx context.Context) (withdraw func()) {
	data, _ := proto.Marshal(&sessionv1.WorkerPresence{Name: k.cfg.Name, Protocol: k.cfg.Protocol, StartedAt: timestamppb.New(k.started)})
	p := &presence{k: k, key: bus.WorkerKey(k.cfg.Name), data: data}
	k.renewLease()
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
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		k.watchLease(pctx)
	}()
	return func() {
		cancel()
		<-done
		<-watched
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
	ctx, cancel := context.WithTimeout(ctx, presenceWriteTimeout)
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
		p.k.cfg.Log.Warn().Err(err).Msg("presence write failed; past " + p.k.cfg.FenceAfter.String() +
			" of failures this worker ends its sessions and records nothing until it is written again")
	case err == nil && p.failing:
		p.failing = false
		p.k.cfg.Log.Info().Msg("presence written again")
	}
	if err == nil {
		if p.k.fencedErr() != nil {
			// Written after the lease lapsed (a worker that wakes from a
			// pause writes before its watchdog looks): its sessions end
			// before it may record again.
			p.k.fence()
		}
		p.k.renewLease()
		p.k.unfence()
	}
	return err
}

// renewLease extends the lease by FenceAfter from now.
func (k *Kernel) renewLease() {
	k.leaseWall.Store(time.Now().Add(k.cfg.FenceAfter).UnixNano())
	k.lease.Store(int64(time.Since(k.started) + k.cfg.FenceAfter))
}

// errFenced is what a fenced worker's recorder answers.
var errFenced = errors.New("this worker could not write its presence for too long (cut off from NATS?): it records nothing, so runs nothing, until it writes it again")

// fencedErr says whether the lease lapsed (recording.Recorder.Fenced), so
// that a worker paused past its lease finds it lapsed the moment it runs
// again. Two clocks measure it, and either one past the deadline fences:
// the monotonic clock (which no change of the time of day moves) and the
// wall clock (which goes on while a host is suspended, when the monotonic
// clock stops).
func (k *Kernel) fencedErr() error {
	l := k.lease.Load()
	if l == 0 {
		return nil
	}
	if time.Since(k.started) > time.Duration(l) || time.Now().UnixNano() > k.leaseWall.Load() {
		return errFenced
	}
	return nil
}

// watchLease fences the worker once its lease lapses, until ctx ends.
func (k *Kernel) watchLease(ctx context.Context) {
	t := time.NewTicker(min(time.Second, k.cfg.FenceAfter/4))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if k.fencedErr() != nil {
			k.fence()
		}
	}
}

// fence ends every open session, once per lapse: first nothing more of
// theirs is sent (recording.Recorder.Cut), then each ends. The sessions
// opened before never record again, but their ends (which follow once the
// presence is written again).
func (k *Kernel) fence() {
	k.fenceMu.Lock()
	defer k.fenceMu.Unlock()
	if k.fenced.Load() {
		return
	}
	k.Rec.Cut(errFenced)
	k.fenced.Store(true)
	k.metrics.fenced.Set(1)
	k.cfg.Log.Error().Dur("after", k.cfg.FenceAfter).Int64("sessions", k.Active()).
		Msg("presence not written for too long: fenced, ending every session; nothing is recorded or run until it is written again")
	k.each(func(s Session) {
		// Each in its own goroutine: ending a session may wait on its
		// client, and its end is recorded later.
		go s.End(EndFenced, "this gateway was cut off from its control plane")
	})
}

// unfence says the worker serves again, once per lapse.
func (k *Kernel) unfence() {
	k.fenceMu.Lock()
	defer k.fenceMu.Unlock()
	if k.fenced.Swap(false) {
		k.metrics.fenced.Set(0)
		k.cfg.Log.Info().Msg("presence written again: no longer fenced")
	}
}

// presenceWriteTimeout bounds one presence write, and presenceRetry is how
// soon a failed one is tried again: a few tries fit in the lease, so a NATS
// node lost (its leader elected again within seconds) never fences a worker.
const (
	presenceWriteTimeout = 2 * time.Second
	presenceRetry        = time.Second
)

// keep writes the presence every bus.WorkerPresenceEvery, and every
// presenceRetry while writes fail, until ctx ends.
func (p *presence) keep(ctx context.Context) {
	t := time.NewTimer(bus.WorkerPresenceEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		next := bus.WorkerPresenceEvery
		if p.put(ctx) != nil {
			next = presenceRetry
		}
		t.Reset(next)
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
