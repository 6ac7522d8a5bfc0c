package audit

import (
	"reflect"
	"testing"
	"time"
)

// A time window is read as the seqs between its first and last call,
// from the time index: a clock that went back puts calls out of order,
// and none is lost or added.
func TestTimeWindowWithAClockThatWentBack(t *testing.T) {
	f := newFixture(t)
	l := f.open()
	defer l.Close()
	f.clock.Add(2 * time.Minute)
	mustWrite(t, l, denied("s1", "github")) // 1 at t0+2m
	f.clock.Add(-2 * time.Minute)
	mustWrite(t, l, denied("s1", "github")) // 2 at t0
	f.clock.Add(3 * time.Minute)
	mustCall(t, l, allowed("s1", "github"), 200) // 3 at t0+3m
	f.clock.Add(time.Minute)
	mustWrite(t, l, denied("s2", "github")) // 5 at t0+4m
	tests := map[string]struct {
		f    Filter
		want []uint64
	}{
		"since":                  {Filter{Since: t0.Add(time.Minute)}, []uint64{1, 3, 5}},
		"until":                  {Filter{Until: t0.Add(time.Minute)}, []uint64{2}},
		"window":                 {Filter{Since: t0.Add(time.Minute), Until: t0.Add(4 * time.Minute)}, []uint64{1, 3}},
		"window, last one":       {Filter{Since: t0.Add(time.Minute), Until: t0.Add(4 * time.Minute), Limit: 1}, []uint64{3}},
		"window and seqs":        {Filter{Since: t0.Add(time.Minute), AfterSeq: 1, BeforeSeq: 5}, []uint64{3}},
		"an empty window":        {Filter{Since: t0.Add(time.Hour)}, []uint64{}},
		"an empty window, limit": {Filter{Until: t0.Add(-time.Hour), Limit: 5}, []uint64{}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := seqs(mustQuery(t, l, tc.f)); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("Query(%+v) seqs = %v, want %v", tc.f, got, tc.want)
			}
		})
	}
}
