package control_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/controlstate"
	"sluice.dev/sluice/libs/testkit"
	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
	"sluice.dev/sluice/services/control"
	"sluice.dev/sluice/services/identity/identitytest"
)

// Apply is for callers in an admin group the access section names; before
// one is applied only the break-glass subject applies, and its changes
// name it as the actor.
func TestApplyAuthorization(t *testing.T) {
	_, conn := testkit.NATS(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	require.NoError(t, bus.Provision(ctx, conn.JS, bus.Topology{}))
	idp := identitytest.Start(ctx, t, conn)
	go func() { _ = control.New(control.Config{Conn: conn, Log: zerolog.Nop()}).Run(ctx) }()
	apply := func(subject, token, config string) *controlv1.ApplyResponse {
		var resp controlv1.ApplyResponse
		testkit.Eventually(t, 10*time.Second, func() error {
			c := ctx
			if token != "" {
				c = bus.WithCallerToken(ctx, token)
			}
			err := bus.Request(c, conn.NC, subject, &controlv1.ApplyRequest{Config: []byte(config)}, &resp)
			if err == nil && resp.GetError().GetCode() == "unavailable" {
				err = fmt.Errorf("identity not up yet")
			}
			return err
		})
		return &resp
	}
	root := idp.Token("root", "platform")
	target := "targets:\n  - name: db\n    kind: postgres\n    postgres: {host: h, database: d, user: u, password: {env: PW}}\n"

	r := apply(bus.APIControlApply, root, target)
	require.NotNil(t, r.GetError())
	assert.Equal(t, "forbidden", r.GetError().GetCode())
	assert.Contains(t, r.GetError().GetMessage(), "no group holds this role yet")
	r = apply(bus.APIControlApply, "", target)
	assert.Equal(t, "unauthenticated", r.GetError().GetCode())

	r = apply(bus.APIControlBreakGlass, "", "access:\n  admins: [platform]\n  auditors: [audit]\n")
	require.Nil(t, r.GetError())

	// An apply returns once the service judges by it: the very next
	// request is an admin's.
	r = apply(bus.APIControlApply, root, target)
	require.Nil(t, r.GetError(), "%v", r.GetError())
	r = apply(bus.APIControlApply, idp.Token("eve", "audit"), target)
	assert.Equal(t, "forbidden", r.GetError().GetCode())
	assert.Contains(t, r.GetError().GetMessage(), "platform", "the refusal names the groups that may")

	kv, err := controlstate.Bucket(ctx, conn.JS)
	require.NoError(t, err)
	e, err := kv.Get(ctx, controlstate.KeyAccess)
	require.NoError(t, err)
	assert.Contains(t, string(e.Value()), control.ActorBreakGlass)
	e, err = kv.Get(ctx, controlstate.TargetKey("db"))
	require.NoError(t, err)
	assert.Contains(t, string(e.Value()), "root", "the verified caller is the actor")
}
