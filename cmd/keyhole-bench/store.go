package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/spf13/cobra"

	"github.com/keyhole-dev/keyhole/server/servertest"
)

// storeConfig is one run of `keyhole-bench store`.
type storeConfig struct {
	Keyhole  string
	Rounds   int
	Duration time.Duration
	Warmup   time.Duration
	// Clients is the concurrency of the throughput phase, spread over
	// the brokers.
	Clients int
	Dir     string
}

func storeBenchCmd(stdout, stderr io.Writer) *cobra.Command {
	cfg := storeConfig{Rounds: 5, Duration: time.Second, Warmup: 300 * time.Millisecond, Clients: 16}
	c := &cobra.Command{
		Use:   "store",
		Short: "Compare the PostgreSQL store with the embedded one: latency, round trips per call, throughput of 1-3 brokers",
		Long: `store starts a throwaway PostgreSQL cluster (fsync on) from the machine's
server binaries, then measures, through keyhole serve and an mcp-go client:
the latency of one call at concurrency 1 on the embedded store and on
PostgreSQL (interleaved rounds), the round trips to PostgreSQL per call
(keyhole_store_round_trips_total), and the throughput of 1, 2 and 3 brokers
on one PostgreSQL with --clients clients spread over them, with the CPU
each part used (brokers, PostgreSQL, the bench's clients and upstream).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runStore(cmd.Context(), cfg, stdout, stderr)
		},
	}
	f := c.Flags()
	f.StringVar(&cfg.Keyhole, "keyhole", cfg.Keyhole, "keyhole binary (default: build ./cmd/keyhole)")
	f.IntVar(&cfg.Rounds, "rounds", cfg.Rounds, "interleaved rounds of the latency comparison")
	f.DurationVar(&cfg.Duration, "duration", cfg.Duration, "time per arm per round, and per throughput measurement")
	f.DurationVar(&cfg.Warmup, "warmup", cfg.Warmup, "unmeasured time before each measurement")
	f.IntVar(&cfg.Clients, "clients", cfg.Clients, "clients of the throughput phase, spread over the brokers")
	f.StringVar(&cfg.Dir, "dir", cfg.Dir, "parent directory of the temporary homes")
	return c
}

// storeBroker is one keyhole serve of the bench.
type storeBroker struct {
	*child
	dataDir string
}

func runStore(ctx context.Context, cfg storeConfig, stdout, progress io.Writer) error {
	tmp, err := os.MkdirTemp(cfg.Dir, "keyhole-bench-store-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	bin := cfg.Keyhole
	if bin == "" {
		fmt.Fprintln(progress, "building keyhole")
		if bin, err = buildKeyhole(ctx, tmp); err != nil {
			return err
		}
	}
	up, err := startUpstream()
	if err != nil {
		return err
	}
	defer up.Close()
	fmt.Fprintln(progress, "starting PostgreSQL (fsync on)")
	pg, err := servertest.StartPostgres(servertest.PostgresOptions{Durable: true})
	if err != nil {
		return err
	}
	defer pg.Stop()
	url, err := pg.Database()
	if err != nil {
		return err
	}

	// The embedded store.
	if err := os.MkdirAll(filepath.Join(tmp, "embedded"), 0o700); err != nil {
		return err
	}
	eh, err := newHome(ctx, bin, filepath.Join(tmp, "embedded"), up.URL)
	if err != nil {
		return err
	}
	embedded, err := eh.serve(ctx)
	if err != nil {
		return err
	}
	defer embedded.Stop()

	// The PostgreSQL store.
	ph, err := newStoreHome(ctx, bin, filepath.Join(tmp, "postgres"), up.URL, url)
	if err != nil {
		return err
	}
	var brokers []*storeBroker
	defer func() {
		for _, b := range brokers {
			b.Stop()
		}
	}()
	for i := range 3 {
		dd := filepath.Join(ph.dir, "broker"+strconv.Itoa(i+1))
		c, err := ph.serveArgs(ctx, "--data-dir", dd, "--replica", "b"+strconv.Itoa(i+1))
		if err != nil {
			return err
		}
		brokers = append(brokers, &storeBroker{child: c, dataDir: dd})
	}

	hc := &http.Client{Transport: newTransport()}
	dial := func(h *home, u string) (*client.Client, error) {
		toks, _, err := h.tokens(ctx, 1)
		if err != nil {
			return nil, err
		}
		return dialMCP(ctx, u, toks[0], hc)
	}
	ec, err := dial(eh, embedded.URL)
	if err != nil {
		return err
	}
	defer ec.Close()
	pc, err := dial(ph, brokers[0].URL)
	if err != nil {
		return err
	}
	defer pc.Close()

	fmt.Fprintln(progress, "latency at concurrency 1")
	arms := []arm{mcpArm("embedded", []*client.Client{ec}, 0), mcpArm("postgres", []*client.Client{pc}, 0)}
	levels, err := runLoad(ctx, Config{Levels: []int{1}, Rounds: cfg.Rounds, Duration: cfg.Duration, Warmup: cfg.Warmup}, arms, progress)
	if err != nil {
		return err
	}

	// Round trips per call: a quiet broker's counter over a known number
	// of calls (its background work, a checkpoint every 50 ms and a
	// counter flush every second, is counted with them).
	const rtCalls = 2000
	rt0, err := roundTrips(ctx, brokers[0].dataDir)
	if err != nil {
		return err
	}
	var seq atomic.Int64
	seq.Store(1 << 30)
	rtStart := time.Now()
	if _, err := phase(ctx, arms[1], 1, 0, rtCalls, &seq); err != nil {
		return err
	}
	rtWall := time.Since(rtStart)
	rt1, err := roundTrips(ctx, brokers[0].dataDir)
	if err != nil {
		return err
	}

	fmt.Fprintln(progress, "throughput of the embedded broker, then of 1, 2 and 3 brokers on PostgreSQL")
	et, err := measureBrokers(ctx, cfg, eh, []*storeBroker{{child: embedded}}, nil, hc, &seq)
	if err != nil {
		return err
	}
	fmt.Fprintf(progress, "  embedded: %.0f calls/s\n", et.PerSecond)
	tps := []throughput{et}
	for n := 1; n <= 3; n++ {
		t, err := measureBrokers(ctx, cfg, ph, brokers[:n], pg, hc, &seq)
		if err != nil {
			return err
		}
		fmt.Fprintf(progress, "  %d broker(s): %.0f calls/s\n", n, t.PerSecond)
		tps = append(tps, t)
	}
	writeStoreReport(stdout, cfg, levels[0], float64(rt1-rt0)/rtCalls, rtCalls, rtWall, tps)
	return nil
}

// newStoreHome is a home whose commands use the PostgreSQL store at url.
func newStoreHome(ctx context.Context, bin, dir, upstream, url string) (*home, error) {
	key := make([]byte, 32)
	rand.Read(key)
	h := &home{bin: bin, dir: dir, env: []string{
		"HOME=" + dir,
		"XDG_CONFIG_HOME=" + filepath.Join(dir, "config"),
		"XDG_DATA_HOME=" + filepath.Join(dir, "data"),
		"PATH=" + os.Getenv("PATH"),
		"KEYHOLE_MASTER_KEY=" + base64.StdEncoding.EncodeToString(key),
		"KEYHOLE_STORE=" + url,
	}}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if _, err := h.run(ctx, "", "store", "migrate"); err != nil {
		return nil, err
	}
	if _, err := h.run(ctx, benchSecret, "secret", "set", "bench_token"); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "keyhole.yaml"), fmt.Appendf(nil, benchConfig, upstream), 0o600); err != nil {
		return nil, err
	}
	return h, nil
}

// roundTrips reads keyhole_store_round_trips_total from a broker's
// /metrics on its unix socket.
func roundTrips(ctx context.Context, dataDir string) (uint64, error) {
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", filepath.Join(dataDir, "keyhole.sock"))
	}}}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://keyhole/metrics", nil)
	resp, err := hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("broker metrics: %w", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "keyhole_store_round_trips_total "); ok {
			f, err := strconv.ParseFloat(v, 64)
			return uint64(f), err
		}
	}
	return 0, errors.New("broker metrics: no keyhole_store_round_trips_total")
}

// throughput is what n brokers did together.
type throughput struct {
	Brokers   int
	Calls     int
	PerSecond float64
	P50, P99  time.Duration
	// CPU is the CPU time (user+system) over the wall time, in cores.
	CPUBrokers, CPUPostgres, CPUBench float64
}

// measureBrokers runs cfg.Clients clients spread over brokers for
// cfg.Duration and reads the CPU each part used meanwhile.
func measureBrokers(ctx context.Context, cfg storeConfig, h *home, brokers []*storeBroker, pg *servertest.Postgres, hc *http.Client, seq *atomic.Int64) (throughput, error) {
	clients := make([]*client.Client, cfg.Clients)
	toks, _, err := h.tokens(ctx, cfg.Clients)
	if err != nil {
		return throughput{}, err
	}
	for i := range clients {
		if clients[i], err = dialMCP(ctx, brokers[i%len(brokers)].URL, toks[i], hc); err != nil {
			return throughput{}, err
		}
		defer clients[i].Close()
	}
	a := mcpArm("postgres", clients, 0)
	if _, err := phase(ctx, a, cfg.Clients, cfg.Warmup, 0, seq); err != nil {
		return throughput{}, err
	}
	var pids []int
	for _, b := range brokers {
		pids = append(pids, b.PID())
	}
	var pgPIDs []int
	if pg != nil {
		pgPIDs = clusterPIDs(pg.DataDir())
	}
	b0, p0, s0 := cpuOf(pids), cpuOf(pgPIDs), selfCPU()
	s, err := phase(ctx, a, cfg.Clients, cfg.Duration, 0, seq)
	if err != nil {
		return throughput{}, err
	}
	if pg != nil {
		pgPIDs = append(pgPIDs, clusterPIDs(pg.DataDir())...) // backends started meanwhile
	}
	b1, p1, s1 := cpuOf(pids), cpuOf(dedupe(pgPIDs)), selfCPU()
	st := summarize([]sample{s})
	w := s.wall.Seconds()
	if pg == nil {
		// Every PostgreSQL process of the first measurement is at rest.
		return throughput{Brokers: 0, Calls: st.Calls, PerSecond: st.PerSecond, P50: st.P50, P99: st.P99,
			CPUBrokers: (b1 - b0) / w, CPUBench: (s1 - s0) / w}, nil
	}
	return throughput{
		Brokers: len(brokers), Calls: st.Calls, PerSecond: st.PerSecond, P50: st.P50, P99: st.P99,
		CPUBrokers: (b1 - b0) / w, CPUPostgres: (p1 - p0) / w, CPUBench: (s1 - s0) / w,
	}, nil
}

func dedupe(pids []int) []int {
	seen := map[int]bool{}
	var out []int
	for _, p := range pids {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}

// clusterPIDs are the postmaster of the cluster and its children.
func clusterPIDs(dataDir string) []int {
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return nil
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pm, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil {
		return nil
	}
	pids := []int{pm}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, ok := procStat(pid); ok && st.ppid == pm {
			pids = append(pids, pid)
		}
	}
	return pids
}

type stat struct {
	ppid int
	cpu  float64 // seconds, user + system
}

// procStat reads /proc/PID/stat (Linux).
func procStat(pid int) (stat, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return stat{}, false
	}
	// The command name is in parentheses and may hold spaces.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return stat{}, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return stat{}, false
	}
	ppid, _ := strconv.Atoi(f[1])
	ut, _ := strconv.ParseFloat(f[11], 64)
	stt, _ := strconv.ParseFloat(f[12], 64)
	return stat{ppid: ppid, cpu: (ut + stt) / 100}, true // USER_HZ is 100 on Linux
}

func cpuOf(pids []int) float64 {
	var sum float64
	for _, p := range pids {
		if st, ok := procStat(p); ok {
			sum += st.cpu
		}
	}
	return sum
}

// selfCPU is this process's CPU time: the clients and the upstream.
func selfCPU() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

func writeStoreReport(w io.Writer, cfg storeConfig, lat levelResult, rtPerCall float64, rtCalls int, rtWall time.Duration, tps []throughput) {
	e, p := lat.Arms["embedded"], lat.Arms["postgres"]
	fmt.Fprintf(w, "\n### PostgreSQL store vs embedded, one call at a time (%d rounds of %s, interleaved)\n\n", cfg.Rounds, cfg.Duration)
	fmt.Fprintln(w, "| store | calls | p50 ms | p90 ms | p99 ms | calls/s |")
	fmt.Fprintln(w, "| --- | ---: | ---: | ---: | ---: | ---: |")
	for _, r := range []struct {
		name string
		s    stats
	}{{"embedded (audit.sqlite, vault file)", e}, {"PostgreSQL (one broker)", p}} {
		fmt.Fprintf(w, "| %s | %d | %s | %s | %s | %.0f |\n", r.name, r.s.Calls, ms(r.s.P50), ms(r.s.P90), ms(r.s.P99), r.s.PerSecond)
	}
	fmt.Fprintf(w, "| **added by PostgreSQL** | | **%+.2f** | | **%+.2f** | |\n", float64(p.P50-e.P50)/1e6, float64(p.P99-e.P99)/1e6)
	fmt.Fprintf(w, "\nRound trips to PostgreSQL per call: **%.2f** (%d calls at concurrency 1 in %s, background work included).\n", rtPerCall, rtCalls, rtWall.Round(time.Millisecond))
	fmt.Fprintf(w, "\n### Throughput of several brokers on one PostgreSQL (%d clients spread over them, %s)\n\n", cfg.Clients, cfg.Duration)
	fmt.Fprintln(w, "| brokers | calls | calls/s | p50 ms | p99 ms | CPU brokers | CPU PostgreSQL | CPU bench (clients, upstream) |")
	fmt.Fprintln(w, "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	for _, t := range tps {
		name := strconv.Itoa(t.Brokers)
		if t.Brokers == 0 {
			name = "1 (embedded store)"
		}
		fmt.Fprintf(w, "| %s | %d | %.0f | %s | %s | %.2f | %.2f | %.2f |\n", name, t.Calls, t.PerSecond, ms(t.P50), ms(t.P99), t.CPUBrokers, t.CPUPostgres, t.CPUBench)
	}
	fmt.Fprintln(w, "\nCPU columns are cores used on average (CPU seconds over wall seconds).")
}
