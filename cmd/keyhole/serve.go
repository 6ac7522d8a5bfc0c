package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/keyhole-dev/keyhole/server"
	"github.com/keyhole-dev/keyhole/server/admin"
)

func (a *App) serveCmd() *cobra.Command {
	var o server.ServeOptions
	var lease time.Duration
	c := &cobra.Command{
		Use:   "serve [--http 127.0.0.1:7777]",
		Short: "Run the broker: owns the data dir, serves local clients and phantom-token sessions",
		Long: `serve is the broker. It owns the data dir, listens on a unix socket in it
(mode 0600) for local stdio clients and admin commands, and with --http serves
MCP over streamable HTTP at /mcp for agents holding a phantom session token
(keyhole session new). With --ui it serves the browser console (sign in with
keyhole ui). SIGHUP or keyhole reload re-reads keyhole.yaml for new
sessions; SIGTERM stops accepting, lets in-flight calls finish and flushes the
audit log.`,
		Example: `  keyhole serve --http 127.0.0.1:7777
  keyhole serve --http 0.0.0.0:7777 --tls-cert cert.pem --tls-key key.pem --metrics 127.0.0.1:9464
  keyhole serve --ui 127.0.0.1:7778          # then: keyhole ui --open`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.RuntimeOptions = a.runtimeOptions()
			o.LeaseTTL = lease
			o.CommandLine = "keyhole " + strings.Join(os.Args[1:], " ")
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			reload := make(chan struct{}, 1)
			go func() {
				for range hup {
					select {
					case reload <- struct{}{}:
					default:
					}
				}
			}()
			o.Reload = reload
			o.Ready = func(sock, http net.Addr) {
				if http != nil {
					a.log.Info("MCP over streamable HTTP", "url", fmt.Sprintf("http%s://%s/mcp", map[bool]string{true: "s"}[o.TLSCert != ""], http))
				}
			}
			return server.Serve(cmd.Context(), o)
		},
	}
	c.Flags().StringVar(&o.HTTPAddr, "http", "", "also serve MCP over streamable HTTP on this address (phantom tokens)")
	c.Flags().StringVar(&o.MetricsAddr, "metrics", "", "serve Prometheus /metrics on this address (always on the unix socket)")
	c.Flags().StringVar(&o.UIAddr, "ui", "", "serve the browser console on this address (host defaults to 127.0.0.1; elsewhere needs TLS); sign in with keyhole ui")
	c.Flags().StringVar(&o.TLSCert, "tls-cert", "", "TLS certificate for --http and --ui")
	c.Flags().StringVar(&o.TLSKey, "tls-key", "", "TLS key for --http and --ui")
	c.Flags().BoolVar(&o.InsecureHTTP, "insecure-http", false, "allow plain HTTP on a non-loopback --http address")
	c.Flags().StringSliceVar(&o.AllowedOrigins, "allowed-origin", nil, "extra Origin allowed on a loopback listener (repeatable)")
	durationVar(c, &o.IdleExit, "idle-exit", 0, "stop after this long with no active session (0: never)")
	durationVar(c, &o.ShutdownTimeout, "shutdown-timeout", 10*time.Second, "how long in-flight calls may finish on SIGTERM or keyhole stop")
	c.Flags().IntVar(&o.MaxConns, "max-connections", server.DefaultMaxConns, "most TCP connections held at once (the unix socket is not counted)")
	c.Flags().IntVar(&o.MaxConnsPerSource, "max-connections-per-source", server.DefaultMaxConnsPerSource, "most TCP connections held at once from one address")
	c.Flags().IntVar(&o.SessionsPerToken, "sessions-per-token", server.DefaultSessionsPerToken, "most MCP sessions one phantom token holds; a new one closes its least recently used")
	durationVar(c, &o.SessionIdleTTL, "session-idle-ttl", server.DefaultSessionIdleTTL, "close an MCP session unused this long")
	durationVar(c, &lease, "lease-ttl", 15*time.Second, "with --store: how long this broker's lease on its audit chain lasts unrenewed (after its death, another broker marks its open calls interrupted)")
	c.Flags().BoolVar(&o.AutoStarted, "auto-started", false, "mark a broker keyhole stdio started in the background")
	c.Flags().MarkHidden("auto-started")
	return c
}

func (a *App) reloadCmd() *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "reload [--config F]",
		Short: "Re-read a config file in the running broker (running sessions keep their scope)",
		Long: `reload makes the running broker read the config file this command resolves
(--config, KEYHOLE_CONFIG, ./keyhole.yaml, then $XDG_CONFIG_HOME/keyhole/keyhole.yaml)
again, validate it, and give it to the new sessions of that file. Running
sessions keep the config they started with. An invalid file is refused and
the old version stays. A broker serves every config its clients name; a new
session also reads its file again when it has changed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path, err := server.AbsConfig(a.configPath())
			if err != nil {
				return err
			}
			ad, err := admin.Dial(a.dataDir())
			if err != nil {
				return fmt.Errorf("%w for %s; a new one reads %s when it starts", admin.ErrNoBroker, a.dataDir(), path)
			}
			defer ad.Close()
			res, err := ad.Reload(path)
			if asJSON {
				out := struct {
					OK    bool   `json:"reloaded"`
					Error string `json:"error,omitempty"`
					admin.Reloaded
				}{OK: err == nil, Reloaded: res}
				if err != nil {
					out.Error = trimPrefix(err.Error())
					out.Config = path
				}
				if jerr := json.NewEncoder(a.stdout).Encode(out); jerr != nil {
					return jerr
				}
				if err != nil {
					return &silentError{code: 1}
				}
				return nil
			}
			if err != nil {
				return err
			}
			what := "reloaded"
			if !res.Changed {
				what = "reloaded (unchanged)"
			}
			fmt.Fprintf(a.stdout, "%s %s (scopes: %s); new sessions of it use it, running ones keep their scope\n", what, res.Config, strings.Join(res.Scopes, ", "))
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, `print {"reloaded": true, "config": …, "sha256": …, "scopes": […], "changed": …} or the error as JSON`)
	return c
}
