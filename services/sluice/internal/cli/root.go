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
	"strings"
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

// input is where confirmations are read, and whether a person is there to
// answer (standard input is a terminal). A variable so tests can answer.
var input = func() (io.Reader, bool) {
	fi, err := os.Stdin.Stat()
	return os.Stdin, err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// exitError carries a specific exit status.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// cliError is an error found before or without the API, with a stable
// code and, for -o json, details.
type cliError struct {
	code   string
	err    error
	fields map[string]any
}

func (e *cliError) Error() string { return e.err.Error() }
func (e *cliError) Unwrap() error { return e.err }

// usage marks a mistake in how a command was called.
func usage(format string, args ...any) error {
	return &cliError{code: "usage", err: fmt.Errorf(format, args...)}
}

// Main runs the CLI and returns the exit status. Ctrl-C, SIGTERM and
// SIGHUP (a closed terminal) stop it cleanly: `sluice dev` stops the demo
// servers it started instead of leaving them running.
func Main(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	return run(ctx, args, os.Stdout, os.Stderr)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	g := &globals{stdout: stdout, stderr: stderr}
	root := newRoot(g)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	// Cobra refuses flags, arguments and commands before it runs a
	// command: an error from before then is a usage error.
	started := false
	markStart(root, &started)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var ce *cliError
	if !started && !errors.As(err, &ce) {
		err = &cliError{code: "usage", err: err}
	}
	// When the flags did not parse, -o may not have been read.
	if g.json() || (!started && jsonRequested(args)) {
		writeErrorJSON(stderr, err)
	} else {
		fmt.Fprintln(stderr, "error:", err)
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return 1
}

// markStart sets *started when any command's run function begins.
func markStart(c *cobra.Command, started *bool) {
	if runE := c.RunE; runE != nil {
		c.RunE = func(cmd *cobra.Command, args []string) error {
			*started = true
			return runE(cmd, args)
		}
	}
	if run := c.Run; run != nil {
		c.Run = func(cmd *cobra.Command, args []string) {
			*started = true
			run(cmd, args)
		}
	}
	for _, sub := range c.Commands() {
		markStart(sub, started)
	}
}

// jsonRequested looks for -o json among arguments cobra did not parse.
func jsonRequested(args []string) bool {
	for i, a := range args {
		switch {
		case a == "--":
			return false
		case a == "-o" || a == "--output":
			if i+1 < len(args) && args[i+1] == "json" {
				return true
			}
		case a == "-ojson" || a == "-o=json" || a == "--output=json":
			return true
		}
	}
	return false
}

// writeErrorJSON writes err as one JSON object: {"error": {"message",
// "code", "status", ...}}. An API error keeps every field of the API's
// answer (an apply's located errors, for one).
func writeErrorJSON(w io.Writer, err error) {
	obj := map[string]any{}
	msg, code := err.Error(), "error"
	var ae *apiError
	var ce *cliError
	switch {
	case errors.As(err, &ae):
		for k, v := range ae.Body {
			obj[k] = v
		}
		delete(obj, "error")
		delete(obj, "reason")
		code = ae.Code
		if ae.Status > 0 {
			obj["status"] = ae.Status
		}
		// The text form says "reason (code, HTTP status)": code and status
		// have fields of their own here.
		msg = strings.Replace(msg, ae.Error(), ae.message(), 1)
	case errors.As(err, &ce):
		for k, v := range ce.fields {
			obj[k] = v
		}
		code = ce.code
	case errors.Is(err, errNoToken):
		code = "no_token"
	}
	if code == "" {
		code = "error"
	}
	obj["message"], obj["code"] = msg, code
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(map[string]any{"error": obj})
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
		newKubeconfigCmd(g),
		newSecretCmd(g),
		newAdminCmd(g),
	)
	addLaterCommands(root, g)
	return root
}

func (g *globals) json() bool { return g.output == "json" }

func (g *globals) checkOutput() error {
	if g.output != "text" && g.output != "json" {
		return usage("--output must be text or json, not %q", g.output)
	}
	return nil
}

// printJSON writes v as indented JSON.
func (g *globals) printJSON(v any) error {
	enc := json.NewEncoder(g.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
