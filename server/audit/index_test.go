package audit

import (
	"database/sql"
	"reflect"
	"strings"
	"testing"
	"time"
)

// Sessions and tool names are agent-controlled: no value may reach another
// value's records, whatever bytes it holds.
func TestQueryIsExactForArbitraryValues(t *testing.T) {
	f := newFixture(t)
	l := f.open()
	defer l.Close()
	values := []string{"a", "a/", "a/b", "ab", "a0", "a\x00", "a\xff\xfe", "\xff", "é", strings.Repeat("x", 2000)}
	for _, v := range values {
		mustWrite(t, l, denied(v, v))
	}
	for i, v := range values {
		want := []uint64{uint64(i + 1)}
		// Invalid UTF-8 is stored, and so read and found, as JSON encodes it.
		stored := asStored(v)
		for _, flt := range []Filter{{Session: stored}, {Tool: stored}} {
			recs := mustQuery(t, l, flt)
			if got := seqs(recs); !reflect.DeepEqual(got, want) || recs[0].Session != stored || recs[0].Tool != stored {
				t.Errorf("Query(%+v) = %+v, want seqs %v", flt, recs, want)
			}
		}
	}
	if got := asStored("a\xff\xfe"); got != "a\ufffd\ufffd" {
		t.Fatalf("asStored(%q) = %q, want %q", "a\xff\xfe", got, "a\ufffd\ufffd")
	}
}

// A clock set back puts later calls earlier in time: the time range follows
// the times, and the records still come in seq order.
func TestQueryTimeRangeWithClockSetBack(t *testing.T) {
	f := newFixture(t)
	l := f.open()
	defer l.Close()
	f.clock.Add(time.Hour)
	mustWrite(t, l, denied("s", "github")) // seq 1 at +1h
	f.clock.Add(-30 * time.Minute)
	mustCall(t, l, allowed("s", "github"), 200) // seq 2, 3 at +30m
	f.clock.Add(-30 * time.Minute)
	mustWrite(t, l, denied("s", "github")) // seq 4 at +0
	tests := map[string]struct {
		f    Filter
		want []uint64
	}{
		"since +30m":         {Filter{Since: t0.Add(30 * time.Minute)}, []uint64{1, 2}},
		"until +30m":         {Filter{Until: t0.Add(30 * time.Minute)}, []uint64{4}},
		"until +1h":          {Filter{Until: t0.Add(time.Hour)}, []uint64{2, 4}},
		"since +0 limit one": {Filter{Since: t0, Limit: 1}, []uint64{4}},
		"since +0 after 1":   {Filter{Since: t0, AfterSeq: 1}, []uint64{2, 4}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			recs := mustQuery(t, l, tc.f)
			if got := seqs(recs); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("Query(%+v) seqs = %v, want %v", tc.f, got, tc.want)
			}
			for _, r := range recs {
				if r.Seq == 2 && (r.Decision != Allow || r.Status != 200) {
					t.Fatalf("Query(%+v) call 2 = %+v, want merged with its outcome", tc.f, r)
				}
			}
		})
	}
}

// Indexes are over the MAC'd rows: a removed entry is gone from every
// index, and an edited entry is shown under the value it now holds (and
// Verify reports the edit), never under one it lacks.
func TestQuerySkipsStaleIndexKeys(t *testing.T) {
	f := newFixture(t)
	l := f.open()
	mustWrite(t, l, denied("s1", "github"))
	mustWrite(t, l, denied("s1", "github"))
	mustWrite(t, l, denied("s1", "github"))
	l.Close()
	f.tamper(func(db *sql.DB) error {
		if err := setRaw(db, 3, strings.Replace(rawEntry(t, db, 3), `"session":"s1"`, `"session":"s2"`, 1)); err != nil {
			return err
		}
		return deleteRaw(db, 2)
	})
	l = f.openReadOnly()
	if got := seqs(mustQuery(t, l, Filter{Session: "s1"})); !reflect.DeepEqual(got, []uint64{1}) {
		t.Fatalf("Query(session s1) on a tampered file = %v, want [1]", got)
	}
	if got := seqs(mustQuery(t, l, Filter{Tool: "github"})); !reflect.DeepEqual(got, []uint64{1, 3}) {
		t.Fatalf("Query(tool github) on a tampered file = %v, want [1 3]", got)
	}
}
