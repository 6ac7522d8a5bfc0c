package audit

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// killedWithJournal writes calls and copies the files as a kill -9 would
// leave them while the calls' entries are in the journal alone: the
// indexer is held off SQLite (its lock taken) for the whole time.
func killedWithJournal(t *testing.T, calls int) (*fixture, []uint64) {
	t.Helper()
	f := newFixture(t)
	l := f.open()
	defer l.Close()
	mustWrite(t, l, denied("s", "github"))
	mustQuery(t, l, Filter{}) // the first entry is in SQLite
	st := l.st.(*sqliteStore)
	st.wmu.Lock()
	var seqs []uint64
	for range calls {
		seqs = append(seqs, mustCall(t, l, allowed("s", "github"), 200))
	}
	// The dead process's checkpoint: as it was at the kill (the live
	// one goes on to checkpoint at its Close).
	dead := newFixture(t)
	f.cp.mu.Lock()
	for name, data := range f.cp.records {
		dead.cp.records[name] = data
	}
	f.cp.mu.Unlock()
	for _, suffix := range []string{"", "-wal", journalSuffix} {
		copyFile(t, f.path+suffix, dead.path+suffix)
	}
	st.wmu.Unlock()
	if fi, err := os.Stat(dead.path + journalSuffix); err != nil || fi.Size() == 0 {
		t.Fatalf("the journal copied is empty (%v); the test checks nothing", err)
	}
	return dead, seqs
}

// TestJournalIsMovedAtTheNextStart: entries that reached only the journal
// before a kill are in the log when the broker next starts, the chain
// whole.
func TestJournalIsMovedAtTheNextStart(t *testing.T) {
	dead, seqs := killedWithJournal(t, 5)
	l := dead.open()
	defer l.Close()
	recs := mustQuery(t, l, Filter{})
	if len(recs) != 6 {
		t.Fatalf("records after the start = %d, want the first and the 5 calls", len(recs))
	}
	for i, r := range recs[1:] {
		if r.Seq != seqs[i] || r.Decision != Allow || r.Status != 200 {
			t.Fatalf("record %d = %+v, want call %d allowed with its outcome", i+1, r, seqs[i])
		}
	}
	if rep := mustVerify(t, l); !rep.OK || rep.Head != 11 {
		t.Fatalf("Verify = %+v, want ok at head 11", rep)
	}
	if fi, err := os.Stat(dead.path + journalSuffix); err != nil || fi.Size() != 0 {
		t.Fatalf("journal after the start: %v, %v; want it emptied", fi, err)
	}
}

// TestReaderMovesADeadWritersJournal: a reader (keyhole audit tail after
// the broker was killed) sees every call, not all but the last ones.
func TestReaderMovesADeadWritersJournal(t *testing.T) {
	dead, _ := killedWithJournal(t, 3)
	r := dead.openReadOnly()
	defer r.Close()
	if recs := mustQuery(t, r, Filter{}); len(recs) != 4 {
		t.Fatalf("a reader after the kill sees %d records, want 4", len(recs))
	}
	if rep := mustVerify(t, r); !rep.OK || rep.Head != 7 {
		t.Fatalf("Verify by a reader after the kill = %+v, want ok at head 7", rep)
	}
}

// TestJournalLineCutShortIsPassedOver: a line a crash cut short ends the
// journal; the entries before it are moved, and the log takes writes on.
func TestJournalLineCutShortIsPassedOver(t *testing.T) {
	dead, _ := killedWithJournal(t, 2)
	data, err := os.ReadFile(dead.path + journalSuffix)
	if err != nil {
		t.Fatal(err)
	}
	// Cut the last entry (the second call's outcome) in its middle, as a
	// crash leaves it: the rest of the reserved file zeros.
	entries := bytes.TrimRight(data, "\x00")
	cut := append(bytes.Clone(entries[:len(entries)-40]), make([]byte, len(data)-len(entries)+40)...)
	if err := os.WriteFile(dead.path+journalSuffix, cut, 0o600); err != nil {
		t.Fatal(err)
	}
	l := dead.open()
	defer l.Close()
	recs := mustQuery(t, l, Filter{})
	if len(recs) != 3 || recs[2].Decision != Interrupted {
		t.Fatalf("records = %+v, want the first, a call, and the call whose outcome was cut read interrupted", recs)
	}
	seq := mustWrite(t, l, denied("s", "github"))
	if rep := mustVerify(t, l); !rep.OK || rep.Head != seq {
		t.Fatalf("Verify = %+v, want ok at head %d", rep, seq)
	}
}

// TestReaderBesideAWriterWaitsForItsJournal: a reader in another process
// (here another Log) sees an entry as soon as its Write has returned.
func TestReaderBesideAWriterWaitsForItsJournal(t *testing.T) {
	f := newFixture(t)
	l := f.open()
	defer l.Close()
	ro := f.openReadOnly()
	defer ro.Close()
	for i := range 20 {
		mustWrite(t, l, denied("s", "github"))
		if got := len(mustQuery(t, ro, Filter{})); got != i+1 {
			t.Fatalf("after write %d the reader sees %d records", i+1, got)
		}
	}
	if _, err := l.Begin(context.Background(), allowed("s", "github")); err != nil {
		t.Fatal(err)
	}
	if recs := mustQuery(t, ro, Filter{}); len(recs) != 21 || recs[20].Tool != "github" {
		t.Fatalf("the reader sees %d records, want the 20 writes and the call begun", len(recs))
	}
}

