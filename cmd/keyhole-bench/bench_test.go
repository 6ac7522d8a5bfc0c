package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// asMain makes the test binary act as keyhole-bench itself, so the smoke
// test can start it as the bare passthrough child.
const asMain = "KEYHOLE_BENCH_TEST_AS_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(asMain) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestPercentileIsNearestRank(t *testing.T) {
	ten := make([]time.Duration, 10)
	for i := range ten {
		ten[i] = time.Duration(i+1) * time.Millisecond
	}
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Microsecond
	}
	cases := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one sample", []time.Duration{7}, 99, 7},
		{"p50 of 10", ten, 50, 5 * time.Millisecond},
		{"p90 of 10", ten, 90, 9 * time.Millisecond},
		{"p99 of 10 is the max", ten, 99, 10 * time.Millisecond},
		{"p100", ten, 100, 10 * time.Millisecond},
		{"tiny p is the min", ten, 0.1, time.Millisecond},
		{"p99 of 100", hundred, 99, 99 * time.Microsecond},
		{"p50 of 100", hundred, 50, 50 * time.Microsecond},
	}
	for _, c := range cases {
		if got := percentile(c.sorted, c.p); got != c.want {
			t.Errorf("%s: percentile(%d samples, %v) = %v, want %v", c.name, len(c.sorted), c.p, got, c.want)
		}
	}
}

func TestSummarizeCountsCallsOverWallTime(t *testing.T) {
	ss := []sample{
		{lat: []time.Duration{3, 1, 2}, wall: 500 * time.Millisecond},
		{lat: []time.Duration{4}, wall: 500 * time.Millisecond},
	}
	got := summarize(ss)
	want := stats{Calls: 4, P50: 2, P90: 4, P99: 4, PerSecond: 4}
	if got != want {
		t.Fatalf("summarize(%v) = %+v, want %+v", ss, got, want)
	}
}

const goTestOutput = `goos: linux
goarch: amd64
pkg: github.com/keyhole-dev/keyhole/policy
cpu: Intel(R) Xeon(R)
BenchmarkDecide/100/allowed-2         	 1000000	       812.5 ns/op	       0 B/op	       0 allocs/op
BenchmarkDecide/100/denied-2          	  500000	      1204 ns/op	      48 B/op	       1 allocs/op
PASS
ok  	github.com/keyhole-dev/keyhole/policy	1.2s
pkg: github.com/keyhole-dev/keyhole/tools/scrub
BenchmarkScrub/4KiB/1secrets-2        	   10000	      9000 ns/op	 455.11 MB/s	       0 B/op	       0 allocs/op
pkg: github.com/keyhole-dev/keyhole/server/audit
BenchmarkAppend/callers=64-2          	   20000	     51234 ns/op	     19518 records/s	    2048 B/op	      30 allocs/op
`

func TestParseMicroReadsEveryMetricAndJudgesTargets(t *testing.T) {
	got, err := parseMicro(strings.NewReader(goTestOutput))
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		name   string
		result string
		target string
		met    bool
	}{
		{"policy Decide/100/allowed", "812 ns/op · 0 B/op · 0 allocs/op", "≤ 1 µs and 0 allocs/op", true},
		{"policy Decide/100/denied", "1,204 ns/op · 48 B/op · 1 allocs/op", "≤ 1 µs and 0 allocs/op", false},
		{"tools/scrub Scrub/4KiB/1secrets", "9,000 ns/op · 455 MB/s · 0 B/op · 0 allocs/op", "≥ 300 MB/s per core", true},
		{"server/audit Append/callers=64", "51,234 ns/op · 19,518 records/s · 2,048 B/op · 30 allocs/op", "", false},
	}
	if len(got) != len(want) {
		t.Fatalf("parseMicro = %d results (%+v), want %d", len(got), got, len(want))
	}
	for i, w := range want {
		tg, met := got[i].target()
		if got[i].Name != w.name || got[i].result() != w.result || tg != w.target || met != w.met {
			t.Errorf("result %d = %q %q target %q met %v; want %q %q target %q met %v", i, got[i].Name, got[i].result(), tg, met, w.name, w.result, w.target, w.met)
		}
	}
}

