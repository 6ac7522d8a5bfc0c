// Command keyhole is an MCP server that brokers credentials for AI agents.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := NewApp(os.Stdin, os.Stdout, os.Stderr, os.Getenv).Run(ctx, os.Args[1:])
	stop()
	os.Exit(exitCode(err))
}

// exitCode maps an error to keyhole's exit codes: 0 ok, 1 failure, 2 usage.
func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ue *usageError
	var se *silentError
	switch {
	case errors.As(err, &se):
		return se.code
	case errors.As(err, &ue):
		fmt.Fprintln(os.Stderr, "keyhole:", err)
		return 2
	default:
		fmt.Fprintln(os.Stderr, "keyhole:", trimPrefix(err.Error()))
		return 1
	}
}

// usageError is a command used wrongly: exit code 2.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() + " (see keyhole --help)" }
func (e *usageError) Unwrap() error { return e.err }

// silentError ends a command with an exit code, its message already shown.
type silentError struct{ code int }

func (e *silentError) Error() string { return fmt.Sprintf("exit %d", e.code) }