// TestCleanCloseLeavesNoJournal: at rest, the data dir holds what it held
// before the journal: the log, its WAL and lock.
func TestCleanCloseLeavesNoJournal(t *testing.T) {
	f := newFixture(t)
	l := f.open()
	mustCall(t, l, allowed("s", "github"), 200)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(f.path + journalSuffix); !os.IsNotExist(err) {
		t.Fatalf("journal after Close: %v, want none", err)
	}
}

// TestWriterWaitsForAReaderMovingAJournal: a broker starting while
// keyhole audit moves a dead broker's journal (holding the writer's lock
// for milliseconds) starts once it is done, instead of failing.
func TestWriterWaitsForAReaderMovingAJournal(t *testing.T) {
	f := newFixture(t)
	f.open().Close()
	held, err := lockFile(f.path)
	if err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(100*time.Millisecond, func() { held.Close() })
	l, err := Open(f.opts)
	if err != nil {
		t.Fatalf("Open while a reader held the lock for 100 ms = %v, want it to wait", err)
	}
	l.Close()
}

// TestJournalIsReservedAhead: the journal is reserved a chunk ahead of its
// entries (so an append's fdatasync writes no metadata), and a reader
// finds its last entry behind the zeros.
func TestJournalIsReservedAhead(t *testing.T) {
	f := newFixture(t)
	l := f.open()
	defer l.Close()
	var last uint64
	for range 3 {
		last = mustCall(t, l, allowed("s", "github"), 200) + 1 // the outcome
	}
	st := l.st.(*sqliteStore)
	st.j.mu.Lock()
	size, appended := st.j.size, st.j.appended
	st.j.mu.Unlock()
	if appended != last {
		t.Fatalf("journal's last entry = %d, want %d", appended, last)
	}
	fi, err := os.Stat(f.path + journalSuffix)
	if err != nil {
		t.Fatal(err)
	}
	if st.j.noAlloc {
		t.Logf("this file system cannot reserve: the journal grows (%d bytes)", fi.Size())
	} else if fi.Size() < size+journalChunk/2 {
		t.Fatalf("journal file is %d bytes for %d of entries, want it reserved ahead", fi.Size(), size)
	}
	if got := journalTail(f.path + journalSuffix); got != last {
		t.Fatalf("journalTail = %d, want %d (the last entry, behind %d bytes reserved)", got, last, fi.Size()-size)
	}
}

// entriesEnd finds the end of the entries behind any amount of reserved
// zeros, and the whole file when nothing is reserved.
func TestEntriesEndFindsTheLastEntry(t *testing.T) {
	line := `{"seq":1,"type":"call"}` + "\n"
	zeros := func(n int) string { return string(make([]byte, n)) }
	tests := map[string]struct {
		data string
		want int64
	}{
		"empty":                  {"", 0},
		"only zeros":             {zeros(journalChunk), 0},
		"entries, none reserved": {line + line, int64(2 * len(line))},
		"one byte, then zeros":   {"x" + zeros(4095), 1},
		"entries, a few zeros":   {line + zeros(3), int64(len(line))},
		"entries, a megabyte":    {line + line + line + zeros(journalChunk), int64(3 * len(line))},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			path := t.TempDir() + "/j"
			if err := os.WriteFile(path, []byte(tc.data), 0o600); err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if got := entriesEnd(f, int64(len(tc.data))); got != tc.want {
				t.Fatalf("entriesEnd = %d, want %d", got, tc.want)
			}
		})
	}
}

// TestWriterLockTellsARunningWriter: the writer's lock is exclusive, a
// reader can tell it is held without taking it from the writer, and a
// reader never creates the lock file.
func TestWriterLockTellsARunningWriter(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.sqlite")
	if writerLocked(path) {
		t.Fatal("writerLocked with no lock file = true, want false")
	}
	if _, err := os.Stat(path + ".lock"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("writerLocked created the lock file (stat: %v)", err)
	}
	held, err := lockFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !writerLocked(path) {
		t.Fatal("writerLocked while a writer holds the lock = false, want true")
	}
	if _, err := lockFile(path); !errors.Is(err, ErrInUse) {
		t.Fatalf("a second lockFile = %v, want ErrInUse", err)
	}
	if !writerLocked(path) {
		t.Fatal("writerLocked after a refused second writer = false, want the first still holding it")
	}
	if err := held.Close(); err != nil {
		t.Fatal(err)
	}
	if writerLocked(path) {
		t.Fatal("writerLocked after the writer let go = true, want false")
	}
	again, err := lockFile(path)
	if err != nil {
		t.Fatalf("lockFile after the writer let go = %v", err)
	}
	again.Close()
}
