package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/keyhole-dev/keyhole/server"
)

func (a *App) stdioCmd() *cobra.Command {
	var scope string
	var standalone bool
	c := &cobra.Command{
		Use:   "stdio --scope S",
		Short: "Serve one MCP client over stdio as one session of scope S",
		Long: `stdio is what an MCP client (Claude Code, Claude Desktop, Cursor, VS Code)
launches. The process is one session of the scope: it starts now, ends when the
client disconnects, and expires at the scope's ttl. stdout carries only the MCP
protocol; logs go to stderr.

By default it joins the broker that owns the data dir over its unix socket,
starting one in the background (keyhole serve --idle-exit 10m, logging to
broker.log in the data dir) when none runs, so several clients share one vault
and one audit log. --standalone serves in-process instead (one client only).`,
		Example: `  claude mcp add keyhole -- keyhole stdio --scope triage`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if standalone {
				rt, err := server.Open(a.runtimeOptions())
				if err != nil {
					return err
				}
				defer rt.Close()
				return rt.Broker.ServeStdio(cmd.Context(), scope, a.stdin, a.stdout)
			}
			if err := a.ensureBroker(cmd.Context()); err != nil {
				return err
			}
			return server.Relay(cmd.Context(), a.dataDir(), scope, a.stdin, a.stdout, a.log)
		},
	}
	c.Flags().StringVar(&scope, "scope", "", "the scope this session runs under (required)")
	c.Flags().BoolVar(&standalone, "standalone", false, "serve in-process instead of through the shared broker")
	c.MarkFlagRequired("scope")
	return c
}

// brokerStartTimeout bounds how long stdio waits for a broker to come up.
const brokerStartTimeout = 15 * time.Second

// ensureBroker makes sure a broker owns the data dir, starting one in the
// background when none runs. Several stdio processes may race here: one
// broker wins the data dir's lock, the others exit, and every stdio
// process ends up talking to the winner.
func (a *App) ensureBroker(ctx context.Context) error {
	dir := a.dataDir()
	if ad, err := server.DialAdmin(dir); err == nil {
		return ad.Close()
	}
	cfg, err := filepath.Abs(a.configPath())
	if err != nil {
		return err
	}
	if _, err := os.Stat(cfg); err != nil {
		return fmt.Errorf("no config at %s: create one with `keyhole init`, or set KEYHOLE_CONFIG", cfg)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	logPath := filepath.Join(dir, "broker.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logFile.Close()
	cmd := exec.Command(exe, "serve", "--idle-exit", "10m", "--data-dir", dir, "--config", cfg, "--log-format", "json")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // outlives this client
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start a broker: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	a.log.Info("started a broker", "pid", cmd.Process.Pid, "log", logPath)

	deadline := time.After(brokerStartTimeout)
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for {
		if ad, err := server.DialAdmin(dir); err == nil {
			return ad.Close()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-exited:
			// Another stdio process's broker may have won the lock; keep
			// waiting for its socket unless ours failed for another reason.
			if tail := lastLine(logPath); !strings.Contains(tail, "in use by pid") {
				return fmt.Errorf("the broker exited (%v): %s (full log: %s)", err, tail, logPath)
			}
			exited = nil
		case <-deadline:
			return fmt.Errorf("no broker answered on %s within %s (see %s)", filepath.Join(dir, server.SocketFile), brokerStartTimeout, logPath)
		case <-tick.C:
		}
	}
}

// lastLine returns the last non-empty line of a log file.
func lastLine(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}
