// Package cli implements the sluice command line.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// globals are flags every command has.
type globals struct {
	api    string
	output string
	stdout io.Writer
	stderr io.Writer
}

// exitError carries a specific exit status.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }

// Main runs the CLI and returns the exit status.
func Main(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return run(ctx, args, os.Stdout, os.Stderr)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	g := &globals{stdout: stdout, stderr: stderr}
	root := newRoot(g)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	fmt.Fprintln(stderr, "error:", err)
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return 1
}

func newRoot(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:           "sluice",
		Short:         "Sluice: a zero-trust gateway for AI agents, CI jobs and people reaching production",
		SilenceUsage:  true,
		SilenceErrors: true,
		Long: `Sluice sits between clients (psql and any PostgreSQL driver) and the databases they
reach. It verifies an OIDC identity on every connection, keeps target
credentials to itself, rules on every command with CEL policies, masks sensitive values
and records every session to a tamper-evident audit stream.

Client commands talk to the HTTP API at $SLUICE_API (default http://127.0.0.1:8080) with
the token in $SLUICE_TOKEN, or the one 'sluice login' cached.`,
	}
	def := os.Getenv("SLUICE_API")
	if def == "" {
		def = "http://127.0.0.1:8080"
	}
	root.PersistentFlags().StringVar(&g.api, "api", def, "Sluice HTTP API URL ($SLUICE_API)")
	root.PersistentFlags().StringVarP(&g.output, "output", "o", "text", "output format: text or json")
	root.AddCommand(
		newDevCmd(g),
		newServeCmd(g),
		newLoginCmd(g),
		newTokenCmd(g),
		newWhoamiCmd(g),
		newApplyCmd(g),
		newTargetsCmd(g),
		newSecretCmd(g),
		newAdminCmd(g),
	)
	addLaterCommands(root, g)
	return root
}

func (g *globals) json() bool { return g.output == "json" }

func (g *globals) checkOutput() error {
	if g.output != "text" && g.output != "json" {
		return fmt.Errorf("--output must be text or json, not %q", g.output)
	}
	return nil
}

// printJSON writes v as indented JSON.
func (g *globals) printJSON(v any) error {
	enc := json.NewEncoder(g.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
