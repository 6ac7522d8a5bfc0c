package main

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
)

// Config is one benchmark run.
type Config struct {
	// Keyhole is the keyhole binary; empty builds ./cmd/keyhole into a
	// temporary directory.
	Keyhole string
	// Micro is a file of `go test -bench` output to include; empty: none.
	Micro string
	// Levels are the client concurrencies measured.
	Levels []int
	// Rounds is how many times each arm runs at each level, interleaved.
	Rounds int
	// Duration is how long one arm runs in one round, unless Requests is set.
	Duration time.Duration
	// Requests, if positive, is the number of calls one arm makes in one
	// round instead of running for Duration.
	Requests int
	// Warmup is how long each arm runs unmeasured before each level.
	Warmup time.Duration
	// Sessions is how many MCP sessions are open for the RSS reading (and
	// at least the highest level).
	Sessions int
	// StartupRuns is how many times `keyhole stdio` is launched and timed.
	StartupRuns int
	// Dir is where the temporary keyhole home is made; empty: os.TempDir.
	// Its file system decides what an fsync costs.
	Dir string
	// Growth, if positive, is how many calls the growth phase makes through
	// the broker after the load, before restarting it and timing the audit
	// commands; GrowthWarmup of them come before the first RSS reading.
	Growth, GrowthWarmup int
	// Fill, if above the records the growth left, pads the audit log to
	// this many records (written directly) before the restart.
	Fill int
}

// defaultConfig keeps a full run to about a minute of load on 2 cores.
func defaultConfig() Config {
	return Config{
		Levels:       []int{1, 8, 64},
		Rounds:       5,
		Duration:     time.Second,
		Warmup:       300 * time.Millisecond,
		Sessions:     100,
		StartupRuns:  10,
		GrowthWarmup: 5000,
	}
}

func (c Config) validate() error {
	if len(c.Levels) == 0 {
		return errors.New("keyhole-bench: --levels: give at least one concurrency")
	}
	for _, l := range c.Levels {
		if l < 1 {
			return fmt.Errorf("keyhole-bench: --levels: concurrency %d is not positive", l)
		}
	}
	if c.Rounds < 1 || (c.Duration <= 0 && c.Requests <= 0) || c.StartupRuns < 1 || c.Sessions < 1 {
		return errors.New("keyhole-bench: --rounds, --startup-runs and --sessions must be positive, and --duration or --requests set")
	}
	return nil
}

func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	cfg := defaultConfig()
	root := &cobra.Command{
		Use:   "keyhole-bench",
		Short: "Measure keyhole's per-call cost against a bare MCP passthrough and a direct call",
		Long: `keyhole-bench starts a loopback upstream, a bare mcp-go passthrough and
keyhole serve --http, drives them with the same mcp-go client at each
concurrency, interleaved in rounds, and prints one Markdown table: latency
percentiles, keyhole's cost over bare and over direct, throughput, the time
keyhole stdio takes to answer initialize, and resident memory with open
sessions. --micro adds go test -bench output to the table.`,
		Example: `  make build && keyhole-bench --keyhole bin/keyhole
  keyhole-bench --levels 1,8 --rounds 3 --duration 500ms`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := cfg.validate(); err != nil {
				return err
			}
			return run(cmd.Context(), cfg, stdout, stderr)
		},
	}
	f := root.Flags()
	f.StringVar(&cfg.Keyhole, "keyhole", cfg.Keyhole, "keyhole binary (default: build ./cmd/keyhole)")
	f.StringVar(&cfg.Micro, "micro", cfg.Micro, "file of go test -bench -benchmem output to include in the table")
	f.IntSliceVar(&cfg.Levels, "levels", cfg.Levels, "client concurrencies")
	f.IntVar(&cfg.Rounds, "rounds", cfg.Rounds, "interleaved rounds per concurrency")
	f.DurationVar(&cfg.Duration, "duration", cfg.Duration, "time per arm per round")
	f.IntVar(&cfg.Requests, "requests", cfg.Requests, "calls per arm per round instead of --duration")
	f.DurationVar(&cfg.Warmup, "warmup", cfg.Warmup, "unmeasured time per arm before each concurrency")
	f.IntVar(&cfg.Sessions, "sessions", cfg.Sessions, "open MCP sessions for the memory reading")
	f.IntVar(&cfg.StartupRuns, "startup-runs", cfg.StartupRuns, "launches of keyhole stdio to time")
	f.StringVar(&cfg.Dir, "dir", cfg.Dir, "parent directory of the temporary keyhole home (its file system sets the fsync cost)")
	f.IntVar(&cfg.Growth, "growth", cfg.Growth, "calls of the growth phase (0: no growth phase): RSS growth, restart and audit commands over the grown log")
	f.IntVar(&cfg.GrowthWarmup, "growth-warmup", cfg.GrowthWarmup, "calls of the growth phase before its first RSS reading")
	f.IntVar(&cfg.Fill, "fill", cfg.Fill, "pad the audit log to this many records before the growth phase's restart (e.g. 1000000)")
	root.AddCommand(bareCmd(), storeBenchCmd(stdout, stderr), measureCmd())
	return root
}

func bareCmd() *cobra.Command {
	var upstream string
	c := &cobra.Command{
		Use:    "bare --upstream URL",
		Short:  "Serve the bare mcp-go passthrough (the bench starts it as a child process)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return serveBare(cmd.Context(), upstream, cmd.InOrStdin(), cmd.OutOrStdout())
		},
	}
	c.Flags().StringVar(&upstream, "upstream", "", "base URL calls are forwarded to")
	c.MarkFlagRequired("upstream")
	return c
}
