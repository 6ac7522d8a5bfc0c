package audit

import (
	"fmt"
	"path/filepath"
	"testing"
)

// BenchmarkStoreAppend measures one appendBatch of n entries (no fsync).
func BenchmarkStoreAppend(b *testing.B) {
	for _, n := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("batch=%d", n), func(b *testing.B) {
			st, err := openSQLite(filepath.Join(b.TempDir(), "a.sqlite"), false)
			if err != nil {
				b.Fatal(err)
			}
			defer st.close()
			k := newMACKey(testKey)
			seq := uint64(0)
			rec := allowed("bench", "github")
			for b.Loop() {
				rows := make([]row, n)
				for i := range rows {
					seq++
					e := fromRecord(typeIntent, &rec)
					e.Seq = seq
					e.Session = fmt.Sprintf("s%d", seq%100)
					v, _, _ := k.seal(e)
					rows[i] = row{Seq: seq, Value: v}
				}
				if err := st.appendBatch(rows, nil); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "entries/s")
		})
	}
}
