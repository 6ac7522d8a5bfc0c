package console

import (
	"context"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/keyhole-dev/keyhole/policy"
	"github.com/keyhole-dev/keyhole/server/access"
	"github.com/keyhole-dev/keyhole/server/audit"
)

// The overview: live sessions, calls per minute, denials, open access
// requests, the chain's verification, secrets that need attention.

// activityWindow is how far back the overview's chart of calls reaches.
const activityWindow = time.Hour

// maxOverviewRows caps each list of the overview; the full lists are a
// click away.
const maxOverviewRows = 10

type overviewData struct {
	Active      []policy.SessionInfo
	ActiveCount int
	Chart       chart
	Open        []access.Request
	OpenCount   int
	AccessOff   bool
	Chain       chainState
	Attention   []secretRow
	Err         string
}

// chart is the calls of the last hour, a bar a minute, drawn as SVG by
// the template from these numbers.
type chart struct {
	Bars                []bar
	Calls, Denied, Peak int
	LastMinute          int
	Width, Height       int
}

type bar struct {
	X, Y, H, DY, DH int // the bar of calls, and of the denied ones inside it
	Label           string
}

func (c *Console) overview(w http.ResponseWriter, r *http.Request, s consoleSession) {
	var d overviewData
	active, err := c.o.Sessions.List(false)
	if err != nil {
		d.Err = "sessions: " + err.Error()
	}
	d.ActiveCount = len(active)
	sort.SliceStable(active, func(i, j int) bool { return active[i].LastCall.After(active[j].LastCall) })
	d.Active = active[:min(len(active), maxOverviewRows)]

	now := c.o.Now()
	minutes, err := c.o.Audit.Activity(now.Add(-activityWindow))
	if err != nil {
		d.Err = "audit: " + err.Error()
	}
	d.Chart = drawChart(minutes, now)

	if c.o.Access == nil {
		d.AccessOff = true
	} else {
		for _, req := range c.o.Access.List(false) {
			if req.State == access.StateOpen {
				d.OpenCount++
				if len(d.Open) < maxOverviewRows {
					d.Open = append(d.Open, req)
				}
			}
		}
	}
	d.Chain = c.verify.state(c.started)
	rows, err := c.secretRows()
	if err != nil {
		d.Err = "secrets: " + err.Error()
	}
	for _, row := range rows {
		if len(row.Flags) > 0 {
			d.Attention = append(d.Attention, row)
		}
	}
	c.render(w, http.StatusOK, s, "overview", "Overview", "overview", d)
}

// drawChart lays out a bar per minute of the last hour.
func drawChart(minutes []audit.Minute, now time.Time) chart {
	const n, bw, height = 60, 8, 60
	ch := chart{Width: n * bw, Height: height}
	end := now.UTC().Truncate(time.Minute)
	calls := make([]audit.Minute, n)
	for _, m := range minutes {
		i := n - 1 - int(end.Sub(m.Start)/time.Minute)
		if i >= 0 && i < n {
			calls[i] = m
		}
		ch.Calls += m.Calls
		ch.Denied += m.Denied
		ch.Peak = max(ch.Peak, m.Calls)
	}
	ch.LastMinute = calls[n-1].Calls
	for i, m := range calls {
		if m.Calls == 0 {
			continue
		}
		h := max(1, m.Calls*height/max(ch.Peak, 1))
		dh := 0
		if m.Denied > 0 {
			dh = max(1, m.Denied*height/max(ch.Peak, 1))
		}
		ch.Bars = append(ch.Bars, bar{X: i * bw, Y: height - h, H: h, DY: height - dh, DH: dh,
			Label: end.Add(time.Duration(i-n+1)*time.Minute).Local().Format("15:04") + ": " + itoa(m.Calls) + " calls, " + itoa(m.Denied) + " denied"})
	}
	return ch
}

// chainState is what the overview says about the audit chain.
type chainState struct {
	// AtStart is when the broker opened the log: it checked the head
	// against the vault's checkpoint and verified the entries after it.
	AtStart time.Time
	Running bool
	Since   time.Time
	Last    *verifyResult
}

type verifyResult struct {
	At       time.Time
	Took     time.Duration
	Entries  uint64
	Head     uint64
	OK       bool
	Problems int
	First    audit.Problem
	Err      string
}

// verifier runs a verification of the whole chain in the background, one
// at a time, and keeps the last result.
type verifier struct {
	mu      sync.Mutex
	running bool
	since   time.Time
	last    *verifyResult
	wg      sync.WaitGroup
}

func (v *verifier) state(start time.Time) chainState {
	v.mu.Lock()
	defer v.mu.Unlock()
	return chainState{AtStart: start, Running: v.running, Since: v.since, Last: v.last}
}

// startVerify verifies the whole chain in the background; the overview
// shows the result.
func (c *Console) startVerify(w http.ResponseWriter, r *http.Request, s consoleSession) {
	v := c.verify
	v.mu.Lock()
	if !v.running {
		v.running, v.since = true, c.o.Now()
		v.wg.Add(1)
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			defer v.wg.Done()
			defer cancel()
			go func() {
				select {
				case <-c.done:
					cancel()
				case <-ctx.Done():
				}
			}()
			start := c.o.Now()
			rep, err := c.o.Audit.VerifyWith(ctx, audit.VerifyOptions{})
			res := &verifyResult{At: c.o.Now(), Took: c.o.Now().Sub(start), Entries: rep.Entries, Head: rep.Head, OK: rep.OK && err == nil, Problems: len(rep.Problems)}
			if len(rep.Problems) > 0 {
				res.First = rep.Problems[0]
			}
			if err != nil {
				res.Err = err.Error()
			}
			c.o.Logger.Info("console: audit chain verified", "console_session", s.ID, "ok", res.OK, "entries", res.Entries, "problems", res.Problems)
			v.mu.Lock()
			v.running, v.last = false, res
			v.mu.Unlock()
		}()
	}
	v.mu.Unlock()
	http.Redirect(w, r, "/ui/#chain", http.StatusSeeOther)
}
