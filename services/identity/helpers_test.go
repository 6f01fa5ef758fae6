package identity_test

import (
	"context"

	"sluice.dev/sluice/libs/bus"
)

func provision(ctx context.Context, c *bus.Conn) error {
	return bus.Provision(ctx, c.JS, bus.Topology{})
}
