package bus_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"sluice.dev/sluice/libs/bus"
)

// A worker only looks: Missing names what the services have not created
// yet, and nothing once they have.
func TestMissingOnlyLooks(t *testing.T) {
	srv := withUsers(t)
	worker := connectAs(t, srv.ClientURL(), "worker")
	ctx := context.Background()

	missing, err := bus.Missing(ctx, worker.JS)
	require.NoError(t, err)
	assert.Equal(t, "stream "+bus.StreamControl, missing)

	require.NoError(t, bus.Provision(ctx, connectAs(t, srv.ClientURL(), "sluice").JS, bus.Topology{}))
	missing, err = bus.Missing(ctx, worker.JS)
	require.NoError(t, err)
	assert.Empty(t, missing)
}
