package audit

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkAppend measures allowed calls (an fsynced intent plus an
// outcome) with 1, 8 and 64 concurrent callers, reported as records/s,
// and the p50 and p99 of one call's audit (Begin to Finish) in µs.
func BenchmarkAppend(b *testing.B) {
	for _, callers := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("callers=%d", callers), func(b *testing.B) {
			f := newFixture(b)
			l := f.open()
			defer l.Close()
			ctx := context.Background()
			var next atomic.Int64
			var wg sync.WaitGroup
			lat := make([]time.Duration, b.N)
			b.ResetTimer()
			for c := range callers {
				// One session per caller, as each client of a broker has.
				rec := allowed("ses_bench"+strconv.Itoa(c*7919), "github")
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := next.Add(1); i <= int64(b.N); i = next.Add(1) {
						t0 := time.Now()
						p, err := l.Begin(ctx, rec)
						if err == nil {
							err = p.Finish(ctx, rec)
						}
						if err != nil {
							b.Error(err)
							return
						}
						lat[i-1] = time.Since(t0)
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
		})
	}
}

// BenchmarkQuerySession measures reading one session's 100 records out of
// a large log: KEYHOLE_AUDIT_BENCH_N records (default 100000; make bench
// uses 1000000).
func BenchmarkQuerySession(b *testing.B) {
	n := 100_000
	if s := os.Getenv("KEYHOLE_AUDIT_BENCH_N"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 100 {
			b.Fatalf("KEYHOLE_AUDIT_BENCH_N=%q: want an integer >= 100", s)
		}
		n = v
	}
	f := newFixture(b)
	l := f.open()
	defer l.Close()
	sessions := n / 100
	fill(b, l, n, func(i int) *entry {
		rec := denied("s"+strconv.Itoa(i%sessions), "github")
		return l.entryFrom(typeCall, &rec)
	})
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		recs, err := l.Query(Filter{Session: "s" + strconv.Itoa(i%sessions)})
		if err != nil || len(recs) != 100 {
			b.Fatalf("Query = %d records, %v; want 100", len(recs), err)
		}
	}
}

// fill appends n entries in large group commits.
func fill(b testing.TB, l *Log, n int, mk func(i int) *entry) {
	b.Helper()
	for start := 0; start < n; start += maxBatch {
		ops := make([]*op, 0, maxBatch)
		for i := start; i < min(n, start+maxBatch); i++ {
			o, err := l.newOp(mk(i), false)
			if err != nil {
				b.Fatal(err)
			}
			ops = append(ops, o)
			l.queue <- o
		}
		for _, o := range ops {
			if r := <-o.done; r.err != nil {
				b.Fatal(r.err)
			}
		}
	}
}

// BenchmarkLargeLog measures the readers and the start over a log of
// KEYHOLE_AUDIT_LARGE_N records (default 100000; BENCHMARKS.md reports
// 1000000): each allowed call an intent and an outcome, 1 in 4 calls
// denied, 1,000 sessions. KEYHOLE_AUDIT_LARGE_DIR keeps the log between
// runs (it takes minutes to write a million records).
func BenchmarkLargeLog(b *testing.B) {
	n := 100_000
	if s := os.Getenv("KEYHOLE_AUDIT_LARGE_N"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1000 {
			b.Fatalf("KEYHOLE_AUDIT_LARGE_N=%q: want an integer >= 1000", s)
		}
		n = v
	}
	dir := os.Getenv("KEYHOLE_AUDIT_LARGE_DIR")
	if dir == "" {
		dir = b.TempDir()
	}
	path := filepath.Join(dir, fmt.Sprintf("audit-%d.sqlite", n))
	cp := newMemCheckpoint()
	cpFile := path + ".checkpoint"
	if data, err := os.ReadFile(cpFile); err == nil {
		cp.records[CheckpointName] = data
	} else {
		os.Remove(path)
		l, err := Open(Options{Path: path, Key: testKey, Checkpoint: cp})
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		fillCalls(b, l, n)
		l.Close()
		b.Logf("wrote %d records in %v", n, time.Since(start))
		if err := os.WriteFile(cpFile, cp.records[CheckpointName], 0o600); err != nil {
			b.Fatal(err)
		}
	}
	opts := Options{Path: path, Key: testKey, Checkpoint: cp}
	b.Run("open", func(b *testing.B) {
		for b.Loop() {
			l, err := Open(opts)
			if err != nil {
				b.Fatal(err)
			}
			l.Close()
		}
	})
	ro := opts
	ro.ReadOnly = true
	l, err := Open(ro)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	for _, q := range []struct {
		name string
		f    Filter
	}{
		{"tail-10", Filter{Limit: 10}},
		{"tail-session", Filter{Session: "s500", Limit: 20}},
		{"tail-deny-10", Filter{Decision: Deny, Limit: 10}},
		{"get", Filter{}},
	} {
		b.Run(q.name, func(b *testing.B) {
			for b.Loop() {
				if q.name == "get" {
					if _, err := l.Get(uint64(n / 2)); err != nil {
						b.Fatal(err)
					}
					continue
				}
				recs, err := l.Query(q.f)
				if err != nil || len(recs) == 0 {
					b.Fatalf("Query(%+v) = %d records, %v", q.f, len(recs), err)
				}
			}
		})
	}
	b.Run("verify", func(b *testing.B) {
		var entries uint64
		for b.Loop() {
			rep, err := l.Verify()
			if err != nil || !rep.OK {
				b.Fatalf("Verify = %+v, %v", rep, err)
			}
			entries += rep.Entries
		}
		b.ReportMetric(float64(entries)/b.Elapsed().Seconds(), "entries/s")
	})
}

// fillCalls writes about n records as concurrent calls would (3 allowed
// calls, an intent and an outcome each, to 1 denial) through the group
// committer, in large batches: a chunk of intents and denials, then their
// outcomes.
func fillCalls(b testing.TB, l *Log, records int) {
	b.Helper()
	wait := func(ops []*op) {
		for _, o := range ops {
			if r := <-o.done; r.err != nil {
				b.Fatal(r.err)
			}
		}
	}
	send := func(e *entry) *op {
		o, err := l.newOp(e, false)
		if err != nil {
			b.Fatal(err)
		}
		l.queue <- o
		return o
	}
	const chunk = 1000
	for i := 0; i < records; {
		var first, intents []*op
		for j := 0; j < chunk && i < records; j++ {
			session := "s" + strconv.Itoa(j%1000)
			if j%4 == 3 {
				rec := denied(session, "github")
				first = append(first, send(l.entryFrom(typeCall, &rec)))
				i++
			} else {
				rec := allowed(session, "github")
				o := send(l.entryFrom(typeIntent, &rec))
				first = append(first, o)
				intents = append(intents, o)
				i += 2
			}
		}
		wait(first)
		var outs []*op
		for _, o := range intents {
			out := allowed(o.e.Session, "github")
			out.Status, out.Duration = 200, 3*time.Millisecond
			outs = append(outs, send(outcomeOf(o.e, o.e.Seq, &out)))
		}
		wait(outs)
	}
}
