package audit

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
)

// BenchmarkAppend measures allowed calls (an fsynced intent plus an
// outcome) with 1, 8 and 64 concurrent callers, reported as records/s.
func BenchmarkAppend(b *testing.B) {
	for _, callers := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("callers=%d", callers), func(b *testing.B) {
			f := newFixture(b)
			l := f.open()
			defer l.Close()
			ctx := context.Background()
			rec := allowed("bench", "github")
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			for range callers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for next.Add(1) <= int64(b.N) {
						p, err := l.Begin(ctx, rec)
						if err == nil {
							err = p.Finish(ctx, rec)
						}
						if err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
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
			o := &op{e: mk(i), done: make(chan result, 1)}
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
