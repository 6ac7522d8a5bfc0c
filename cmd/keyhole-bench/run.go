package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mark3labs/mcp-go/client"
)

// report is everything one run measured.
type report struct {
	Micro    []micro
	Levels   []levelResult
	Startup  []time.Duration // sorted
	RSS      map[string][2]int64
	Sessions int
	FS       string
	Cfg      Config
	Growth   growthResult
}

// run does one benchmark run and writes the table to stdout.
func run(ctx context.Context, cfg Config, stdout, progress io.Writer) error {
	rep := report{Cfg: cfg, Sessions: max(cfg.Sessions, slices.Max(cfg.Levels)), RSS: map[string][2]int64{}}
	if cfg.Micro != "" {
		f, err := os.Open(cfg.Micro)
		if err != nil {
			return fmt.Errorf("keyhole-bench: --micro: %w", err)
		}
		rep.Micro, err = parseMicro(f)
		f.Close()
		if err != nil {
			return err
		}
	}
	tmp, err := os.MkdirTemp(cfg.Dir, "keyhole-bench-")
	if err != nil {
		return fmt.Errorf("keyhole-bench: %w", err)
	}
	defer os.RemoveAll(tmp)
	rep.FS = fsName(tmp)

	bin := cfg.Keyhole
	if bin == "" {
		fmt.Fprintln(progress, "building keyhole")
		if bin, err = buildKeyhole(ctx, tmp); err != nil {
			return err
		}
	} else if bin, err = filepath.Abs(bin); err != nil {
		return fmt.Errorf("keyhole-bench: --keyhole: %w", err)
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("keyhole-bench: find own binary: %w", err)
	}

	up, err := startUpstream()
	if err != nil {
		return err
	}
	defer up.Close()
	hdir := filepath.Join(tmp, "home")
	if err := os.Mkdir(hdir, 0o700); err != nil {
		return fmt.Errorf("keyhole-bench: %w", err)
	}
	h, err := newHome(ctx, bin, hdir, up.URL)
	if err != nil {
		return err
	}

	fmt.Fprintf(progress, "timing keyhole stdio to initialize (%d launches)\n", cfg.StartupRuns)
	for range cfg.StartupRuns {
		d, err := h.timeStdio(ctx)
		if err != nil {
			return err
		}
		rep.Startup = append(rep.Startup, d)
	}
	slices.Sort(rep.Startup)

	kh, err := h.serve(ctx)
	if err != nil {
		return err
	}
	defer kh.Stop()
	bare, err := startBare(ctx, self, up.URL)
	if err != nil {
		return err
	}
	defer bare.Stop()
	fmt.Fprintf(progress, "starting %d phantom-token sessions\n", rep.Sessions)
	toks, ids, err := h.tokens(ctx, rep.Sessions)
	if err != nil {
		return err
	}

	fmt.Fprintf(progress, "opening %d MCP sessions on bare and on keyhole\n", rep.Sessions)
	bareClients, err := openSessions(ctx, bare, make([]string, rep.Sessions), rep.RSS, "bare")
	defer closeAll(bareClients)
	if err != nil {
		return err
	}
	khClients, err := openSessions(ctx, kh, toks, rep.RSS, "keyhole")
	defer closeAll(khClients)
	if err != nil {
		return err
	}

	fmt.Fprintf(progress, "load: levels %v, %d rounds, %s\n", cfg.Levels, cfg.Rounds, perPhase(cfg))
	arms := []arm{directArm(up.URL), mcpArm("bare", bareClients, bare.PID()), mcpArm("keyhole", khClients, kh.PID())}
	if rep.Levels, err = runLoad(ctx, cfg, arms, progress); err != nil {
		return err
	}
	if cfg.Growth > 0 {
		n := min(64, len(khClients))
		if rep.Growth, err = growth(ctx, cfg, h, kh, khClients[:n], ids[0], progress); err != nil {
			return err
		}
	}
	return rep.write(stdout)
}

// openSessions opens one MCP session per token on c (an empty token sends
// no Authorization) and makes one call on each, reading c's resident memory
// after the first session and after the last.
func openSessions(ctx context.Context, c *child, toks []string, rss map[string][2]int64, name string) ([]*client.Client, error) {
	hc := &http.Client{Transport: newTransport(), Timeout: 60 * time.Second}
	var clients []*client.Client
	var mem [2]int64
	for i, tok := range toks {
		cl, err := dialMCP(ctx, c.URL, tok, hc)
		if err != nil {
			return clients, err
		}
		clients = append(clients, cl)
		if err := mcpArm(name, clients, 0).call(ctx, i, i+1); err != nil {
			return clients, err
		}
		if i == 0 || i == len(toks)-1 {
			v, err := readRSS(c.PID())
			if err != nil {
				return clients, err
			}
			mem[min(i, 1)] = v
		}
	}
	rss[name] = mem
	return clients, nil
}

func closeAll(cs []*client.Client) {
	for _, c := range cs {
		c.Close()
	}
}

// readRSS returns the resident set size of process pid in bytes, from
// VmRSS in /proc/<pid>/status (Linux).
func readRSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("keyhole-bench: read RSS (Linux /proc only): %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("keyhole-bench: VmRSS %q: %w", v, err)
			}
			return kb << 10, nil
		}
	}
	return 0, errors.Join(errors.New("keyhole-bench: no VmRSS in /proc status"), sc.Err())
}

