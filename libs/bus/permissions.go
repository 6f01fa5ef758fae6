package bus

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
)

// NkeyUsers builds a server's users from the identity table: keys maps a
// component name to its public nkey. A component without a key cannot
// connect, so removing one key revokes one component and nothing else.
func NkeyUsers(keys map[string]string) []*server.NkeyUser {
	var out []*server.NkeyUser
	for _, c := range Components() {
		k, ok := keys[c.Name]
		if !ok {
			continue
		}
		out = append(out, &server.NkeyUser{Nkey: k, Permissions: c.Permissions()})
	}
	return out
}

// KeyFile is where a component's nkey seed lives in a key directory.
func KeyFile(dir, component string) string { return filepath.Join(dir, component+".nk") }

// LoadOrCreateKeys reads each component's nkey seed from dir, creating the
// ones that are missing (mode 0600), and returns the public keys. The
// break-glass seed is there too: for `sluice dev` and tests, which hold
// every key in one process. A deployment keeps it apart (see
// LoadOrCreateKey and `sluice admin nats-keys`).
func LoadOrCreateKeys(dir string) (map[string]string, error) {
	out := map[string]string{}
	for _, c := range Components() {
		pub, err := LoadOrCreateKey(KeyFile(dir, c.Name))
		if err != nil {
			return nil, err
		}
		out[c.Name] = pub
	}
	return out, nil
}

// LoadOrCreateKey reads the user nkey seed at path, creating it (mode 0600,
// its directory 0700) if missing, and returns the public key.
func LoadOrCreateKey(path string) (string, error) {
	seed, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return "", err
		}
		kp, err := nkeys.CreateUser()
		if err != nil {
			return "", err
		}
		if seed, err = kp.Seed(); err != nil {
			return "", err
		}
		if err := os.WriteFile(path, append(seed, '\n'), 0o600); err != nil {
			return "", err
		}
	} else if err != nil {
		return "", err
	}
	pub, err := PublicKey(seed)
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	return pub, nil
}

// PublicKey returns the public user nkey of a seed.
func PublicKey(seed []byte) (string, error) {
	kp, err := nkeys.FromSeed([]byte(strings.TrimSpace(string(seed))))
	if err != nil {
		return "", fmt.Errorf("not an nkey seed: %w", err)
	}
	defer kp.Wipe()
	pub, err := kp.PublicKey()
	if err != nil {
		return "", err
	}
	if !nkeys.IsValidPublicUserKey(pub) {
		return "", fmt.Errorf("not a user nkey seed (it must start with SU)")
	}
	return pub, nil
}

// KeyEnv is the environment variable that carries a component's public
// nkey into deploy/nats/users.conf.
func KeyEnv(component string) string { return "SLUICE_NKEY_" + strings.ToUpper(component) }

// UsersConfig renders the identity table as a NATS server configuration
// fragment (deploy/nats/users.conf): one nkey user per component, the public
// keys from the environment (KeyEnv), the permissions from the table.
func UsersConfig() string {
	var b strings.Builder
	b.WriteString(`# NATS users of a Sluice deployment: one nkey identity per component.
# GENERATED from libs/bus/identities.go; do not edit. Regenerate with
#   go test ./libs/bus -run TestUsersConfig -update
# Each public key comes from the environment (sluice admin nats-keys writes
# the seeds and the matching environment file). Revoke one component by
# giving it a new key and reloading the servers (nats-server --signal reload).
authorization {
  users: [
`)
	for _, c := range Components() {
		fmt.Fprintf(&b, "    # %s: %s\n", c.Name, c.Doc)
		fmt.Fprintf(&b, "    {\n      nkey: $%s\n", KeyEnv(c.Name))
		if p := c.Permissions(); p != nil {
			b.WriteString("      permissions: {\n")
			writeSubjects(&b, "publish", p.Publish)
			writeSubjects(&b, "subscribe", p.Subscribe)
			if p.Response != nil {
				fmt.Fprintf(&b, "        allow_responses: { max: %d, expires: %q }\n", p.Response.MaxMsgs, p.Response.Expires.String())
			}
			b.WriteString("      }\n")
		}
		b.WriteString("    }\n")
	}
	b.WriteString("  ]\n}\n")
	return b.String()
}

func writeSubjects(b *strings.Builder, name string, sp *server.SubjectPermission) {
	if sp == nil {
		return
	}
	fmt.Fprintf(b, "        %s: {\n", name)
	for _, l := range []struct {
		key  string
		subs []string
	}{{"allow", sp.Allow}, {"deny", sp.Deny}} {
		if len(l.subs) == 0 {
			continue
		}
		subs := append([]string(nil), l.subs...)
		sort.Strings(subs)
		fmt.Fprintf(b, "          %s: [\n", l.key)
		for _, s := range subs {
			fmt.Fprintf(b, "            %q\n", s)
		}
		b.WriteString("          ]\n")
	}
	b.WriteString("        }\n")
}

// IdentityTable renders the identity table in Markdown, as ARCHITECTURE.md
// shows it (a test keeps the two equal).
func IdentityTable() string {
	var b strings.Builder
	b.WriteString("| identity | serves | calls | owns | writes | reads |\n|---|---|---|---|---|---|\n")
	short := func(s string) string { return strings.TrimPrefix(s, "sluice.api.") }
	list := func(xs []string, f func(string) string) string {
		if len(xs) == 0 {
			return ""
		}
		out := make([]string, len(xs))
		for i, x := range xs {
			out[i] = "`" + f(x) + "`"
		}
		return strings.Join(out, " ")
	}
	id := func(s string) string { return s }
	for _, c := range Components() {
		if c.Unrestricted {
			fmt.Fprintf(&b, "| `%s` | %s | | | | |\n", c.Name, c.Doc)
			continue
		}
		var owns, writes, reads []string
		for _, o := range c.Owns {
			owns = append(owns, o.Stream+o.Bucket)
		}
		writes = append(writes, c.Appends...)
		writes = append(writes, c.WritesKV...)
		writes = append(writes, c.Publishes...)
		reads = append(reads, c.Reads...)
		for _, d := range c.Consumes {
			reads = append(reads, d.Stream+"/"+d.Name)
		}
		reads = append(reads, c.ReadsKV...)
		reads = append(reads, c.Subscribes...)
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s | %s | %s |\n", c.Name, list(c.Serves, short), list(c.Calls, short),
			list(owns, id), list(uniq(writes), id), list(uniq(reads), id))
	}
	return b.String()
}
