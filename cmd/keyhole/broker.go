package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/keyhole-dev/keyhole/server"
	"github.com/keyhole-dev/keyhole/server/admin"
)

// exitNoBroker is the exit code of status and stop when no broker runs.
const exitNoBroker = 3

// noBroker reports on stderr that no broker owns the data dir, and exits 3.
func (a *App) noBroker() error {
	dir := a.dataDir()
	if pid, ok := server.StoppingBroker(dir); ok {
		fmt.Fprintf(a.stderr, "keyhole: the broker (pid %d) of %s is stopping; `keyhole stop --force` kills it\n", pid, dir)
	} else if server.OwnerAlive(dir) {
		fmt.Fprintf(a.stderr, "keyhole: no broker answers for %s; its data dir is held by another keyhole (a --standalone stdio or a command)\n", dir)
	} else {
		fmt.Fprintf(a.stderr, "keyhole: no broker is running for %s\n", dir)
	}
	return &silentError{code: exitNoBroker}
}

func (a *App) statusCmd() *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "status [--json]",
		Short: "Show the running broker: pid, version, uptime, configs, sessions, listeners",
		Long: `status asks the broker that owns the data dir what it serves: its pid,
version and uptime, the data dir, every config file its sessions run, its live
sessions (and how many are editors' stdio clients) and its listeners. It exits
3 when no broker runs.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ad, err := admin.Dial(a.dataDir())
			if err != nil {
				return a.noBroker()
			}
			defer ad.Close()
			st, err := ad.Status()
			if err != nil {
				return err
			}
			if asJSON {
				return json.NewEncoder(a.stdout).Encode(st)
			}
			return a.printStatus(st)
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print the status as one JSON object")
	return c
}

func (a *App) printStatus(st admin.Status) error {
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	started := "keyhole serve"
	if st.AutoStarted {
		started = "keyhole stdio (in the background)"
	}
	fmt.Fprintf(tw, "broker\tpid %d, keyhole %s, up %s, started by %s\n", st.PID, st.Version, time.Duration(st.Uptime)*time.Second, started)
	fmt.Fprintf(tw, "data dir\t%s\n", st.DataDir)
	fmt.Fprintf(tw, "sessions\t%d active (%d of editors' stdio clients)\n", st.Sessions, st.Clients)
	fmt.Fprintf(tw, "socket\t%s\n", st.Listeners.Socket)
	if st.Listeners.HTTP != "" {
		fmt.Fprintf(tw, "http\t%s\n", st.Listeners.HTTP)
	}
	if st.Listeners.Metrics != "" {
		fmt.Fprintf(tw, "metrics\t%s\n", st.Listeners.Metrics)
	}
	for i, c := range st.Configs {
		label := ""
		if i == 0 {
			label = "configs"
		}
		def := ""
		if c.Default {
			def = " (the broker's own)"
		}
		fmt.Fprintf(tw, "%s\t%s%s: scopes %s, sha256 %.12s, loaded %s\n", label, c.Path, def, strings.Join(c.Scopes, ", "), c.SHA256, c.Loaded.Local().Format("15:04:05"))
	}
	return tw.Flush()
}

func (a *App) stopCmd() *cobra.Command {
	var force bool
	var timeout time.Duration
	c := &cobra.Command{
		Use:   "stop [--force] [--timeout D]",
		Short: "Stop the running broker gracefully; the data dir is free when it returns",
		Long: `stop asks the broker that owns the data dir to stop: it stops accepting,
lets running calls finish and records them, ends the sessions of editors'
stdio clients (reason: broker stopped) and releases the data dir. stop returns
once the broker has exited. With --force a broker that has not stopped after
--timeout is killed. It exits 3 when no broker runs.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := server.StopBroker(cmd.Context(), a.dataDir(), server.StopOptions{Timeout: timeout, Force: force})
			if errors.Is(err, admin.ErrNoBroker) {
				return a.noBroker()
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "stopped the broker (pid %d); %s is free\n", st.PID, a.dataDir())
			return nil
		},
	}
	c.Flags().BoolVar(&force, "force", false, "kill the broker if it has not stopped after --timeout")
	c.Flags().DurationVar(&timeout, "timeout", 15*time.Second, "how long to wait for running calls to finish")
	return c
}

// shortConfig names a config file by its directory and name.
func shortConfig(path string) string {
	if path == "" {
		return "-"
	}
	return filepath.Join(filepath.Base(filepath.Dir(path)), filepath.Base(path))
}
