package exporter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"sluice.dev/sluice/libs/auditchain"
	"sluice.dev/sluice/libs/auditlog"
	"sluice.dev/sluice/libs/bus"
	approvalsv1 "sluice.dev/sluice/proto/sluice/approvals/v1"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
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
	ID string
	// Session is the session the event belongs to (for an approval, the
	// session whose command it holds); empty for configuration changes.
	Session string
	// Seq is the event's position in its session, or in its approval
	// request or configuration item.
	Seq uint64
	// Kind is a session event's kind ("command", "approval", ...) or a
	// control-plane event's "<stream>.<aggregate>.<event>"
	// ("approvals.request.approved", "control.policy.applied").
	Kind string
	Time time.Time
	// Denied marks a refusal: a denied command or approval (higher
	// severity).
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
	// Ready, if set, is called once the service serves.
	Ready func()
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
	// Ready once every sink reads the audit log (the other feeds may wait
	// for their streams).
	var unread atomic.Int32
	unread.Store(int32(len(cfg.Sinks)))
	reading := func() {
		if unread.Add(-1) == 0 {
			cfg.Log.Info().Int("sinks", len(cfg.Sinks)).Msg("exporter ready")
			if cfg.Ready != nil {
				cfg.Ready()
			}
		}
	}
	g, ctx := errgroup.WithContext(ctx)
	for _, s := range cfg.Sinks {
		// The feeds of a sink deliver one batch at a time: a sink holds one
		// connection.
		sink := &serialSink{Sink: s}
		g.Go(func() error {
			defer s.Close()
			fg, fctx := errgroup.WithContext(ctx)
			for _, f := range feeds(cfg) {
				fg.Go(func() error { return export(fctx, cfg, sink, f, reading) })
			}
			return fg.Wait()
		})
	}
	err := g.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// A feed is a stream the exporter delivers, with its own durable consumer
// per sink.
type feed struct {
	stream, subjects string
	// optional feeds wait for their stream and for the right to read it
	// instead of failing the exporter: AUDIT is what it exists for.
	optional bool
	render   func(ctx context.Context, m jetstream.Msg) []Item
}

// feeds are the audit log and the control-plane events a SIEM needs beside
// it: approval requests, decisions and grants (APPROVALS) and configuration
// changes (CONTROL) happen outside any session, so they never reach AUDIT.
func feeds(cfg Config) []feed {
	sc := auditlog.NewContext(cfg.Conn.JS)
	requests := auditlog.NewRequests(cfg.Conn.JS)
	return []feed{
		{stream: bus.StreamAudit, subjects: bus.SubjectAudit + ".>",
			render: func(ctx context.Context, m jetstream.Msg) []Item { return format(ctx, cfg.Format, sc, m) }},
		{stream: bus.StreamApprovals, subjects: bus.SubjectApprovals + ".>", optional: true,
			render: func(ctx context.Context, m jetstream.Msg) []Item { return formatFact(ctx, cfg.Format, requests, m) }},
		{stream: bus.StreamControl, subjects: bus.SubjectControl + ".>", optional: true,
			render: func(ctx context.Context, m jetstream.Msg) []Item { return formatFact(ctx, cfg.Format, nil, m) }},
	}
}

// serialSink lets several feeds share a sink.
type serialSink struct {
	mu sync.Mutex
	Sink
}

func (s *serialSink) Deliver(ctx context.Context, batch []Item) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.Sink.Deliver(ctx, batch)
}

// export delivers a feed to a sink until ctx is done; once it reads a feed
// that is not optional, it calls reading.
func export(ctx context.Context, cfg Config, sink Sink, f feed, reading func()) error {
	log := cfg.Log.With().Str("sink", sink.Name()).Str("stream", f.stream).Logger()
	delivered, failed := exportRecords.WithLabelValues(sink.Name()), exportFailures.WithLabelValues(sink.Name())
	var cons jetstream.Consumer
	for wait := time.Second; ; wait = min(wait*2, time.Minute) {
		var err error
		cons, err = bus.Consumer(ctx, cfg.Conn.JS, f.stream, jetstream.ConsumerConfig{
			Durable: bus.ExportDurable(sink.Name()),
			// AUDIT: records and signed checkpoints (a checkpoint goes out as
			// its anchor, so the SIEM holds what `sluice audit verify
			// --anchor` checks the stream against).
			FilterSubject: f.subjects,
			AckPolicy:     jetstream.AckAllPolicy,
			AckWait:       time.Minute,
			MaxAckPending: cfg.Batch * 2,
			DeliverPolicy: jetstream.DeliverAllPolicy,
		})
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		if !f.optional {
			return fmt.Errorf("exporter %s: %w", sink.Name(), err)
		}
		log.Warn().Err(err).Dur("retry_in", wait).Msg("cannot read the stream yet; its events are not exported")
		sleep(ctx, wait)
	}
	log.Info().Msg("exporting")
	if !f.optional {
		reading()
	}
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
			items = append(items, f.render(ctx, m)...)
		}
		if len(msgs) == 0 {
			continue
		}
		// Deliver until the sink takes it; the batch stays unacknowledged
		// meanwhile, so a restart redelivers it.
		for ctx.Err() == nil {
			err := sink.Deliver(ctx, items)
			if err == nil {
				delivered.Add(float64(len(items)))
				backoff = 100 * time.Millisecond
				break
			}
			if ctx.Err() == nil {
				failed.Inc()
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
		if a := e.Event.GetApproval(); a != nil && a.GetState() == "denied" {
			it.Denied = true
		}
	}
	if it.ID == "" {
		it.ID = fmt.Sprintf("gap-%s-%d", it.Session, it.Seq)
	}
	if f != "ocsf" {
		b, err := marshalJSON(auditlog.JSON(e))
		if err != nil {
			return nil
		}
		it.Body = b
		return []Item{it}
	}
	var started *sessionv1.Started
	if e.Event != nil {
		started = sc.Started(ctx, e)
	}
	var out []Item
	for i, o := range auditlog.OCSFEntry(e, started) {
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

// formatFact renders one APPROVALS or CONTROL event. requests completes
// approval decisions with what was requested (nil for CONTROL).
func formatFact(ctx context.Context, f string, requests *auditlog.Requests, m jetstream.Msg) []Item {
	facts, err := auditlog.DecodeFacts(m)
	if err != nil {
		return nil
	}
	var out []Item
	for _, fact := range facts {
		it := Item{ID: fact.Event.ID, Seq: fact.Event.Version, Kind: fact.Kind(), Time: fact.Event.Time,
			Denied: fact.Event.Name == "denied"}
		var request *approvalsv1.Approval
		if requests != nil {
			request = requests.Of(ctx, fact)
			it.Session = request.GetSessionId()
		}
		var body any = auditlog.FactJSON(fact)
		if f == "ocsf" {
			body = auditlog.OCSFFact(fact, request)
		}
		b, err := marshalJSON(body)
		if err != nil {
			continue
		}
		it.Body = b
		out = append(out, it)
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
