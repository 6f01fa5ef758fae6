package exporter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"sluice.dev/sluice/libs/auditchain"
	"sluice.dev/sluice/libs/auditlog"
	"sluice.dev/sluice/libs/bus"
)

// Sink delivers batches of formatted events.
type Sink interface {
	// Name is unique per sink; it names the durable consumer.
	Name() string
	// Deliver sends a batch; it returns only when the sink accepted all of
	// it, or an error.
	Deliver(ctx context.Context, batch []Item) error
	Close() error
}

// Item is one event ready to export.
type Item struct {
	ID      string
	Session string
	Seq     uint64
	Kind    string
	Time    time.Time
	// Denied marks decisions that refused a command (higher severity).
	Denied bool
	// Body is the event as JSON (OCSF or Sluice JSON).
	Body []byte
}

// Config configures the exporter.
type Config struct {
	Conn  *bus.Conn
	Log   zerolog.Logger
	Sinks []Sink
	// Format is "ocsf" (default) or "json".
	Format string
	// Batch is the maximum events per delivery; default 256.
	Batch int
}

// Run exports until ctx is done.
func Run(ctx context.Context, cfg Config) error {
	if len(cfg.Sinks) == 0 {
		return errors.New("exporter: no sink configured")
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 256
	}
	if cfg.Format == "" {
		cfg.Format = "ocsf"
	}
	g, ctx := errgroup.WithContext(ctx)
	for _, s := range cfg.Sinks {
		g.Go(func() error {
			defer s.Close()
			return export(ctx, cfg, s)
		})
	}
	err := g.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func export(ctx context.Context, cfg Config, sink Sink) error {
	cons, err := cfg.Conn.JS.CreateOrUpdateConsumer(ctx, bus.StreamAudit, jetstream.ConsumerConfig{
		Durable: bus.ExportDurable(sink.Name()),
		// Records and signed checkpoints: a checkpoint goes out as its
		// anchor, so the SIEM holds what `sluice audit verify --anchor`
		// checks the stream against.
		FilterSubject: bus.SubjectAudit + ".>",
		AckPolicy:     jetstream.AckAllPolicy,
		AckWait:       time.Minute,
		MaxAckPending: cfg.Batch * 2,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return fmt.Errorf("exporter %s: %w", sink.Name(), err)
	}
	sc := auditlog.NewContext(cfg.Conn.JS)
	log := cfg.Log.With().Str("sink", sink.Name()).Logger()
	log.Info().Msg("exporting the audit log")
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		batch, err := cons.Fetch(cfg.Batch, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			log.Warn().Err(err).Msg("fetch failed")
			sleep(ctx, time.Second)
			continue
		}
		var msgs []jetstream.Msg
		var items []Item
		for m := range batch.Messages() {
			msgs = append(msgs, m)
			items = append(items, format(ctx, cfg.Format, sc, m)...)
		}
		if len(msgs) == 0 {
			continue
		}
		// Deliver until the sink takes it; the batch stays unacknowledged
		// meanwhile, so a restart redelivers it.
		for ctx.Err() == nil {
			err := sink.Deliver(ctx, items)
			if err == nil {
				backoff = 100 * time.Millisecond
				break
			}
			log.Warn().Err(err).Int("events", len(items)).Dur("retry_in", backoff).Msg("delivery failed")
			for _, m := range msgs {
				_ = m.InProgress()
			}
			sleep(ctx, backoff)
			backoff = min(backoff*2, 30*time.Second)
		}
		if ctx.Err() != nil {
			return nil
		}
		// AckAll on the last message acknowledges the whole batch.
		if err := msgs[len(msgs)-1].DoubleAck(ctx); err != nil && ctx.Err() == nil {
			log.Warn().Err(err).Msg("ack failed; the batch may be delivered again")
		}
	}
	return nil
}

// format renders one AUDIT message as the items to export: one per event
// of a record (a command that carries earlier results gives one OCSF event
// per result too).
func format(ctx context.Context, f string, sc *auditlog.Context, m jetstream.Msg) []Item {
	entries, err := auditlog.Decode(m)
	if err != nil {
		return nil
	}
	var out []Item
	for _, e := range entries {
		switch {
		case e.Record != nil:
			out = append(out, formatEntry(ctx, f, sc, e)...)
		case e.Checkpoint != nil:
			b, err := json.Marshal(auditchain.AnchorOf(e.Checkpoint, e.StreamSeq, nil))
			if err != nil {
				continue
			}
			out = append(out, Item{ID: "cp-" + e.Checkpoint.GetId(), Kind: auditchain.KindCheckpoint, Time: e.Checkpoint.GetTime().AsTime(), Body: b})
		}
	}
	return out
}

func formatEntry(ctx context.Context, f string, sc *auditlog.Context, e auditlog.Entry) []Item {
	it := Item{ID: e.EventID, Session: e.Record.GetSessionId(), Seq: e.Seq, Kind: auditlog.Kind(e.Event), Time: e.Time}
	if e.Event != nil {
		it.Time = e.Event.GetTime().AsTime()
		if d := e.Event.GetDecided(); d != nil && d.GetDecision().GetAction() == "deny" {
			it.Denied = true
		}
		if c := e.Event.GetCommand(); c != nil && c.GetDecision().GetAction() == "deny" {
			it.Denied = true
		}
	}
	if it.ID == "" {
		it.ID = fmt.Sprintf("gap-%s-%d", it.Session, it.Seq)
	}
	if f != "ocsf" || e.Event == nil {
		b, err := marshalJSON(auditlog.JSON(e))
		if err != nil {
			return nil
		}
		it.Body = b
		return []Item{it}
	}
	var out []Item
	for i, o := range auditlog.OCSFAll(e.Event, sc.Started(ctx, e)) {
		o["unmapped"] = map[string]any{"stream_seq": e.StreamSeq}
		b, err := marshalJSON(o)
		if err != nil {
			continue
		}
		x := it
		if i > 0 {
			x.ID, x.Kind, x.Denied = o["metadata"].(map[string]any)["uid"].(string), "result", false
		}
		x.Body = b
		out = append(out, x)
	}
	return out
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
