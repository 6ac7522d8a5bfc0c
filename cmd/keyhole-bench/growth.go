package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mark3labs/mcp-go/client"

	"github.com/keyhole-dev/keyhole/server/audit"
	"github.com/keyhole-dev/keyhole/vault"
)

// growthResult is what the growth phase measured.
type growthResult struct {
	Calls, Warmup int
	// RSS of the broker after the warm-up calls and after all of them.
	RSSWarm, RSSEnd int64
	// Records in the log when the audit commands ran (after any fill).
	Records int64
	Fill    time.Duration // time to pad the log to Records, 0 if not padded
	Start   []time.Duration
	Cmds    []cmdResult
}

// cmdResult is one audit command run through the binary.
type cmdResult struct {
	Name  string
	Times []time.Duration // sorted
	RSS   int64           // the largest maximum resident set of the runs
}

// growth makes cfg.Growth calls through the running broker kh (after
// cfg.GrowthWarmup of them, its RSS is read again), stops it, optionally
// pads the log to cfg.Fill records written directly, then times broker
// restarts to its MCP URL and the audit commands people run.
func growth(ctx context.Context, cfg Config, h *home, kh *child, clients []*client.Client, sessionID string, progress io.Writer) (growthResult, error) {
	g := growthResult{Calls: cfg.Growth, Warmup: min(cfg.GrowthWarmup, cfg.Growth)}
	calls := mcpArm("keyhole", clients, 0)
	var next atomic.Int64
	next.Store(1 << 30) // markers apart from the load phase's
	run := func(n int) error {
		var issued atomic.Int64
		var wg sync.WaitGroup
		errs := make(chan error, len(clients))
		for w := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for issued.Add(1) <= int64(n) {
					if err := calls.call(ctx, w, int(next.Add(1))); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		return <-errs
	}
	fmt.Fprintf(progress, "growth: %d calls through keyhole serve (%d clients)\n", g.Calls, len(clients))
	if err := run(g.Warmup); err != nil {
		return g, err
	}
	var err error
	if g.RSSWarm, err = readRSS(kh.PID()); err != nil {
		return g, err
	}
	if err := run(g.Calls - g.Warmup); err != nil {
		return g, err
	}
	if g.RSSEnd, err = readRSS(kh.PID()); err != nil {
		return g, err
	}
	kh.Stop()
	if cfg.Fill > 0 {
		fmt.Fprintf(progress, "growth: padding the audit log to %d records\n", cfg.Fill)
		start := time.Now()
		if err := h.fillAudit(cfg.Fill); err != nil {
			return g, err
		}
		g.Fill = time.Since(start)
	}
	fmt.Fprintln(progress, "growth: restarting the broker and running the audit commands")
	for range 3 {
		start := time.Now()
		c, err := h.serve(ctx)
		if err != nil {
			return g, err
		}
		g.Start = append(g.Start, time.Since(start))
		c.Stop()
	}
	slices.Sort(g.Start)
	var rep struct {
		Entries uint64 `json:"entries"`
		Head    uint64 `json:"head"`
		OK      bool   `json:"ok"`
	}
	for _, c := range []struct {
		name string
		args []string
	}{
		{"audit tail -n 10", []string{"audit", "tail", "-n", "10"}},
		{"audit tail --session S", []string{"audit", "tail", "--session", sessionID}},
		{"audit show SEQ", []string{"audit", "show", "1000"}},
		{"audit verify", []string{"audit", "verify", "--json"}},
	} {
		r := cmdResult{Name: c.name}
		for range 3 {
			out, took, rss, err := h.measure(ctx, c.args...)
			if err != nil {
				return g, err
			}
			r.Times = append(r.Times, took)
			r.RSS = max(r.RSS, rss)
			if c.name == "audit verify" {
				if err := json.Unmarshal(out, &rep); err != nil || !rep.OK {
					return g, fmt.Errorf("audit verify after the growth phase: %s (%v)", out, err)
				}
				g.Records = int64(rep.Entries)
			}
		}
		slices.Sort(r.Times)
		g.Cmds = append(g.Cmds, r)
	}
	return g, nil
}

// measure runs keyhole args and returns its stdout, wall time and maximum
// resident set size, through this binary's `measure` (see measureCmd: run
// straight from here, the maximum RSS would be at least the bench's own).
func (h *home) measure(ctx context.Context, args ...string) ([]byte, time.Duration, int64, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, 0, 0, fmt.Errorf("keyhole-bench: find own binary: %w", err)
	}
	out, took, rss, err := measured(ctx, self, h.command(ctx, args...))
	if err != nil {
		return nil, 0, 0, fmt.Errorf("keyhole %v: %w", args, err)
	}
	return out, took, rss, nil
}

