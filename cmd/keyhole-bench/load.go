package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
)

// newTransport is the HTTP transport every arm uses: keep-alive with enough
// idle connections that no concurrency level churns TCP connections.
func newTransport() *http.Transport {
	return &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        1024,
		MaxIdleConnsPerHost: 1024,
		IdleConnTimeout:     90 * time.Second,
	}
}

// upstream is the loopback API all three arms reach: GET /issues/N with the
// bench credential answers a small JSON issue numbered N (about 300 bytes);
// without the credential it answers 401, so an arm that fails to send it
// fails the run.
type upstream struct {
	srv *http.Server
	URL string
}

func startUpstream() (*upstream, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("upstream: listen: %w", err)
	}
	u := &upstream{URL: "http://" + ln.Addr().String()}
	u.srv = &http.Server{Handler: http.HandlerFunc(u.serveHTTP), ReadHeaderTimeout: 10 * time.Second}
	go u.srv.Serve(ln)
	return u, nil
}

func (u *upstream) serveHTTP(w http.ResponseWriter, r *http.Request) {
	n, ok := strings.CutPrefix(r.URL.Path, "/issues/")
	if _, err := strconv.Atoi(n); !ok || err != nil {
		http.NotFound(w, r)
		return
	}
	if r.Header.Get("Authorization") != "Bearer "+benchSecret {
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, `{"number":`+n+`,"title":"Issue `+n+`","state":"open","labels":[{"name":"bug"},{"name":"triage"}],"user":{"login":"octocat","id":583231},"comments":3,"body":"Steps to reproduce: call the endpoint twice; the second call returns the first call's result."}`)
}

func (u *upstream) Close() error { return u.srv.Close() }

// wantNumber is what every arm's answer to call n must contain.
func wantNumber(n int) string { return `"number":` + strconv.Itoa(n) + `,` }

// arm is one way of making the same call. call is made by worker w (0 ≤ w <
// the concurrency) for issue n, and fails unless the answer is issue n.
// pid, when set, is the server process the arm goes through, whose CPU
// time is read around each phase.
type arm struct {
	name string
	call func(ctx context.Context, w, n int) error
	pid  int
}

// directArm calls the upstream with a plain HTTP client.
func directArm(up string) arm {
	hc := &http.Client{Transport: newTransport(), Timeout: 30 * time.Second}
	return arm{name: "direct", call: func(ctx context.Context, _, n int) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, up+"/issues/"+strconv.Itoa(n), nil)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+benchSecret)
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), wantNumber(n)) {
			return fmt.Errorf("direct: status %d, body %.200q", resp.StatusCode, body)
		}
		return nil
	}}
}

// mcpArm calls the "tracker" tool, worker w on clients[w], through the
// server process pid (0: not measured).
func mcpArm(name string, clients []*client.Client, pid int) arm {
	return arm{name: name, pid: pid, call: func(ctx context.Context, w, n int) error {
		req := mcp.CallToolRequest{}
		req.Params.Name = "tracker"
		req.Params.Arguments = map[string]any{"method": "GET", "path": "/issues/" + strconv.Itoa(n)}
		res, err := clients[w].CallTool(ctx, req)
		if err != nil {
			return err
		}
		text := resultText(res)
		if res.IsError || !strings.Contains(text, wantNumber(n)) {
			return fmt.Errorf("%s: tool result (error %v) %.300q", name, res.IsError, text)
		}
		return nil
	}}
}

func resultText(r *mcp.CallToolResult) string {
	var b strings.Builder
	for _, c := range r.Content {
		if tc, ok := c.(mcp.TextContent); ok {
			b.WriteString(tc.Text)
		}
	}
	return b.String()
}

// dialMCP opens one initialized streamable-HTTP MCP session at url; a
// non-empty token is sent as Authorization: Bearer.
func dialMCP(ctx context.Context, url, token string, hc *http.Client) (*client.Client, error) {
	opts := []transport.StreamableHTTPCOption{transport.WithHTTPBasicClient(hc)}
	if token != "" {
		opts = append(opts, transport.WithHTTPHeaders(map[string]string{"Authorization": "Bearer " + token}))
	}
	c, err := client.NewStreamableHttpClient(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("mcp client %s: %w", url, err)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("mcp client %s: start: %w", url, err)
	}
	init := mcp.InitializeRequest{}
	init.Params.ProtocolVersion = mcp.LATEST_PROTOCOL_VERSION
	init.Params.ClientInfo = mcp.Implementation{Name: "keyhole-bench", Version: "1"}
	if _, err := c.Initialize(ctx, init); err != nil {
		c.Close()
		return nil, fmt.Errorf("mcp client %s: initialize: %w", url, err)
	}
	return c, nil
}

// sample is what one arm did in one phase.
type sample struct {
	lat  []time.Duration
	wall time.Duration
	// cpu is the CPU time (user and system) the arm's server process
	// spent during the phase; 0 when the arm has none.
	cpu time.Duration
}

