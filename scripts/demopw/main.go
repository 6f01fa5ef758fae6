// Command demopw prints a libpq connection string that reaches the demo
// database of `sluice dev` directly, as the gateway role, bypassing Sluice:
// for setting up fixtures (pgbench -i) and for baselines. Development only.
package main

import (
	"encoding/base64"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"sluice.dev/sluice/libs/secrets"
)

func main() {
	dir := flag.String("dir", ".sluice", "state directory of sluice dev")
	port := flag.Int("port", 15433, "demo PostgreSQL port")
	flag.Parse()
	key, err := secrets.LoadKey(filepath.Join(*dir, "master.key"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	sealed, err := os.ReadFile(filepath.Join(*dir, "demo-pg.sealed"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	raw, _ := base64.StdEncoding.DecodeString(strings.TrimSpace(string(sealed)))
	pw, err := key.Open(raw)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("host=127.0.0.1 port=%d dbname=demo user=sluice_gateway password=%s sslmode=disable\n", *port, pw)
}