// auditKeyLabel is the label keyhole derives the audit key with (server's
// auditKeyLabel): the bench writes records a broker would.
const auditKeyLabel = "keyhole audit v1"

// fillAudit pads the home's audit log with denied calls until it holds
// about records entries, written directly (the broker is stopped), as
// fast as the group committer takes them.
func (h *home) fillAudit(records int) error {
	dataDir := filepath.Join(h.dir, "data", "keyhole")
	v, err := vault.Open(filepath.Join(dataDir, "vault.db"), vault.KeySource{KeyFile: filepath.Join(h.dir, "config", "keyhole", "master.key")})
	if err != nil {
		return fmt.Errorf("fill: %w", err)
	}
	defer v.Close()
	l, err := audit.Open(audit.Options{Path: filepath.Join(dataDir, "audit.sqlite"), Key: v.DeriveKey(auditKeyLabel), Checkpoint: v})
	if err != nil {
		return fmt.Errorf("fill: %w", err)
	}
	last, err := l.Query(audit.Filter{Limit: 1})
	if err != nil || len(last) == 0 {
		l.Close()
		return fmt.Errorf("fill: read the head: %d records, %v", len(last), err)
	}
	have := int(last[0].Seq)
	var wg sync.WaitGroup
	var next atomic.Int64
	next.Store(int64(have))
	errs := make(chan error, 64)
	for w := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(records) {
				_, err := l.Write(context.Background(), audit.Record{
					Session: "ses_fill" + strconv.Itoa(w), Scope: "bench", Tool: "tracker", Kind: "http",
					Method: "DELETE", Host: "127.0.0.1", Path: "/issues/" + strconv.Itoa(w),
					Decision: audit.Deny, Code: "not_granted", Reason: "DELETE /issues/* is not granted to scope bench",
				})
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return errors.Join(<-errs, l.Close())
}

// rows writes the growth phase's rows of the report table.
func (g growthResult) rows(row func(area, measure, result, target string)) {
	if g.Calls == 0 {
		return
	}
	perK := float64(g.RSSEnd-g.RSSWarm) / float64(max(1, g.Calls-g.Warmup)) * 1000
	row("growth", fmt.Sprintf("keyhole serve RSS after %s calls (warm-up %s)", num(float64(g.Calls)), num(float64(g.Warmup))),
		fmt.Sprintf("%s → %s · %+.1f kB per 1,000 calls", mb(g.RSSWarm), mb(g.RSSEnd), perK/1e3), verdict("≤ 50 kB per 1,000 calls", perK <= 50e3))
	if g.Fill > 0 {
		row("growth", "audit log padded with direct writes", fmt.Sprintf("%s s", strconv.FormatFloat(g.Fill.Seconds(), 'f', 1, 64)), "")
	}
	at := fmt.Sprintf("at %s entries", num(float64(g.Records)))
	row("growth", "keyhole serve started → MCP URL logged, "+at,
		fmt.Sprintf("median %s · max %s ms (3 starts)", ms(g.Start[len(g.Start)/2]), ms(g.Start[len(g.Start)-1])), verdict("≤ 150 ms", g.Start[len(g.Start)/2] <= 150*time.Millisecond))
	for _, c := range g.Cmds {
		med := c.Times[len(c.Times)/2]
		result := fmt.Sprintf("median %s ms · max RSS %s (3 runs)", ms(med), mb(c.RSS))
		target := ""
		switch c.Name {
		case "audit tail -n 10", "audit tail --session S":
			target = verdict("≤ 50 ms and ≤ 40 MB", med <= 50*time.Millisecond && c.RSS <= 40e6)
		case "audit verify":
			rate := float64(g.Records) / med.Seconds()
			result = fmt.Sprintf("median %s ms · %s entries/s · max RSS %s (3 runs)", ms(med), num(rate), mb(c.RSS))
			target = verdict("≥ 200,000 records/s and ≤ 40 MB", rate >= 200e3 && c.RSS <= 40e6)
		}
		row("growth", c.Name+", "+at, result, target)
	}
}