// TestSmokeAllArms runs the whole bench with tiny counts: it builds
// keyhole, times stdio, starts keyhole serve and the bare child, and every
// arm must complete calls whose answers were checked.
func TestSmokeAllArms(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs keyhole")
	}
	t.Setenv(asMain, "1")
	cfg := defaultConfig()
	cfg.Levels = []int{1, 2}
	cfg.Rounds, cfg.Requests, cfg.Warmup = 2, 20, 0
	cfg.Sessions, cfg.StartupRuns = 3, 1
	cfg.Dir = t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out, progress bytes.Buffer
	if err := run(ctx, cfg, &out, &progress); err != nil {
		t.Fatalf("run: %v\nprogress:\n%s", err, progress.String())
	}
	table := out.String()
	for _, c := range []string{"1", "2"} {
		for _, a := range []string{"direct", "bare", "keyhole"} {
			// Two rounds of exactly 20 calls each.
			re := regexp.MustCompile(`\| load c=` + c + ` \| ` + a + ` \| p50 [0-9.]+ · p90 [0-9.]+ · p99 [0-9.]+ ms · [0-9.,]+ calls/s \(40 calls\) \|`)
			if !re.MatchString(table) {
				t.Errorf("no row for %s at c=%s with 40 calls in:\n%s", a, c, table)
			}
		}
		if !strings.Contains(table, "| load c="+c+" | keyhole over bare | p50 ") {
			t.Errorf("no keyhole-over-bare row at c=%s in:\n%s", c, table)
		}
	}
	for _, want := range []string{
		"| startup | keyhole stdio --standalone launched → initialize answered | p50 ",
		"| memory | keyhole serve RSS, 3 sessions | ",
		"| memory | bare passthrough RSS, 3 sessions | ",
		"data dir on ",
	} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
	rss := regexp.MustCompile(`keyhole serve RSS, 1 session \| ([0-9.]+) MB`).FindStringSubmatch(table)
	if rss == nil {
		t.Fatalf("no keyhole RSS in:\n%s", table)
	}
	if v, _ := strconv.ParseFloat(rss[1], 64); v < 1 {
		t.Errorf("keyhole serve RSS = %s MB, want a real reading", rss[1])
	}
	if strings.Contains(table, benchSecret) || strings.Contains(progress.String(), benchSecret) {
		t.Error("the bench credential appears in the output")
	}
}

// TestMeasureReportsTheCommandsOwnRSS: a command run straight from a
// process holding 200 MB reports at least that as its maximum RSS (Linux,
// CLONE_VM); run through `measure` it reports its own, and its output and
// exit status come through.
func TestMeasureReportsTheCommandsOwnRSS(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("ru_maxrss inheritance is Linux's")
	}
	t.Setenv(asMain, "1")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ballast := make([]byte, 200<<20)
	for i := range ballast {
		ballast[i] = 1
	}
	direct := exec.Command("/bin/sh", "-c", "echo hi")
	if err := direct.Run(); err != nil {
		t.Fatal(err)
	}
	inherited := direct.ProcessState.SysUsage().(*syscall.Rusage).Maxrss * 1024
	out, took, rss, err := measured(context.Background(), self, exec.Command("/bin/sh", "-c", "echo hi"))
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != "hi\n" || took <= 0 {
		t.Errorf("measure: out %q, took %v", out, took)
	}
	if inherited < 200<<20 {
		t.Logf("this kernel does not carry the parent's RSS over (direct: %d bytes)", inherited)
	}
	if rss <= 0 || rss >= 100<<20 {
		t.Errorf("measured RSS %d bytes; want the command's own, far below the parent's 200 MB (direct: %d)", rss, inherited)
	}
	if _, _, _, err := measured(context.Background(), self, exec.Command("/bin/sh", "-c", "exit 3")); err == nil {
		t.Error("a failing command measured without error")
	}
	runtime.KeepAlive(ballast)
}
