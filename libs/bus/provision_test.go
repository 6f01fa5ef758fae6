package bus_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"sluice.dev/sluice/libs/bus"
)

// Each component creates what it owns with its own identity; a worker only
// looks: Missing names what the owners have not created yet, and nothing
// once they have.
func TestEachComponentProvisionsWhatItOwns(t *testing.T) {
	srv, dir := identities(t)
	ctx := context.Background()
	pgw, err := bus.FindComponent(bus.CompPGWorker)
	require.NoError(t, err)
	worker := connectProbe(t, srv, dir, bus.CompPGWorker)

	missing, err := bus.Missing(ctx, worker.JS, pgw.Needs()...)
	require.NoError(t, err)
	assert.NotEmpty(t, missing)

	for _, c := range bus.Components() {
		if len(c.Owns) == 0 || c.Unrestricted {
			continue
		}
		p := connectProbe(t, srv, dir, c.Name)
		require.NoError(t, bus.ProvisionStores(ctx, p.JS, bus.Topology{}, c.Owns), c.Name)
		// Twice is harmless.
		require.NoError(t, bus.ProvisionStores(ctx, p.JS, bus.Topology{}, c.Owns), c.Name)
	}
	for _, c := range bus.Components() {
		p := connectProbe(t, srv, dir, c.Name)
		missing, err = bus.Missing(ctx, p.JS, c.Needs()...)
		require.NoError(t, err, c.Name)
		assert.Empty(t, missing, c.Name)
	}
	// A worker cannot create a stream (a refused request goes unanswered).
	short, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	_, err = worker.JS.CreateStream(short, bus.Topology{}.EventStream("ROGUE", "rogue"))
	assert.Error(t, err)
}
