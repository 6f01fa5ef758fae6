// Command sluice is the Sluice CLI, server and development environment.
package main

import (
	"os"

	"sluice.dev/sluice/services/sluice/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:]))
}
