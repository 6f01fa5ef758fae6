package bus_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"sluice.dev/sluice/libs/bus"
)

// TestOnlyTheAPIRenewsSessions: a session's token is replaced only on a
// request from the API (which verified the caller), answered only by a
// worker. A worker cannot send a renewal to another replica's sessions,
// and no other component can send or read one.
func TestOnlyTheAPIRenewsSessions(t *testing.T) {
	srv, dir := identities(t)
	for _, c := range bus.Components() {
		if c.Unrestricted {
			continue
		}
		t.Run(c.Name, func(t *testing.T) {
			p := connectProbe(t, srv, dir, c.Name)
			require.NoError(t, p.NC.Publish(bus.SubjectPGRenew, []byte("x")))
			assert.Equal(t, c.Name != bus.CompAPI, p.wasRefused(t, "Publish", bus.SubjectPGRenew), "publish a renewal")
			_, err := p.NC.SubscribeSync(bus.SubjectPGRenew)
			require.NoError(t, err)
			assert.Equal(t, c.Name != bus.CompPGWorker, p.wasRefused(t, "Subscription", bus.SubjectPGRenew), "receive renewals")
		})
	}
}
