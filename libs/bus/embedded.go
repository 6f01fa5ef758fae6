package bus

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"sluice.dev/sluice/libs/freeport"

	"github.com/nats-io/nats-server/v2/server"
)

// EmbeddedConfig configures an in-process NATS server with JetStream.
// The zero value listens on a random loopback port with data in a temp dir
// chosen by the server; set StoreDir to keep data across restarts.
type EmbeddedConfig struct {
	// ServerName must be unique within a cluster.
	ServerName string
	// Host and Port are the client listener; Port 0 picks a random port.
	Host string
	Port int
	// StoreDir holds JetStream data.
	StoreDir string
	// ClusterName, ClusterPort and Routes form a cluster (all three set).
	ClusterName string
	ClusterPort int
	Routes      []string
	// ConfigFile is a nats-server configuration file (accounts, users,
	// permissions) applied before the fields above.
	ConfigFile string
	// Users and Nkeys, when set, require authentication (see NkeyUsers).
	Users []*server.User
	Nkeys []*server.NkeyUser
	// DontListen serves in-process connections only.
	DontListen bool
	// Debug enables the server's own logging to stderr.
	Debug bool
}

// Embedded is a running in-process NATS server.
type Embedded struct {
	Server *server.Server
	opts   *server.Options
}

// StartEmbedded starts a NATS server with JetStream and waits until it accepts connections.
func StartEmbedded(cfg EmbeddedConfig) (*Embedded, error) {
	opts := &server.Options{}
	if cfg.ConfigFile != "" {
		o, err := server.ProcessConfigFile(cfg.ConfigFile)
		if err != nil {
			return nil, fmt.Errorf("nats config %s: %w", cfg.ConfigFile, err)
		}
		opts = o
	}
	opts.ServerName = cfg.ServerName
	opts.Host = cfg.Host
	if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	opts.Port = cfg.Port
	if opts.Port == 0 {
		opts.Port = server.RANDOM_PORT
	}
	opts.JetStream = true
	opts.StoreDir = cfg.StoreDir
	opts.NoSigs = true
	opts.NoLog = !cfg.Debug
	opts.DontListen = cfg.DontListen
	opts.MaxPayload = 8 << 20
	if len(cfg.Users) > 0 {
		opts.Users = cfg.Users
	}
	if len(cfg.Nkeys) > 0 {
		opts.Nkeys = cfg.Nkeys
	}
	if cfg.ClusterName != "" {
		opts.Cluster.Name = cfg.ClusterName
		opts.Cluster.Host = opts.Host
		opts.Cluster.Port = cfg.ClusterPort
		routes := make([]string, 0, len(cfg.Routes))
		for _, r := range cfg.Routes {
			routes = append(routes, "nats-route://"+r)
		}
		opts.Routes = server.RoutesFromStr(joinComma(routes))
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("nats server: %w", err)
	}
	if cfg.Debug {
		s.ConfigureLogger()
	}
	go s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		s.Shutdown()
		return nil, errors.New("nats server: not ready after 30s")
	}
	return &Embedded{Server: s, opts: opts}, nil
}

// ReloadNkeys replaces the server's nkey users, as `nats-server --signal
// reload` does with a changed configuration: connections of removed
// identities are closed, the others go on.
func (e *Embedded) ReloadNkeys(users []*server.NkeyUser) error {
	o := e.opts.Clone()
	o.Nkeys = users
	if err := e.Server.ReloadOptions(o); err != nil {
		return fmt.Errorf("nats reload: %w", err)
	}
	e.opts = o
	return nil
}

// ClientURL is the URL clients connect to.
func (e *Embedded) ClientURL() string { return e.Server.ClientURL() }

// Shutdown stops the server and waits for it to finish.
func (e *Embedded) Shutdown() {
	e.Server.Shutdown()
	e.Server.WaitForShutdown()
}

// FreePort returns a free TCP port on the loopback interface (freeport.Get).
func FreePort() (int, error) { return freeport.Get() }

func joinComma(s []string) string {
	out := ""
	for i, v := range s {
		if i > 0 {
			out += ","
		}
		out += v
	}
	return out
}

// HostPort formats a loopback address.
func HostPort(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }
