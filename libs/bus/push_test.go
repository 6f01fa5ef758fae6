package bus_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"sluice.dev/sluice/libs/bus"
)

// A reader may create consumers on what it reads. Two ways that right
// could reach further are closed: naming another component's durable in the
// body of the unnamed create request (which no subject deny can see), and
// pushing a stream's messages into another stream or the JetStream API.
func TestConsumersStayWithinTheirReader(t *testing.T) {
	srv, dir := identities(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	admin := connectProbe(t, srv, dir, bus.CompAdmin)
	require.NoError(t, bus.Provision(ctx, admin.JS, bus.Topology{}))
	siem := connectProbe(t, srv, dir, bus.CompSIEM)
	_, err := siem.JS.CreateOrUpdateConsumer(ctx, bus.StreamAudit, jetstream.ConsumerConfig{Durable: bus.DurableSIEM, AckPolicy: jetstream.AckExplicitPolicy})
	require.NoError(t, err)

	// The API (a reader of AUDIT) tries to redirect the SIEM's durable
	// through the unnamed create subject.
	api := connectProbe(t, srv, dir, bus.CompAPI)
	body, _ := json.Marshal(map[string]any{"stream_name": bus.StreamAudit, "config": map[string]any{
		"name": bus.DurableSIEM, "durable_name": bus.DurableSIEM, "filter_subject": "sluice.audit.none", "ack_policy": "explicit", "deliver_policy": "all"}})
	require.NoError(t, api.NC.Publish("$JS.API.CONSUMER.CREATE."+bus.StreamAudit, body))
	assert.True(t, api.wasRefused(t, "Publish", "$JS.API.CONSUMER.CREATE."+bus.StreamAudit))
	c, err := admin.JS.Consumer(ctx, bus.StreamAudit, bus.DurableSIEM)
	require.NoError(t, err)
	info, err := c.Info(ctx)
	require.NoError(t, err)
	assert.Empty(t, info.Config.FilterSubject, "the SIEM's consumer is untouched")

	// A worker pushes what it reads towards another stream and the API.
	kv, err := admin.JS.KeyValue(ctx, bus.BucketControl)
	require.NoError(t, err)
	_, err = kv.Put(ctx, "policy.current", []byte{})
	require.NoError(t, err)
	w := connectProbe(t, srv, dir, bus.CompPGWorker)
	for i, subj := range []string{"$KV.sluice_approvals.forged", "sluice.audit.s.injected", "$JS.API.STREAM.DELETE.AUDIT", "$JS.API.STREAM.PURGE.AUDIT"} {
		_, err := w.JS.CreateOrUpdateConsumer(ctx, "KV_"+bus.BucketControl, jetstream.ConsumerConfig{
			Name: []string{"a", "b", "c", "d"}[i], DeliverSubject: subj, DeliverPolicy: jetstream.DeliverAllPolicy})
		require.NoError(t, err, subj)
	}
	// Deliveries go only to subscribers: none of these has one. Give the
	// server time to (not) deliver, then look.
	time.Sleep(time.Second)
	akv, err := admin.JS.KeyValue(ctx, bus.BucketApprovals)
	require.NoError(t, err)
	_, err = akv.Get(ctx, "forged")
	assert.ErrorIs(t, err, jetstream.ErrKeyNotFound)
	s, err := admin.JS.Stream(ctx, bus.StreamAudit)
	require.NoError(t, err)
	si, err := s.Info(ctx)
	require.NoError(t, err)
	assert.Zero(t, si.State.Msgs)
}
