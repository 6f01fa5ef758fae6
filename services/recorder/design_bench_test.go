package recorder

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"sluice.dev/sluice/libs/auditchain"
	"sluice.dev/sluice/libs/auditlog"
	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/recording"
	"sluice.dev/sluice/libs/testkit"
	auditv1 "sluice.dev/sluice/proto/sluice/audit/v1"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
)

// BenchmarkWriteAhead measures what one write-ahead record costs in CPU
// (the whole process: workers' side, NATS server, recorder), with eight
// sessions each recording a statement and waiting for it, as pgbench -c 8
// does through a worker:
//
//   - shipped: the worker's batch is stored in SESSIONS, the recorder
//     consumes it, chains it into AUDIT and acknowledges it (two durable
//     stores per event);
//   - one-store: a design measured against it, never shipped: the worker's
//     batch goes to the recorder over core NATS, and the recorder answers
//     once each session's events are chained into AUDIT (one durable store
//     per event, one AUDIT message per session per batch);
//   - one-store-atomic: one-store, the records of a batch published as one
//     atomic batch (nats-server's allow_atomic) with one acknowledgement;
//   - sessions-only: the worker's batch stored in SESSIONS with nobody
//     consuming it, the floor of any design with one JetStream write per
//     batch.
//
// go test -run - -bench WriteAhead ./services/recorder
func BenchmarkWriteAhead(b *testing.B) {
	for _, design := range []string{"shipped", "one-store", "one-store-atomic", "sessions-only"} {
		b.Run(design, func(b *testing.B) { benchWriteAhead(b, design, true) })
	}
}

// BenchmarkWriteAheadLatency is one session recording statement after
// statement, each waiting until it is durable, as one client does: its time
// per op is how long one statement waits for its record, the least a
// statement adds to a client's latency under the write-ahead contract
// (sessions-only: nobody consuming SESSIONS).
//
// go test -run - -bench WriteAheadLatency ./services/recorder
func BenchmarkWriteAheadLatency(b *testing.B) {
	for _, design := range []string{"shipped", "sessions-only"} {
		b.Run(design, func(b *testing.B) { benchWriteAhead(b, design, false) })
	}
}

func benchWriteAhead(b *testing.B, design string, parallel bool) {
	srv, err := bus.StartEmbedded(bus.EmbeddedConfig{StoreDir: b.TempDir(), ServerName: "bench"})
	require.NoError(b, err)
	b.Cleanup(srv.Shutdown)
	ctx := context.Background()
	connect := func(name string) *bus.Conn {
		c, err := bus.Connect(ctx, bus.Config{Name: name, InProcess: srv.Server})
		require.NoError(b, err)
		b.Cleanup(func() { c.NC.Close() })
		return c
	}
	worker, rec := connect("worker"), connect("recorder")
	require.NoError(b, bus.Provision(ctx, rec.JS, bus.Topology{}))
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	switch design {
	case "shipped":
		s := New(Config{Conn: rec, SigningKey: key, Log: zerolog.Nop()})
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); _ = s.Run(rctx) }()
		b.Cleanup(func() { cancel(); <-done })
	case "one-store", "one-store-atomic":
		// Core NATS carries the batches: SESSIONS no longer captures them.
		require.NoError(b, rec.JS.DeleteStream(ctx, bus.StreamSessions))
		atomic := design == "one-store-atomic"
		if atomic {
			cfg := bus.Topology{}.AuditStream()
			cfg.AllowAtomicPublish = true
			_, err := rec.JS.UpdateStream(ctx, cfg)
			require.NoError(b, err)
		}
		sub, err := rec.NC.Subscribe(bus.SubjectSessions+".>", oneStore(rec.JS, atomic))
		require.NoError(b, err)
		b.Cleanup(func() { _ = sub.Unsubscribe() })
		require.NoError(b, rec.NC.Flush())
	}
	r := recording.New(worker.JS)
	var events sync.WaitGroup
	report := testkit.CPUPerOp(b)
	if !parallel {
		sess := r.Open(recording.NewSessionID())
		for i := 0; b.Loop(); i++ {
			ev := &sessionv1.Event{Body: &sessionv1.Event_Command{Command: &sessionv1.Command{CommandId: uint64(i), Text: "SELECT abalance FROM pgbench_accounts WHERE aid = $1"}}}
			if err := sess.Record(ctx, ev); err != nil {
				b.Fatal(err)
			}
		}
		report(b.N)
		return
	}
	b.SetParallelism(4) // 8 sessions on 2 cores
	b.RunParallel(func(pb *testing.PB) {
		events.Add(1)
		defer events.Done()
		sess := r.Open(recording.NewSessionID())
		i := 0
		for pb.Next() {
			i++
			ev := &sessionv1.Event{Body: &sessionv1.Event_Command{Command: &sessionv1.Command{CommandId: uint64(i), Text: "SELECT abalance FROM pgbench_accounts WHERE aid = $1"}}}
			if err := sess.Record(ctx, ev); err != nil {
				b.Error(err)
				return
			}
		}
	})
	report(b.N)
	st := r.Stats()
	if st.Batches > 0 {
		b.ReportMetric(float64(st.Events)/float64(st.Batches), "events/batch")
	}
}

