package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/keyhole-dev/keyhole/server"
)

// App is the keyhole command line: its streams, its environment and the
// global flags. Commands are thin: they parse, call into server and format.
type App struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string

	configFlag  string
	dataDirFlag string
	logLevel    string
	logFormat   string
	storeFlag   string
	replicaFlag string

	log *slog.Logger
}

// NewApp returns the CLI bound to the given streams and environment.
func NewApp(stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) *App {
	return &App{stdin: stdin, stdout: stdout, stderr: stderr, getenv: getenv}
}

// Run executes one command line.
func (a *App) Run(ctx context.Context, args []string) error {
	root := a.rootCmd()
	root.SetArgs(args)
	root.SetIn(a.stdin)
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	err := root.ExecuteContext(ctx)
	if err != nil && isCobraUsage(err) {
		return &usageError{err}
	}
	return err
}

// isCobraUsage recognises the usage errors cobra makes itself (it has no
// error types for them): an unknown command, a missing required flag.
func isCobraUsage(err error) bool {
	var ue *usageError
	if errors.As(err, &ue) {
		return false
	}
	msg := err.Error()
	for _, p := range []string{"unknown command ", "required flag(s) ", "unknown flag: ", "unknown shorthand flag: ", "if any flags in the group "} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

func (a *App) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "keyhole",
		Short: "An MCP server that brokers credentials for AI agents",
		Long: `keyhole sits between an AI agent and the APIs it calls. The agent calls tools
by name; keyhole checks each call against a deny-by-default scope, injects the
real key from its encrypted vault, scrubs the response and audits the call.
The model never holds a credential.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			log, err := server.NewLogger(a.stderr, a.logFormat, a.logLevel)
			if err != nil {
				return &usageError{err}
			}
			a.log = log
			return nil
		},
	}
	root.PersistentFlags().StringVar(&a.configFlag, "config", "", "config file (env KEYHOLE_CONFIG; default ./keyhole.yaml, then $XDG_CONFIG_HOME/keyhole/keyhole.yaml)")
	root.PersistentFlags().StringVar(&a.dataDirFlag, "data-dir", "", "data dir holding the vault and audit log (env KEYHOLE_DATA_DIR; default $XDG_DATA_HOME/keyhole)")
	root.PersistentFlags().StringVar(&a.storeFlag, "store", "", "a PostgreSQL store shared by several brokers, postgres://user@host/db (env KEYHOLE_STORE; default: the data dir)")
	root.PersistentFlags().StringVar(&a.replicaFlag, "replica", "", "this broker's name among the brokers of --store (env KEYHOLE_REPLICA; default: the host name)")
	root.PersistentFlags().StringVar(&a.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	root.PersistentFlags().StringVar(&a.logFormat, "log-format", "text", "log format on stderr: text or json")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })

	root.AddCommand(
		a.versionCmd(),
		a.initCmd(),
		a.configCmd(),
		a.secretCmd(),
		a.stdioCmd(),
		a.auditCmd(),
		a.mcpConfigCmd(),
		a.serveCmd(),
		a.reloadCmd(),
		a.statusCmd(),
		a.stopCmd(),
		a.sessionCmd(),
		a.demoCmd(),
		a.accessCmd(),
		a.reportCmd(),
		a.scopeCmd(),
		a.policyCmd(),
		a.uiCmd(),
		a.storeCmd(),
	)
	for _, c := range root.Commands() {
		wrapArgs(c)
	}
	return root
}

// wrapArgs makes argument-count errors usage errors (exit 2), recursively.
func wrapArgs(c *cobra.Command) {
	if c.Args != nil {
		check := c.Args
		c.Args = func(cmd *cobra.Command, args []string) error {
			if err := check(cmd, args); err != nil {
				return &usageError{err}
			}
			return nil
		}
	}
	for _, sub := range c.Commands() {
		wrapArgs(sub)
	}
	if c.HasSubCommands() && c.RunE == nil {
		c.RunE = func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return &usageError{fmt.Errorf("unknown command %q for %q", args[0], cmd.CommandPath())}
			}
			return &usageError{fmt.Errorf("%s needs a subcommand", cmd.CommandPath())}
		}
		c.Args = cobra.ArbitraryArgs
	}
}

func (a *App) versionCmd() *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "version",
		Short: "Print keyhole's version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if asJSON {
				return json.NewEncoder(a.stdout).Encode(server.BuildInfo())
			}
			fmt.Fprintf(a.stdout, "keyhole %s\n", server.Version)
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print version, Go version and platform as JSON")
	return c
}

// configPath resolves the config file: --config, KEYHOLE_CONFIG,
// ./keyhole.yaml if it exists, then $XDG_CONFIG_HOME/keyhole/keyhole.yaml.
func (a *App) configPath() string {
	if a.configFlag != "" {
		return a.configFlag
	}
	if p := a.getenv("KEYHOLE_CONFIG"); p != "" {
		return p
	}
	if _, err := os.Stat("keyhole.yaml"); err == nil {
		return "keyhole.yaml"
	}
	return filepath.Join(a.configHome(), "keyhole", "keyhole.yaml")
}

// dataDir resolves the data dir: --data-dir, KEYHOLE_DATA_DIR, then
// $XDG_DATA_HOME/keyhole.
func (a *App) dataDir() string {
	if a.dataDirFlag != "" {
		return a.dataDirFlag
	}
	if d := a.getenv("KEYHOLE_DATA_DIR"); d != "" {
		return d
	}
	if x := a.getenv("XDG_DATA_HOME"); x != "" {
		return filepath.Join(x, "keyhole")
	}
	return filepath.Join(a.home(), ".local", "share", "keyhole")
}

// store resolves the shared store: --store, then KEYHOLE_STORE ("" is the
// data dir's embedded store).
func (a *App) store() string {
	if a.storeFlag != "" {
		return a.storeFlag
	}
	return a.getenv(server.EnvStore)
}

// replica resolves this process's replica name: --replica, then
// KEYHOLE_REPLICA ("" lets the broker use its host name).
func (a *App) replica() string {
	if a.replicaFlag != "" {
		return a.replicaFlag
	}
	return a.getenv("KEYHOLE_REPLICA")
}

// keyFile is where the master key file lives.
func (a *App) keyFile() string {
	if p := a.getenv("KEYHOLE_KEY_FILE"); p != "" {
		return p
	}
	return filepath.Join(a.configHome(), "keyhole", "master.key")
}

func (a *App) configHome() string {
	if x := a.getenv("XDG_CONFIG_HOME"); x != "" {
		return x
	}
	return filepath.Join(a.home(), ".config")
}

func (a *App) home() string {
	if h := a.getenv("HOME"); h != "" {
		return h
	}
	h, _ := os.UserHomeDir()
	return h
}

// trimPrefix drops a leading "keyhole: " so messages are not doubled.
func trimPrefix(s string) string { return strings.TrimPrefix(s, "keyhole: ") }