// phase runs a at concurrency conc until d has passed, or, when requests is
// positive, until requests calls were made. seq numbers the calls. It stops
// at the first failed call and returns its error.
func phase(ctx context.Context, a arm, conc int, d time.Duration, requests int, seq *atomic.Int64) (sample, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		all      []time.Duration
		firstErr error
		issued   atomic.Int64
	)
	cpu0, cpuErr := processCPU(a.pid)
	start := time.Now()
	deadline := start.Add(d)
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]time.Duration, 0, 1024)
			var err error
			for ctx.Err() == nil {
				if requests > 0 {
					if issued.Add(1) > int64(requests) {
						break
					}
				} else if !time.Now().Before(deadline) {
					break
				}
				n := int(seq.Add(1))
				t0 := time.Now()
				if err = a.call(ctx, w, n); err != nil {
					cancel()
					break
				}
				lat = append(lat, time.Since(t0))
			}
			mu.Lock()
			all = append(all, lat...)
			if err != nil && firstErr == nil {
				firstErr = fmt.Errorf("%s at concurrency %d: %w", a.name, conc, err)
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	s := sample{lat: all, wall: time.Since(start)}
	if cpu1, err := processCPU(a.pid); err == nil && cpuErr == nil {
		s.cpu = cpu1 - cpu0
	}
	return s, firstErr
}

// stats summarises the samples of one arm at one concurrency.
type stats struct {
	Calls         int
	P50, P90, P99 time.Duration
	PerSecond     float64
	// CPUPerCall is the server process's CPU time per call (0: not
	// measured). Unlike latency and throughput it hardly depends on what
	// else the machine runs, so it is the steadier comparison of arms.
	CPUPerCall time.Duration
}

func summarize(ss []sample) stats {
	var lat []time.Duration
	var wall, cpu time.Duration
	for _, s := range ss {
		lat = append(lat, s.lat...)
		wall += s.wall
		cpu += s.cpu
	}
	slices.Sort(lat)
	st := stats{Calls: len(lat), P50: percentile(lat, 50), P90: percentile(lat, 90), P99: percentile(lat, 99)}
	if wall > 0 {
		st.PerSecond = float64(len(lat)) / wall.Seconds()
	}
	if len(lat) > 0 {
		st.CPUPerCall = cpu / time.Duration(len(lat))
	}
	return st
}

// clockTick is the unit of the CPU times in /proc/<pid>/stat (USER_HZ,
// 100 on Linux).
const clockTick = 10 * time.Millisecond

// processCPU returns the user and system CPU time process pid has used,
// from /proc/<pid>/stat (Linux); 0 for pid 0.
func processCPU(pid int) (time.Duration, error) {
	if pid == 0 {
		return 0, nil
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("keyhole-bench: read CPU time (Linux /proc only): %w", err)
	}
	// The command name (field 2) may hold spaces; fields after it are
	// plain. utime and stime are fields 14 and 15.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("keyhole-bench: malformed /proc stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("keyhole-bench: short /proc stat")
	}
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("keyhole-bench: /proc stat: %w", err)
		}
		ticks += n
	}
	return time.Duration(ticks) * clockTick, nil
}

// percentile is the nearest-rank p-th percentile (0 < p ≤ 100) of sorted;
// 0 for no samples.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// levelResult is every arm's stats at one concurrency.
type levelResult struct {
	Conc int
	Arms map[string]stats
}

// runLoad measures every arm at every level: a warmup per arm, then rounds
// in which each arm runs once, the order rotating between rounds.
func runLoad(ctx context.Context, cfg Config, arms []arm, progress io.Writer) ([]levelResult, error) {
	var seq atomic.Int64
	var out []levelResult
	for _, conc := range cfg.Levels {
		for _, a := range arms {
			if cfg.Warmup > 0 {
				if _, err := phase(ctx, a, conc, cfg.Warmup, 0, &seq); err != nil {
					return nil, err
				}
			}
		}
		samples := map[string][]sample{}
		for r := range cfg.Rounds {
			for i := range arms {
				a := arms[(r+i)%len(arms)]
				s, err := phase(ctx, a, conc, cfg.Duration, cfg.Requests, &seq)
				if err != nil {
					return nil, err
				}
				samples[a.name] = append(samples[a.name], s)
			}
		}
		lr := levelResult{Conc: conc, Arms: map[string]stats{}}
		for name, ss := range samples {
			lr.Arms[name] = summarize(ss)
		}
		for _, a := range arms {
			st := lr.Arms[a.name]
			fmt.Fprintf(progress, "  c=%-3d %-8s %7d calls  p50 %s  p99 %s  %.0f/s", conc, a.name, st.Calls, ms(st.P50), ms(st.P99), st.PerSecond)
			if st.CPUPerCall > 0 {
				fmt.Fprintf(progress, "  server CPU %s/call", us(st.CPUPerCall))
			}
			fmt.Fprintln(progress)
		}
		out = append(out, lr)
	}
	if err := ctx.Err(); err != nil {
		return nil, errors.Join(errors.New("keyhole-bench: interrupted"), err)
	}
	return out, nil
}

// us formats d in microseconds, rounded.
func us(d time.Duration) string {
	return strconv.FormatInt(d.Round(time.Microsecond).Microseconds(), 10) + " µs"
}

// ms formats d in milliseconds with two decimals.
func ms(d time.Duration) string { return strconv.FormatFloat(float64(d)/1e6, 'f', 2, 64) }
