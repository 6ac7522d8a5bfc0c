package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
)

// measureCmd is the hidden `measure -- BIN ARGS...` the growth phase runs
// each audit command through. Linux sets a child's ru_maxrss to at least
// the peak RSS of the process whose memory it was started from: Go's
// os/exec starts children with CLONE_VM, so every command run straight
// from the bench would report at least the bench's own peak (which grows
// with its MCP clients and the in-process padding of the log). Run from
// this small process instead, the command's maximum RSS is its own (or
// this process's, far below any keyhole command's). It runs the command
// with its own stdin, stdout and stderr and writes "<wall ns> <max RSS
// bytes>" to file descriptor 3.
func measureCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "measure -- BIN [ARGS...]",
		Short:  "Run a command and report its wall time and maximum RSS on fd 3 (the bench runs it)",
		Hidden: true,
		Args:   cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			report := os.NewFile(3, "report")
			if report == nil {
				return errors.New("measure: no file descriptor 3")
			}
			c := exec.Command(args[0], args[1:]...)
			c.Stdin, c.Stdout, c.Stderr = os.Stdin, os.Stdout, os.Stderr
			start := time.Now()
			runErr := c.Run()
			took := time.Since(start)
			var rss int64
			if ru, ok := c.ProcessState.SysUsage().(*syscall.Rusage); ok {
				rss = ru.Maxrss * 1024 // KiB on Linux
			}
			fmt.Fprintf(report, "%d %d\n", took.Nanoseconds(), rss)
			report.Close()
			if ee, ok := runErr.(*exec.ExitError); ok {
				os.Exit(ee.ExitCode())
			}
			return runErr
		},
	}
}

// measured runs cmd (its Path and Args) through `self measure` and returns
// the command's wall time and maximum RSS as the helper read them.
func measured(ctx context.Context, self string, cmd *exec.Cmd) ([]byte, time.Duration, int64, error) {
	w := exec.CommandContext(ctx, self, append([]string{"measure", "--", cmd.Path}, cmd.Args[1:]...)...)
	w.Dir, w.Env, w.Stdin = cmd.Dir, cmd.Env, cmd.Stdin
	r, pw, err := os.Pipe()
	if err != nil {
		return nil, 0, 0, err
	}
	defer r.Close()
	w.ExtraFiles = []*os.File{pw}
	var stderr strings.Builder
	w.Stderr = &stderr
	out, err := func() ([]byte, error) {
		defer pw.Close()
		return w.Output()
	}()
	if err != nil {
		return nil, 0, 0, fmt.Errorf("%w: %s", err, stderr.String())
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, 0, 0, err
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return nil, 0, 0, fmt.Errorf("measure: unexpected report %q", b)
	}
	ns, err1 := strconv.ParseInt(f[0], 10, 64)
	rss, err2 := strconv.ParseInt(f[1], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return nil, 0, 0, fmt.Errorf("measure: %w", err)
	}
	return out, time.Duration(ns), rss, nil
}
