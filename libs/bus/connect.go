package bus

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	neturl "net/url"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Config says how to reach NATS. The zero value connects to nats://127.0.0.1:4222.
type Config struct {
	// URL is one or more comma-separated server URLs.
	URL string
	// Component is the NATS identity connecting (see Components); it sets
	// the inbox prefix, which only that identity may subscribe to.
	Component string
	// NkeyFile holds the component's nkey seed (the deployment's way to
	// authenticate; see deploy/nats/users.conf).
	NkeyFile string
	// CredsFile is a NATS credentials file (JWT + nkey seed), for operator
	// mode deployments.
	CredsFile string
	// User and Password authenticate with a username and password instead.
	User, Password string
	// RequireSecure refuses a connection that is neither TLS nor to a
	// loopback or in-process server: for components whose messages carry
	// access tokens.
	RequireSecure bool
	// OnError, if set, receives asynchronous errors (permission violations
	// above all), which nats.go would otherwise only keep as LastError.
	OnError func(error)
	// CAFile verifies the server's certificate; CertFile/KeyFile present a client certificate.
	CAFile, CertFile, KeyFile string
	// Name identifies this connection in the server's monitoring.
	Name string
	// InProcess, when set, connects to an embedded server without a socket.
	InProcess nats.InProcessConnProvider
}

// Conn is a NATS connection with its JetStream context.
type Conn struct {
	NC *nats.Conn
	JS jetstream.JetStream
}

// Connect dials NATS and waits until the connection is established.
func Connect(ctx context.Context, cfg Config) (*Conn, error) {
	url := cfg.URL
	if url == "" {
		url = nats.DefaultURL
	}
	label := cfg.Component
	if label == "" {
		label = cfg.Name
	}
	opts := []nats.Option{
		nats.Name(cfg.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.RetryOnFailedConnect(false),
		// Asynchronous errors (permission violations, slow consumers) are
		// counted, and handed to OnError; the default handler would only
		// print them to stderr.
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			countAsyncError(label, sub, err)
			if cfg.OnError != nil {
				cfg.OnError(err)
			}
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			natsConnected.WithLabelValues(label).Set(0)
			natsDisconnects.WithLabelValues(label).Inc()
			if cfg.OnError != nil && err != nil {
				cfg.OnError(fmt.Errorf("NATS connection lost: %w", err))
			}
		}),
		nats.ReconnectHandler(func(*nats.Conn) {
			natsConnected.WithLabelValues(label).Set(1)
			natsReconnects.WithLabelValues(label).Inc()
		}),
		nats.ClosedHandler(func(*nats.Conn) { natsConnected.WithLabelValues(label).Set(0) }),
	}
	if cfg.Component != "" {
		opts = append(opts, nats.CustomInboxPrefix(InboxPrefix(cfg.Component)))
	}
	if cfg.NkeyFile != "" {
		opt, err := nats.NkeyOptionFromSeed(cfg.NkeyFile)
		if err != nil {
			return nil, fmt.Errorf("nats nkey %s: %w", cfg.NkeyFile, err)
		}
		opts = append(opts, opt)
	}
	if deadline, ok := ctx.Deadline(); ok {
		opts = append(opts, nats.Timeout(time.Until(deadline)))
	}
	if cfg.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(cfg.CredsFile))
	}
	if cfg.User != "" {
		opts = append(opts, nats.UserInfo(cfg.User, cfg.Password))
	}
	secure := cfg.CAFile != "" || cfg.CertFile != ""
	if secure {
		tc, err := tlsConfig(cfg)
		if err != nil {
			return nil, err
		}
		opts = append(opts, nats.Secure(tc))
	}
	if cfg.RequireSecure && cfg.InProcess == nil && !secure {
		if err := loopbackOnly(url); err != nil {
			return nil, err
		}
		// Servers the cluster announces may be elsewhere: stay on the
		// loopback ones named here.
		opts = append(opts, nats.IgnoreDiscoveredServers())
	}
	if cfg.InProcess != nil {
		opts = append(opts, nats.InProcessServer(cfg.InProcess))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("nats connect: %w", err)
	}
	natsConnected.WithLabelValues(label).Set(1)
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	return &Conn{NC: nc, JS: js}, nil
}

// loopbackOnly refuses plaintext URLs to anything but a loopback address:
// access tokens must not cross a network in clear.
func loopbackOnly(urls string) error {
	for _, u := range strings.Split(urls, ",") {
		u = strings.TrimSpace(u)
		parsed, err := neturl.Parse(u)
		if err != nil || parsed.Host == "" {
			parsed, err = neturl.Parse("nats://" + u)
			if err != nil {
				return fmt.Errorf("nats url %q: %w", u, err)
			}
		}
		if parsed.Scheme == "tls" {
			continue
		}
		host := parsed.Hostname()
		if host == "localhost" {
			continue
		}
		if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
			continue
		}
		return fmt.Errorf("%w: %s is neither TLS nor loopback; messages on it carry access tokens (give --nats-ca, or a tls:// URL)", ErrInsecure, u)
	}
	return nil
}

// ErrInsecure refuses a plaintext NATS connection across a network.
var ErrInsecure = errors.New("bus: refusing a plaintext NATS connection")

// Close drains the connection so in-flight replies are delivered.
func (c *Conn) Close() {
	if c == nil || c.NC == nil {
		return
	}
	if err := c.NC.Drain(); err != nil {
		c.NC.Close()
	}
}

func tlsConfig(cfg Config) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("nats ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, errors.New("nats ca: no certificates found")
		}
		tc.RootCAs = pool
	}
	if cfg.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("nats client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}
