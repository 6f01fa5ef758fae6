package testkit

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/stretchr/testify/require"

	"sluice.dev/sluice/libs/bus"
)

// NATS starts a single JetStream-enabled server for the test and returns it
// with a connection. Both are closed when the test ends.
func NATS(t testing.TB) (*bus.Embedded, *bus.Conn) {
	t.Helper()
	srv, err := bus.StartEmbedded(bus.EmbeddedConfig{StoreDir: t.TempDir(), ServerName: "test"})
	require.NoError(t, err)
	t.Cleanup(srv.Shutdown)
	return srv, Connect(t, srv.ClientURL())
}

// Connect opens a connection closed at the end of the test.
func Connect(t testing.TB, url string) *bus.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := bus.Connect(ctx, bus.Config{URL: url, Name: t.Name()})
	require.NoError(t, err)
	t.Cleanup(func() { c.NC.Close() })
	return c
}

// Cluster is a three-node JetStream cluster in this process.
type Cluster struct {
	Servers []*bus.Embedded
	cfgs    []bus.EmbeddedConfig
}

// NATSCluster starts a three-node cluster and waits until JetStream has a
// meta leader. Servers are shut down at the end of the test.
func NATSCluster(t testing.TB) *Cluster {
	t.Helper()
	return NATSClusterWithNkeys(t, nil)
}

// NATSClusterWithNkeys starts a three-node cluster that requires the given
// nkey users (bus.NkeyUsers: the deployment's identities and permissions).
func NATSClusterWithNkeys(t testing.TB, users []*server.NkeyUser) *Cluster {
	t.Helper()
	return natsCluster(t, users, "")
}

// NATSClusterFromConfig starts a three-node cluster whose servers read a
// nats-server configuration file (deploy/nats/nats.conf: TLS, users and
// their permissions), with listeners, routes and storage of the test's
// own.
func NATSClusterFromConfig(t testing.TB, configFile string) *Cluster {
	t.Helper()
	return natsCluster(t, nil, configFile)
}

func natsCluster(t testing.TB, users []*server.NkeyUser, configFile string) *Cluster {
	t.Helper()
	ports := make([]int, 3)
	for i := range ports {
		p, err := bus.FreePort()
		require.NoError(t, err)
		ports[i] = p
	}
	routes := make([]string, 3)
	for i, p := range ports {
		routes[i] = bus.HostPort(p)
	}
	c := &Cluster{}
	for i := range ports {
		cfg := bus.EmbeddedConfig{
			ServerName:  fmt.Sprintf("n%d", i+1),
			StoreDir:    t.TempDir(),
			ClusterName: "sluice-test",
			ClusterPort: ports[i],
			Routes:      routes,
			Nkeys:       users,
			ConfigFile:  configFile,
		}
		c.cfgs = append(c.cfgs, cfg)
	}
	// Start concurrently: each server waits for its peers before JetStream is ready.
	errs := make(chan error, 3)
	c.Servers = make([]*bus.Embedded, 3)
	for i := range c.cfgs {
		go func(i int) {
			s, err := bus.StartEmbedded(c.cfgs[i])
			c.Servers[i] = s
			errs <- err
		}(i)
	}
	for range c.cfgs {
		require.NoError(t, <-errs)
	}
	t.Cleanup(func() {
		for _, s := range c.Servers {
			if s != nil && s.Server.Running() {
				s.Shutdown()
			}
		}
	})
	Eventually(t, 30*time.Second, func() error {
		for _, s := range c.Servers {
			if s.Server.JetStreamIsLeader() {
				return nil
			}
		}
		return fmt.Errorf("no JetStream meta leader yet")
	})
	return c
}

// URL is a comma-separated list of every server's client URL.
func (c *Cluster) URL() string {
	url := ""
	for i, s := range c.Servers {
		if i > 0 {
			url += ","
		}
		url += s.ClientURL()
	}
	return url
}

// Stop shuts down server i.
func (c *Cluster) Stop(i int) {
	c.Servers[i].Shutdown()
}

// Eventually polls cond until it returns nil or the timeout passes, then
// fails the test with the last error.
func Eventually(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	wait := time.Millisecond
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %s: %v", timeout, err)
		}
		time.Sleep(wait)
		if wait < 100*time.Millisecond {
			wait *= 2
		}
	}
}
