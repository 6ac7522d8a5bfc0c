package relay

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/gofrs/flock"

	"github.com/keyhole-dev/keyhole/server"
	"github.com/keyhole-dev/keyhole/server/admin"
)

// BrokerLogFile is where a broker started in the background logs, in the
// data dir.
const BrokerLogFile = "broker.log"

// startLockFile serializes the stdio clients that start a broker, so at
// most one starts one at a time and its child's failure is its own.
const startLockFile = "start.lock"

// StartOptions says how EnsureBroker starts a broker.
type StartOptions struct {
	DataDir    string
	ConfigPath string
	// Exe is the keyhole binary to run as `Exe serve`.
	Exe string
	// Store and Replica, if set, start the broker on that PostgreSQL store
	// as that replica (the URL goes through the environment, not argv,
	// where other users could read a password in it).
	Store, Replica string
	// Timeout bounds the whole wait; 0 is 15 seconds.
	Timeout time.Duration
	Logger  *slog.Logger
}

// EnsureBroker makes sure a broker owns the data dir and answers on its
// socket, starting one in the background (`keyhole serve --idle-exit 10m`,
// logging to broker.log) when none answers. Many stdio clients may call it
// at once on a fresh data dir: they take turns, the first starts the
// broker and the others find it answering. A broker that loses the data
// dir to another process is not a failure: EnsureBroker keeps dialing
// until the deadline, and starts another when the data dir is free again.
//
// A broker of an older keyhole than this binary is replaced when it is a
// background broker serving no stdio client; otherwise the client joins
// it and a warning names both versions.
func EnsureBroker(ctx context.Context, o StartOptions) error {
	if err := server.SharedBrokerSupported(); err != nil {
		return err
	}
	if o.Timeout == 0 {
		o.Timeout = 15 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	replace := false
	if brokerAnswers(o.DataDir) {
		if replace = o.outdated(); !replace {
			return nil
		}
	}
	cfg, err := filepath.Abs(o.ConfigPath)
	if err != nil {
		return err
	}
	if _, err := os.Stat(cfg); err != nil {
		return fmt.Errorf("keyhole: no config at %s: create one with `keyhole init`, or set KEYHOLE_CONFIG", cfg)
	}
	o.ConfigPath = cfg
	if err := os.MkdirAll(o.DataDir, 0o700); err != nil {
		return fmt.Errorf("keyhole: create data dir %s: %w", o.DataDir, err)
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	unlock, err := takeStartLock(ctx, filepath.Join(o.DataDir, startLockFile))
	if err != nil {
		return o.noAnswer(err)
	}
	defer unlock()
	// Another client may have replaced the broker while this one waited.
	if replace && brokerAnswers(o.DataDir) && o.outdated() {
		if err := o.replace(ctx); err != nil {
			return err
		}
	}
	return o.startAndWait(ctx)
}

// outdated reports whether the running broker is an older keyhole that
// this client may replace: a background broker serving no stdio client.
// An older broker it may not replace gets a warning, and is joined.
func (o StartOptions) outdated() bool {
	c, err := admin.Dial(o.DataDir)
	if err != nil {
		return false
	}
	st, err := c.Status()
	c.Close()
	if err != nil || !server.NewerThan(st) {
		return false
	}
	if st.AutoStarted && st.Clients == 0 {
		return true
	}
	why := fmt.Sprintf("it serves %d other editor session(s)", st.Clients)
	if !st.AutoStarted {
		why = "it was started with keyhole serve"
	}
	o.Logger.Warn(fmt.Sprintf("the running broker (pid %d) is keyhole %s, older than this keyhole %s; this session runs %s because %s. Run `keyhole stop` when you can, and the next client starts keyhole %s",
		st.PID, st.Version, server.Version, st.Version, why, server.Version), "broker_version", st.Version, "version", server.Version)
	return false
}

// replace stops the running (older) broker and waits for the data dir.
func (o StartOptions) replace(ctx context.Context) error {
	st, err := server.StopBroker(ctx, o.DataDir, server.StopOptions{Timeout: o.Timeout})
	if err != nil {
		return fmt.Errorf("keyhole: replace the older broker (pid %d): %w", st.PID, err)
	}
	o.Logger.Info("replaced an older broker", "pid", st.PID, "version", server.Version)
	return nil
}

// startAndWait starts a broker and dials until it (or another process's
// broker) answers. The caller holds the start lock.
func (o StartOptions) startAndWait(ctx context.Context) error {
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	var exited <-chan error // nil while no child of ours runs
	var from int64          // broker.log's size when our child started
	for {
		if brokerAnswers(o.DataDir) {
			return nil
		}
		if exited == nil && !server.OwnerAlive(o.DataDir) {
			var err error
			if exited, from, err = o.start(); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return o.noAnswer(ctx.Err())
		case err := <-exited:
			exited = nil
			// Another process owns the data dir: its broker may be coming
			// up (keep dialing), or it is an admin command that will let
			// go (then start another).
			if !server.OwnerAlive(o.DataDir) && !brokerAnswers(o.DataDir) {
				log := filepath.Join(o.DataDir, BrokerLogFile)
				return fmt.Errorf("keyhole: the broker exited (%v): %s (full log: %s)", err, lastLineSince(log, from), log)
			}
		case <-tick.C:
		}
	}
}

// start runs `keyhole serve` in the background, in its own session so it
// outlives this client, and returns a channel that gets its exit.
func (o StartOptions) start() (<-chan error, int64, error) {
	logPath := filepath.Join(o.DataDir, BrokerLogFile)
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, 0, fmt.Errorf("keyhole: open %s: %w", logPath, err)
	}
	defer logFile.Close()
	var from int64
	if fi, err := logFile.Stat(); err == nil {
		from = fi.Size()
	}
	cmd := exec.Command(o.Exe, "serve", "--idle-exit", "10m", "--auto-started", "--data-dir", o.DataDir, "--config", o.ConfigPath, "--log-format", "json")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if o.Store != "" {
		cmd.Env = append(os.Environ(), "KEYHOLE_STORE="+o.Store)
	}
	if o.Replica != "" {
		cmd.Args = append(cmd.Args, "--replica", o.Replica)
	}
	detach(cmd)
	if err := cmd.Start(); err != nil {
		return nil, 0, fmt.Errorf("keyhole: start a broker: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	o.Logger.Info("started a broker", "pid", cmd.Process.Pid, "log", logPath)
	return exited, from, nil
}

func (o StartOptions) noAnswer(err error) error {
	return fmt.Errorf("keyhole: no broker answered on %s within %s (see %s): %w",
		filepath.Join(o.DataDir, admin.SocketFile), o.Timeout, filepath.Join(o.DataDir, BrokerLogFile), err)
}

// brokerAnswers reports whether a broker answers on the data dir's socket.
func brokerAnswers(dataDir string) bool {
	c := admin.SocketClient(dataDir)
	defer c.CloseIdleConnections()
	resp, err := c.Get("http://keyhole/healthz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == 200
}

// takeStartLock takes the exclusive start lock, polling until ctx ends.
func takeStartLock(ctx context.Context, path string) (func(), error) {
	lk := flock.New(path, flock.SetPermissions(0o600))
	ok, err := lk.TryLockContext(ctx, 25*time.Millisecond)
	if err != nil && ctx.Err() == nil {
		return nil, fmt.Errorf("keyhole: lock %s: %w", path, err)
	}
	if !ok {
		return nil, ctx.Err()
	}
	return func() { lk.Close() }, nil
}

// lastLineSince returns the last non-empty line written to a log file at
// or after offset from.
func lastLineSince(path string, from int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if _, err := f.Seek(from, io.SeekStart); err != nil {
		return ""
	}
	b, err := io.ReadAll(io.LimitReader(f, 1<<20))
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}
