package sessionindex

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"google.golang.org/protobuf/types/known/timestamppb"

	"sluice.dev/sluice/libs/bus"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
)

// A session that has not ended is lost once its worker is gone: withdrawn
// (or never heard of), silent for longer than bus.WorkerSilence, or
// started again since the session started. An ended session never is.
func TestLostSessions(t *testing.T) {
	now := epoch.Add(time.Hour)
	w := NewWorkers()
	w.now = func() time.Time { return now }
	open := func(worker string, started time.Time) *sessionv1.Summary {
		return &sessionv1.Summary{SessionId: "s", Worker: worker, StartedAt: timestamppb.New(started)}
	}
	boot := now.Add(-30 * time.Minute)
	w.Put(bus.WorkerKey("gw-1.example"), &sessionv1.WorkerPresence{Name: "gw-1.example", StartedAt: timestamppb.New(boot)}, now.Add(-time.Second))

	assert.Empty(t, w.Lost(open("gw-1.example", boot.Add(time.Minute))), "its worker serves it")
	ended := open("gone", boot)
	ended.EndedAt = timestamppb.New(now)
	assert.Empty(t, w.Lost(ended), "an ended session is not lost")
	assert.Empty(t, w.Lost(open("", boot)), "a summary naming no worker says nothing of it")

	assert.Equal(t, "its worker gone stopped without ending it", w.Lost(open("gone", boot)))
	assert.Contains(t, w.Lost(open("gw-1.example", boot.Add(-time.Minute))), "its worker gw-1.example started again at",
		"a session of the worker's previous run")

	// Silent for longer than it may be.
	w.Put(bus.WorkerKey("gw-1.example"), &sessionv1.WorkerPresence{Name: "gw-1.example", StartedAt: timestamppb.New(boot)}, now.Add(-bus.WorkerSilence-time.Second))
	assert.Contains(t, w.Lost(open("gw-1.example", boot.Add(time.Minute))), "its worker gw-1.example has been silent since")
	w.Put(bus.WorkerKey("gw-1.example"), &sessionv1.WorkerPresence{Name: "gw-1.example", StartedAt: timestamppb.New(boot)}, now)
	assert.Empty(t, w.Lost(open("gw-1.example", boot.Add(time.Minute))), "heard from again")

	w.Delete(bus.WorkerKey("gw-1.example"))
	assert.Equal(t, "its worker gw-1.example stopped without ending it", w.Lost(open("gw-1.example", boot.Add(time.Minute))))
}

func TestWorkerKey(t *testing.T) {
	for in, want := range map[string]string{
		"gw-1": "gw-1", "vm.example.com-42": "vm_example_com-42", "a b/c*>": "a_b_c__", "": "_", "pod_7=x": "pod_7=x",
	} {
		assert.Equal(t, want, bus.WorkerKey(in), "%q", in)
	}
}