// fsName names the file system holding dir, which decides what an fsync
// costs; the magic number when it is not one of the common ones.
func fsName(dir string) string {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return "unknown"
	}
	names := map[int64]string{0xEF53: "ext4", 0x01021994: "tmpfs", 0x58465342: "xfs", 0x9123683E: "btrfs", 0x794C7630: "overlayfs", 0x2FC12FC1: "zfs"}
	if n, ok := names[int64(st.Type)]; ok {
		return n
	}
	return fmt.Sprintf("fs 0x%x", st.Type)
}

func perPhase(cfg Config) string {
	if cfg.Requests > 0 {
		return fmt.Sprintf("%d calls per arm per round", cfg.Requests)
	}
	return fmt.Sprintf("%s per arm per round", cfg.Duration)
}

// write prints the report as one Markdown table under a line naming the
// machine and the method.
func (r report) write(w io.Writer) error {
	host, _ := os.Hostname()
	fmt.Fprintf(w, "keyhole-bench %s on %s: %s/%s, %d CPUs shared by the load generator, upstream and servers, %s, data dir on %s; %d rounds × %s, warmup %s.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), host, runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version(), r.FS, r.Cfg.Rounds, perPhase(r.Cfg), r.Cfg.Warmup)
	fmt.Fprintln(w, "| area | measure | result | target |")
	fmt.Fprintln(w, "| --- | --- | --- | --- |")
	row := func(area, measure, result, target string) {
		fmt.Fprintf(w, "| %s | %s | %s | %s |\n", area, measure, result, target)
	}
	for _, m := range r.Micro {
		t, ok := m.target()
		row("micro", m.Name, m.result(), verdict(t, ok))
	}
	for _, lr := range r.Levels {
		area := fmt.Sprintf("load c=%d", lr.Conc)
		for _, name := range []string{"direct", "bare", "keyhole"} {
			s := lr.Arms[name]
			row(area, name, fmt.Sprintf("p50 %s · p90 %s · p99 %s ms · %s calls/s (%s calls)", ms(s.P50), ms(s.P90), ms(s.P99), num(s.PerSecond), num(float64(s.Calls))), "")
		}
		k, b, d := lr.Arms["keyhole"], lr.Arms["bare"], lr.Arms["direct"]
		ratio := 0.0
		if b.PerSecond > 0 {
			ratio = k.PerSecond / b.PerSecond
		}
		over := func(x stats) string {
			return fmt.Sprintf("p50 %s · p90 %s · p99 %s ms", plus(k.P50-x.P50), plus(k.P90-x.P90), plus(k.P99-x.P99))
		}
		target := verdict("throughput ≥ 0.8 × bare", ratio >= 0.8)
		if lr.Conc == 1 {
			target = verdict("p50 ≤ +0.25 ms", k.P50-b.P50 <= 250*time.Microsecond) + "; " + verdict("p99 ≤ +0.6 ms", k.P99-b.P99 <= 600*time.Microsecond)
		}
		row(area, "keyhole over bare", fmt.Sprintf("%s · throughput %.2f × bare", over(b), ratio), target)
		row(area, "keyhole over direct", over(d), "")
		if k.CPUPerCall > 0 && b.CPUPerCall > 0 {
			row(area, "server CPU per call", fmt.Sprintf("bare %s · keyhole %s (%.2f × bare)", us(b.CPUPerCall), us(k.CPUPerCall), float64(k.CPUPerCall)/float64(b.CPUPerCall)), "")
		}
	}
	if n := len(r.Startup); n > 0 {
		p50 := percentile(r.Startup, 50)
		row("startup", "keyhole stdio --standalone launched → initialize answered", fmt.Sprintf("p50 %s · max %s ms (%d launches)", ms(p50), ms(r.Startup[n-1]), n), verdict("≤ 100 ms", p50 <= 100*time.Millisecond))
	}
	for _, name := range []string{"keyhole", "bare"} {
		m, ok := r.RSS[name]
		if !ok {
			continue
		}
		proc := map[string]string{"keyhole": "keyhole serve", "bare": "bare passthrough"}[name]
		row("memory", proc+" RSS, 1 session", mb(m[0]), "")
		t := ""
		if name == "keyhole" && r.Sessions == 100 {
			t = verdict("≤ 60 MB", m[1] <= 60e6)
		}
		row("memory", fmt.Sprintf("%s RSS, %d sessions", proc, r.Sessions), mb(m[1]), t)
	}
	r.Growth.rows(row)
	return nil
}

// verdict is a target with "met" or "not met"; "" for no target.
func verdict(target string, ok bool) string {
	switch {
	case target == "":
		return ""
	case ok:
		return target + ": met"
	default:
		return target + ": **not met**"
	}
}

// plus formats a latency difference in ms with its sign.
func plus(d time.Duration) string {
	if d >= 0 {
		return "+" + ms(d)
	}
	return "−" + ms(-d)
}

func mb(b int64) string { return strconv.FormatFloat(float64(b)/1e6, 'f', 1, 64) + " MB" }
