package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/mod/semver"

	"github.com/keyhole-dev/keyhole/policy"
	"github.com/keyhole-dev/keyhole/server/admin"
	"github.com/keyhole-dev/keyhole/server/audit"
)

// executable returns this process's binary and its modification time, the
// time it was built (or installed).
func executable() (string, time.Time) {
	exe, err := os.Executable()
	if err != nil {
		return "", time.Time{}
	}
	fi, err := os.Stat(exe)
	if err != nil {
		return exe, time.Time{}
	}
	return exe, fi.ModTime().UTC()
}

// takeOver makes way for `keyhole serve` when a broker already owns the
// data dir: one a `keyhole stdio` started in the background, serving no
// stdio client, is stopped (it is only a helper for stdio clients); any
// other is an error that says exactly what to run.
func takeOver(ctx context.Context, o ServeOptions) error {
	c, err := admin.Dial(o.DataDir)
	if err != nil {
		return nil
	}
	st, err := c.Status()
	c.Close()
	if err != nil {
		return nil // an older broker: OpenDataDir says who owns the data dir
	}
	again := o.CommandLine
	if again == "" {
		again = "keyhole serve"
	}
	switch {
	case !st.AutoStarted:
		return fmt.Errorf("keyhole: a broker (pid %d, version %s, started with keyhole serve) already owns %s; to replace it, run `keyhole stop` and then `%s`", st.PID, st.Version, o.DataDir, again)
	case st.Clients > 0:
		return fmt.Errorf("keyhole: a broker started by keyhole stdio (pid %d, version %s) owns %s and serves %d editor session(s), which would end with it; once they are closed run `%s` again, or run `keyhole stop` and then `%s` and restart the MCP server in each editor", st.PID, st.Version, o.DataDir, st.Clients, again, again)
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log.Info("taking over from the broker keyhole stdio started", "pid", st.PID, "version", st.Version)
	_, err = StopBroker(ctx, o.DataDir, StopOptions{})
	return err
}

// StopOptions says how StopBroker waits.
type StopOptions struct {
	// Timeout bounds the wait for a graceful stop; 0 is 15 seconds.
	Timeout time.Duration
	// Force kills the broker when it has not stopped by Timeout.
	Force bool
}

// ErrStopTimeout is returned by StopBroker when the broker did not stop
// in time and Force was not set.
var ErrStopTimeout = errors.New("the broker did not stop in time")

// StopBroker asks the broker that owns dataDir to stop gracefully (it
// stops accepting, running calls finish and are recorded) and returns
// once its process has exited, so the data dir is free. It wraps
// admin.ErrNoBroker when no broker answers.
func StopBroker(ctx context.Context, dataDir string, o StopOptions) (admin.Stopping, error) {
	if o.Timeout == 0 {
		o.Timeout = 15 * time.Second
	}
	var st admin.Stopping
	if c, err := admin.Dial(dataDir); err == nil {
		st, err = c.Stop()
		c.Close()
		if err != nil {
			return st, err
		}
	} else if pid, ok := StoppingBroker(dataDir); ok {
		st.PID = pid // stopping already: wait for it, or kill it
	} else {
		return st, err
	}
	wctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	if waitFree(wctx, dataDir) {
		return st, nil
	}
	if !o.Force {
		return st, fmt.Errorf("keyhole: broker pid %d is still finishing calls after %s (`keyhole stop --force` kills it): %w", st.PID, o.Timeout, ErrStopTimeout)
	}
	if p, err := os.FindProcess(st.PID); err == nil {
		p.Kill()
	}
	kctx, kcancel := context.WithTimeout(ctx, 10*time.Second)
	defer kcancel()
	if !waitFree(kctx, dataDir) {
		return st, fmt.Errorf("keyhole: broker pid %d did not let go of %s after it was killed", st.PID, dataDir)
	}
	return st, nil
}

// waitFree polls until the data dir's lock is free or ctx ends: the
// broker has released it on its way out, or died.
func waitFree(ctx context.Context, dir string) bool {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for !dataDirFree(dir) {
		select {
		case <-ctx.Done():
			return dataDirFree(dir)
		case <-t.C:
		}
	}
	return true
}

// NewerThan reports whether this binary is a newer keyhole than the
// broker st describes: by version when both are semantic versions (as
// `git describe` and releases give), else, when the versions differ, by
// when each binary was built.
func NewerThan(st admin.Status) bool {
	own, theirs := Version, st.Version
	if own == theirs {
		return false
	}
	if semver.IsValid(own) && semver.IsValid(theirs) {
		return semver.Compare(own, theirs) > 0
	}
	_, built := executable()
	return !built.IsZero() && !st.ExecutableTime.IsZero() && built.After(st.ExecutableTime)
}

// streamCloser ends the event streams (GET /mcp) clients hold open, so a
// graceful shutdown waits for running calls and not for listeners.
type streamCloser struct {
	mu      sync.Mutex
	cancels map[*http.Request]context.CancelFunc
	closed  bool
}

func (s *streamCloser) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || r.URL.Path != "/mcp" {
			h.ServeHTTP(w, r)
			return
		}
		ctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			http.Error(w, "keyhole broker is stopping", http.StatusServiceUnavailable)
			return
		}
		if s.cancels == nil {
			s.cancels = map[*http.Request]context.CancelFunc{}
		}
		s.cancels[r] = cancel
		s.mu.Unlock()
		defer func() {
			s.mu.Lock()
			delete(s.cancels, r)
			s.mu.Unlock()
		}()
		h.ServeHTTP(w, r.WithContext(ctx))
	})
}

func (s *streamCloser) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for _, cancel := range s.cancels {
		cancel()
	}
}

// codeInvalidArguments is the code of a call refused for its arguments.
const codeInvalidArguments = "invalid_arguments"

// auditUsage counts a session's calls and denials in the audit log the
// way policy.Session counts them, so a restarted broker takes back what a
// crash kept it from writing.
func auditUsage(log *audit.Log) func(id string) (SessionUsage, error) {
	return func(id string) (SessionUsage, error) {
		recs, err := log.Query(audit.Filter{Session: id})
		if err != nil {
			return SessionUsage{}, err
		}
		var u SessionUsage
		for _, r := range recs {
			if strings.HasPrefix(r.Tool, "keyhole.") {
				continue // an operator's change naming the session, not a call
			}
			call, denial := usageOf(r)
			if call {
				u.Calls++
				if r.Time.After(u.LastCall) {
					u.LastCall = r.Time
				}
			}
			if denial {
				u.Denials++
			}
		}
		return u, nil
	}
}

// usageOf says whether a record counted as a call and as a denial of its
// session (policy.Session.Decide, NoteDenial, NoteScrubbed). It never
// counts more than policy did: a code whose denial policy may or may not
// have counted (an access request's answer) counts as a call only, and
// the record the store kept stays the lower bound.
func usageOf(r audit.Record) (call, denial bool) {
	switch r.Code {
	case policy.CodeSessionExpired, policy.CodeSessionRevoked, policy.CodeSessionEnded:
		return false, false // refused before anything was counted
	case codeInvalidArguments:
		return false, true
	case policy.CodeNotGranted, policy.CodeUnknownTool, policy.CodeTripwire, policy.CodeSecretInArguments:
		return true, true
	}
	return true, r.Decision == audit.Allow && r.Scrubbed
}