// oneStore is the recorder of the one-store design: it chains each
// session's events of a batch into one AUDIT record, publishes them
// together, and answers the worker once every one is stored.
func oneStore(js jetstream.JetStream, atomic bool) nats.MsgHandler {
	heads := map[string]*head{}
	fail := func(m *nats.Msg, err error) {
		_ = m.Respond([]byte(fmt.Sprintf(`{"error":{"code":500,"description":%q}}`, err.Error())))
	}
	return func(m *nats.Msg) {
		var batch sessionv1.Batch
		if err := proto.Unmarshal(m.Data, &batch); err != nil {
			fail(m, err)
			return
		}
		var order []string
		runs := map[string]*auditv1.Record{}
		for _, data := range batch.GetEvents() {
			ev, ok := peekEvent(data)
			if !ok {
				fail(m, fmt.Errorf("malformed event"))
				return
			}
			rec := runs[ev.session]
			if rec == nil {
				rec = &auditv1.Record{SessionId: ev.session, Seq: ev.seq, RecordedAt: timestamppb.Now()}
				runs[ev.session] = rec
				order = append(order, ev.session)
			}
			rec.EventIds, rec.Events = append(rec.EventIds, ev.id), append(rec.Events, data)
		}
		msgs := make([]*nats.Msg, len(order))
		for i, sess := range order {
			h := heads[sess]
			if h == nil {
				h = &head{}
				heads[sess] = h
			}
			rec := runs[sess]
			auditchain.Seal(rec, h.hash)
			data, _ := proto.Marshal(rec)
			msg := nats.NewMsg(auditlog.SessionSubject(sess))
			msg.Data = data
			msg.Header.Set(jetstream.MsgIDHeader, rec.EventIds[len(rec.EventIds)-1])
			msg.Header.Set(jetstream.ExpectedStreamHeader, bus.StreamAudit)
			msg.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(h.streamSeq, 10))
			msgs[i] = msg
			h.hash, h.seq = rec.GetHash(), auditchain.Last(rec)
		}
		var last uint64
		if atomic {
			id := m.Subject
			for i, msg := range msgs {
				msg.Header.Set("Nats-Batch-Id", id)
				msg.Header.Set("Nats-Batch-Sequence", strconv.Itoa(i+1))
				if i < len(msgs)-1 {
					if err := js.Conn().PublishMsg(msg); err != nil {
						fail(m, err)
						return
					}
					continue
				}
				msg.Header.Set("Nats-Batch-Commit", "1")
				resp, err := js.Conn().RequestMsg(msg, 5*time.Second)
				if err == nil {
					err = pubAckErr(resp.Data, &last)
				}
				if err != nil {
					fail(m, err)
					return
				}
			}
			for i, sess := range order {
				heads[sess].streamSeq = last - uint64(len(order)-1-i)
			}
		} else {
			futs := make([]jetstream.PubAckFuture, len(msgs))
			for i, msg := range msgs {
				var err error
				if futs[i], err = js.PublishMsgAsync(msg); err != nil {
					fail(m, err)
					return
				}
			}
			for i, f := range futs {
				select {
				case ack := <-f.Ok():
					heads[order[i]].streamSeq, last = ack.Sequence, ack.Sequence
				case err := <-f.Err():
					fail(m, err)
					return
				}
			}
		}
		_ = m.Respond([]byte(`{"stream":"AUDIT","seq":` + strconv.FormatUint(last, 10) + `}`))
	}
}

// pubAckErr reads a publish acknowledgement's sequence, or its error.
func pubAckErr(b []byte, seq *uint64) error {
	var ack struct {
		Seq   uint64 `json:"seq"`
		Error *struct {
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(b, &ack); err != nil {
		return err
	}
	if ack.Error != nil {
		return fmt.Errorf("%s", ack.Error.Description)
	}
	*seq = ack.Seq
	return nil
}
