package audit

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/buntdb"
)

// indexKeys lists the index keys in the store.
func indexKeys(t *testing.T, l *Log) []string {
	t.Helper()
	var keys []string
	err := l.db.View(func(tx *buntdb.Tx) error {
		return tx.AscendGreaterOrEqual("", "ix/", func(k, _ string) bool {
			if !strings.HasPrefix(k, "ix/") {
				return false
			}
			keys = append(keys, k)
			return true
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

func TestIndexKeysAreWrittenWithEntriesAndPrunedWithThem(t *testing.T) {
	f := newFixture(t)
	l := f.open()
	defer l.Close()
	if got, err := l.db.Indexes(); err != nil || len(got) != 0 {
		t.Fatalf("buntdb indexes = %v, %v; want none (entries are indexed by keys)", got, err)
	}
	mustWrite(t, l, denied("s1", "github"))       // seq 1
	mustCall(t, l, allowed("s1", "archive"), 200) // seq 2, 3
	want := []string{
		ixOf + "00000000000000000002",
		ixSession + "7331/00000000000000000001",
		ixSession + "7331/00000000000000000002",
		ixTool + "61726368697665/00000000000000000002",
		ixTool + "676974687562/00000000000000000001",
		ixTime + formatTime(t0) + "/00000000000000000001",
		ixTime + formatTime(t0) + "/00000000000000000002",
	}
	if got := indexKeys(t, l); !reflect.DeepEqual(got, want) {
		t.Fatalf("index keys =\n%q\nwant\n%q", got, want)
	}
	if n, err := l.Prune(t0.Add(time.Hour)); err != nil || n != 2 {
		t.Fatalf("Prune = %d, %v; want 2 calls", n, err)
	}
	if got := indexKeys(t, l); len(got) != 0 {
		t.Fatalf("index keys after pruning every entry = %q, want none", got)
	}
}

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

// buntdb writes a transaction's keys in no fixed order, so a crash
// mid-write can keep an entry and lose its index keys. Open restores them
// for the entries after the checkpoint (the only ones not known fsynced).
func TestOpenRestoresIndexKeysAfterTheCheckpoint(t *testing.T) {
	f := newFixture(t)
	l := f.open()
	mustWrite(t, l, denied("s1", "github"))
	l.Close()
	synced := append([]byte(nil), f.cp.records[CheckpointName]...)
	l = f.open()
	mustCall(t, l, allowed("s1", "github"), 200) // seq 2, 3
	l.Close()
	f.cp.records[CheckpointName] = synced // as if the crash came before the checkpoint moved
	f.tamper(func(tx *buntdb.Tx) error {
		for _, k := range []string{
			valueKey(ixSession, "s1", 2), valueKey(ixTool, "github", 2), timeKey(formatTime(t0), 2), ofKey(2),
		} {
			if _, err := tx.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	// Read-only first: it must restore them in memory, before the
	// writable open has restored them in the file.
	for _, tc := range []struct {
		name string
		open func() *Log
	}{{"read-only", f.openReadOnly}, {"writable", f.open}} {
		t.Run(tc.name, func(t *testing.T) {
			l := tc.open()
			defer l.Close()
			for _, flt := range []Filter{{Session: "s1"}, {Tool: "github"}, {Since: t0}} {
				recs := mustQuery(t, l, flt)
				if got := seqs(recs); !reflect.DeepEqual(got, []uint64{1, 2}) || recs[1].Status != 200 {
					t.Fatalf("Query(%+v) after reopen = %+v, want seqs [1 2] with call 2 complete", flt, recs)
				}
			}
			if r, err := l.Get(2); err != nil || r.Decision != Allow || r.Status != 200 {
				t.Fatalf("Get(2) after reopen = %+v, %v; want the complete call", r, err)
			}
		})
	}
}

// Index keys are not part of the chain: one left behind by a removed entry
// is skipped, and an edited entry is never shown under a value it lacks.
func TestQuerySkipsStaleIndexKeys(t *testing.T) {
	f := newFixture(t)
	l := f.open()
	mustWrite(t, l, denied("s1", "github"))
	mustWrite(t, l, denied("s1", "github"))
	mustWrite(t, l, denied("s1", "github"))
	l.Close()
	f.tamper(func(tx *buntdb.Tx) error {
		v, err := tx.Get(entryKey(3))
		if err != nil {
			return err
		}
		if _, _, err := tx.Set(entryKey(3), strings.Replace(v, `"session":"s1"`, `"session":"s2"`, 1), nil); err != nil {
			return err
		}
		_, err = tx.Delete(entryKey(2))
		return err
	})
	l = f.openReadOnly()
	if got := seqs(mustQuery(t, l, Filter{Session: "s1"})); !reflect.DeepEqual(got, []uint64{1}) {
		t.Fatalf("Query(session s1) on a tampered file = %v, want [1]", got)
	}
	if got := seqs(mustQuery(t, l, Filter{Tool: "github"})); !reflect.DeepEqual(got, []uint64{1, 3}) {
		t.Fatalf("Query(tool github) on a tampered file = %v, want [1 3]", got)
	}
}
