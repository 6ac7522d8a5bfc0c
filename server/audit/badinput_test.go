package audit

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Bad files get a clear refusal, never a silent empty log.
func TestOpenRefusesFilesThatAreNotLogs(t *testing.T) {
	f := newFixture(t)
	l := f.open()
	for range 200 {
		mustWrite(t, l, denied("s", "github"))
	}
	l.Close()
	good, err := os.ReadFile(f.path)
	if err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		data []byte
		want string
	}{
		"not SQLite":     {[]byte(strings.Repeat("this is not a database. ", 200)), "not an SQLite database"},
		"empty header":   {make([]byte, 8192), "not an SQLite database"},
		"truncated":      {good[:len(good)/3], "damaged or truncated"},
		"another SQLite": {nil, "not an audit log"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			g := newFixture(t)
			g.cp = f.cp
			g.opts.Checkpoint = f.cp
			if tc.data == nil {
				// A valid SQLite file of some other program.
				g.tamper(func(db *sql.DB) error { _, err := db.Exec(`CREATE TABLE t (x)`); return err })
			} else if err := os.WriteFile(g.path, tc.data, 0o600); err != nil {
				t.Fatal(err)
			}
			before, _ := os.ReadFile(g.path)
			for _, ro := range []bool{false, true} {
				o := g.opts
				o.ReadOnly = ro
				l, err := Open(o)
				if err == nil {
					l.Close()
					t.Fatalf("Open(%s, ReadOnly %v) = nil error, want a refusal", name, ro)
				}
				if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), g.path) {
					t.Fatalf("Open(%s, ReadOnly %v) = %q, want it to say %q and name the file", name, ro, err, tc.want)
				}
			}
			if after, _ := os.ReadFile(g.path); string(before) != string(after) {
				t.Fatalf("a refused Open changed the file")
			}
		})
	}
}

// fillSQLite lets the log's SQLite file grow no more: SQLite reports a
// database at its page limit exactly as a full disk. roomForSQLite lifts
// the limit.
func fillSQLite(t *testing.T, st *sqliteStore) {
	t.Helper()
	var pages int
	if err := st.w.QueryRowContext(context.Background(), `PRAGMA page_count`).Scan(&pages); err != nil {
		t.Fatal(err)
	}
	maxPages(t, st, strconv.Itoa(pages))
}

func roomForSQLite(t *testing.T, st *sqliteStore) { t.Helper(); maxPages(t, st, "1073741823") }

func maxPages(t *testing.T, st *sqliteStore, n string) {
	t.Helper()
	if _, err := st.w.ExecContext(context.Background(), `PRAGMA max_page_count = `+n); err != nil {
		t.Fatal(err)
	}
}

// waitHealthy waits up to 10 s for l.Err() to be nil again, after what
// happened.
func waitHealthy(t *testing.T, l *Log, after string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); l.Err() != nil; {
		if time.Now().After(deadline) {
			t.Fatalf("Err() 10 s after %s = %v, want nil", after, l.Err())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// reopenVerifies closes l, opens the log again and checks that it
// verifies through seq; it returns the reopened Log.
func reopenVerifies(t *testing.T, f *fixture, l *Log, seq uint64) *Log {
	t.Helper()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = f.open()
	if rep := mustVerify(t, l); !rep.OK || rep.Head < seq {
		t.Fatalf("Verify after a reopen = %+v, want ok through %d", rep, seq)
	}
	return l
}

// vaultFull is the error of a vault with no room to rewrite its file.
func vaultFull() error {
	return fmt.Errorf("vault: write vault.db: %w", &os.PathError{Op: "write", Path: "vault.db.tmp", Err: syscall.ENOSPC})
}

// A full disk: once SQLite refuses the journal's entries, every Write and
// Begin fails (Begin returns no Pending, so the upstream is never called)
// until SQLite takes them; nothing reported written is lost, and the log
// works again, with no hole, once there is room.
func TestFullDiskFailsTheBatchAndLosesNothing(t *testing.T) {
	f := newFixture(t)
	l := f.open()
	defer l.Close()
	mustWrite(t, l, denied("s", "github"))
	mustQuery(t, l, Filter{}) // in SQLite
	st := l.st.(*sqliteStore)
	fillSQLite(t, st)
	big := denied("s", "github")
	big.Reason = strings.Repeat("r", MaxField)
	big.Path = strings.Repeat("p", MaxField)
	bigIntent := allowed("s", "github")
	bigIntent.Path = strings.Repeat("p", MaxField)
	var written, begun, failedWrites, failedBegins int
	for deadline := time.Now().Add(10 * time.Second); failedWrites == 0 || failedBegins == 0; {
		if time.Now().After(deadline) {
			t.Fatalf("%d writes and %d begins failed in 10 s of a full disk; want both to fail", failedWrites, failedBegins)
		}
		if _, err := l.Write(context.Background(), big); err == nil {
			written++
		} else if strings.Contains(err.Error(), "full") {
			failedWrites++
		} else {
			t.Fatalf("Write on a full disk = %q, want it to say the disk is full", err)
		}
		if _, err := l.Begin(context.Background(), bigIntent); err == nil {
			begun++
		} else if strings.Contains(err.Error(), "full") {
			failedBegins++
		} else {
			t.Fatalf("Begin on a full disk = %q, want it to say the disk is full", err)
		}
		time.Sleep(time.Millisecond)
	}
	roomForSQLite(t, st)
	// The indexer retries: writes succeed again once SQLite has taken
	// what the journal held.
	var seq uint64
	for deadline := time.Now().Add(10 * time.Second); ; {
		var err error
		if seq, err = l.Write(context.Background(), denied("s", "github")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Write after the disk had room again = %v, want it to succeed", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Exactly what was reported written is in the log.
	if got, want := len(mustQuery(t, l, Filter{})), 2+written+begun; got != want {
		t.Fatalf("log holds %d records, want %d (the first and last, %d writes and %d begins that succeeded)", got, want, written, begun)
	}
	if rep := mustVerify(t, l); !rep.OK || rep.Head != seq {
		t.Fatalf("Verify after the disk had room again = %+v, want ok with no hole", rep)
	}
}

// A full disk that takes the entries but not the checkpoint's copy (the
// last free page went to the entries) is transient like any other: the
// copy is owed, the vault is not written ahead of it again, and the log
// works, checkpoints and reopens once there is room. Before, the failed
// copy ended the log for good (a flaky TestFullDiskFailsTheBatchAndLosesNothing).
func TestFullDiskOwesTheCheckpointCopy(t *testing.T) {
	f := newFixture(t)
	l := f.open()
	defer func() { l.Close() }()
	mustWrite(t, l, denied("s", "github"))
	mustQuery(t, l, Filter{}) // in SQLite
	st := l.st.(*sqliteStore)
	fillSQLite(t, st)
	big := denied("s", "github")
	big.Reason = strings.Repeat("r", MaxField)
	for deadline := time.Now().Add(10 * time.Second); ; {
		if _, err := l.Write(context.Background(), big); err != nil {
			if !strings.Contains(err.Error(), "full") {
				t.Fatalf("Write on a full disk = %q, want it to say the disk is full", err)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no write failed in 10 s of a full disk")
		}
		time.Sleep(time.Millisecond)
	}
	vaultN := func() uint64 {
		t.Helper()
		cp, none, err := l.vaultCheckpoint()
		if err != nil || none {
			t.Fatalf("vault checkpoint: %v (none %v)", err, none)
		}
		return cp.N
	}
	// The log's own checkpointer may meet the full disk first; either
	// way the vault ends one checkpoint ahead of the log's copy.
	l.cpMu.Lock()
	cp, _, err := l.vaultCheckpoint()
	if err != nil {
		l.cpMu.Unlock()
		t.Fatal(err)
	}
	err = l.writeCheckpoint(checkpoint{Seq: cp.Seq, MAC: cp.MAC})
	owed := l.cpOwed != nil
	l.cpMu.Unlock()
	if !errors.Is(err, errFull) || !owed {
		t.Fatalf("checkpoint on a full disk = %v (copy owed %v), want errFull and the copy owed", err, owed)
	}
	n := vaultN()
	if copied, ok, err := l.checkpointCopy(); err != nil || !ok || copied.N != n-1 {
		t.Fatalf("on a full disk the log's copy is #%d (ok %v, %v), want #%d, one behind the vault's", copied.N, ok, err, n-1)
	}
	l.cpMu.Lock()
	err = l.writeCheckpoint(checkpoint{Seq: cp.Seq, MAC: cp.MAC})
	l.cpMu.Unlock()
	if !errors.Is(err, errFull) || vaultN() != n {
		t.Fatalf("checkpoint with its copy owed = %v, vault #%d; want errFull and the vault left at #%d", err, vaultN(), n)
	}
	roomForSQLite(t, st)
	var seq uint64
	for deadline := time.Now().Add(10 * time.Second); ; {
		if seq, err = l.Write(context.Background(), denied("s", "github")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Write after the disk had room again = %v, want it to succeed", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The log's checkpointer, stalled by the full disk, writes its
	// checkpoint once there is room; writes go through again.
	waitHealthy(t, l, "the disk had room again")
	if err := l.Close(); err != nil {
		t.Fatalf("Close after the disk had room again = %v", err)
	}
	l = f.open()
	copied, ok, err := l.checkpointCopy()
	if err != nil || !ok || copied.N != vaultN() {
		t.Fatalf("after a reopen the log's copy is #%d (ok %v, %v), want the vault's #%d", copied.N, ok, err, vaultN())
	}
	if rep := mustVerify(t, l); !rep.OK || rep.Head < seq {
		t.Fatalf("Verify after the disk had room again = %+v, want ok through %d", rep, seq)
	}
}

// The vault file is rewritten whole at each checkpoint, so on a full disk
// it fails where SQLite, reusing its WAL, goes on. The log then refuses
// writes (Err says why, for /healthz) until a checkpoint is written, and
// works again, with nothing lost, once there is room: it does not wait for
// a restart.
func TestFullDiskForTheVaultStallsTheLogUntilThereIsRoom(t *testing.T) {
	f := newFixture(t)
	l := f.open()
	defer func() { l.Close() }()
	mustWrite(t, l, denied("s", "github"))
	f.cp.refuse(vaultFull())
	written := 1
	for deadline := time.Now().Add(10 * time.Second); l.Err() == nil; {
		if time.Now().After(deadline) {
			t.Fatalf("the vault refused checkpoints for 10 s and Err() = nil, want the log stalled")
		}
		if _, err := l.Write(context.Background(), denied("s", "github")); err == nil {
			written++
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := l.Err(); !strings.Contains(err.Error(), "the disk is full") || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Err() with the vault out of room = %v, want it to say the disk is full", err)
	}
	if _, err := l.Begin(context.Background(), allowed("s", "github")); err == nil || !strings.Contains(err.Error(), "full") {
		t.Fatalf("Begin while the log is stalled = %v, want a refusal saying the disk is full", err)
	}
	n := len(mustQuery(t, l, Filter{}))
	f.cp.refuse(nil)
	waitHealthy(t, l, "the vault had room again")
	seq := mustWrite(t, l, denied("s", "github"))
	if got := len(mustQuery(t, l, Filter{})); got != n+1 || n != written {
		t.Fatalf("log holds %d records, then %d; want the %d written while the vault refused, then one more", n, got, written)
	}
	l = reopenVerifies(t, f, l, seq)
}

// A log stalled by a vault with no room, whose retries find SQLite
// refusing the entries written just before the stall (one disk, full for
// both): the stall admits no write, so no later head comes, and the
// checkpointer must keep retrying on its own. Once both have room the
// stall lifts and nothing is lost.
func TestStalledLogKeepsRetryingWhileSQLiteRefusesEntries(t *testing.T) {
	f := newFixture(t)
	l := f.open()
	defer func() { l.Close() }()
	mustWrite(t, l, denied("s", "github"))
	mustQuery(t, l, Filter{}) // in SQLite
	st := l.st.(*sqliteStore)
	// Hold the next checkpoint after its settle, at the vault's put.
	hold, held := make(chan struct{}), make(chan struct{})
	f.cp.mu.Lock()
	f.cp.hold, f.cp.held = hold, held
	f.cp.mu.Unlock()
	mustWrite(t, l, denied("s", "github"))
	select {
	case <-held:
	case <-time.After(10 * time.Second):
		t.Fatal("no checkpoint reached the vault in 10 s")
	}
	fillSQLite(t, st)
	big := denied("s", "github")
	big.Reason = strings.Repeat("r", MaxField)
	written := 2
	for deadline := time.Now().Add(10 * time.Second); ; {
		if time.Now().After(deadline) {
			t.Fatalf("no write failed in 10 s of a full SQLite")
		}
		if _, err := l.Write(context.Background(), big); err != nil {
			if !strings.Contains(err.Error(), "full") {
				t.Fatalf("Write with SQLite full = %q, want it to say the disk is full", err)
			}
			break
		}
		written++
		time.Sleep(time.Millisecond)
	}
	f.cp.refuse(vaultFull())
	f.cp.mu.Lock()
	f.cp.hold = nil
	f.cp.mu.Unlock()
	close(hold) // the held checkpoint meets the vault's ENOSPC: the log stalls
	for deadline := time.Now().Add(10 * time.Second); !errors.Is(l.Err(), syscall.ENOSPC); {
		if time.Now().After(deadline) {
			t.Fatalf("Err() = %v 10 s after the vault refused a checkpoint, want the log stalled on ENOSPC", l.Err())
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Several retries meet SQLite still full.
	time.Sleep(5 * checkpointInterval)
	roomForSQLite(t, st)
	f.cp.refuse(nil)
	waitHealthy(t, l, "SQLite and the vault had room again") // else the checkpointer stopped retrying
	seq := mustWrite(t, l, denied("s", "github"))
	if got := len(mustQuery(t, l, Filter{})); got != written+1 {
		t.Fatalf("log holds %d records, want the %d written before the stall and one after", got, written+1)
	}
	l = reopenVerifies(t, f, l, seq)
}

// A log whose first checkpoint's copy never reached the file (its disk
// was full) and that is opened again on a full disk: the start copies
// that checkpoint before it writes the second to the vault, so a failed
// start never leaves the vault at #2 with no copy in the log, which the
// next start would take for a removed copy (ErrTampered).
func TestFullDiskAtStartCopiesTheFirstCheckpointFirst(t *testing.T) {
	dir := smallFS(t, 1<<20)
	f := newFixture(t)
	f.path = filepath.Join(dir, "audit.sqlite")
	f.opts.Path = f.path
	l := f.open()
	first := append([]byte(nil), f.cp.records[CheckpointName]...) // #1, written at the start
	mustWrite(t, l, denied("s", "github"))
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	// As if the start's copy had failed: the vault at #1, no copy.
	f.cp.records[CheckpointName] = first
	f.tamper(func(db *sql.DB) error { _, err := db.Exec(`DELETE FROM meta WHERE name = 'checkpoint'`); return err })
	filler := filepath.Join(dir, "filler")
	fill, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	var size int64
	for {
		n, err := fill.Write(make([]byte, 4096))
		size += int64(n)
		if err != nil {
			break
		}
	}
	fill.Close()
	// Free a little more each time until a start gets as far as the
	// checkpoint: it then fails on the copy it owes.
	var reached bool
	for free := int64(4 << 10); free <= 256<<10 && !reached; free += 4 << 10 {
		if err := os.Truncate(filler, size-free); err != nil {
			t.Fatal(err)
		}
		l, err := Open(f.opts)
		if err == nil {
			l.Close()
			t.Fatalf("Open with %d bytes free = nil error before any start failed on the checkpoint's copy", free)
		}
		t.Logf("free %d: %v", free, err)
		reached = strings.Contains(err.Error(), "checkpoint copy")
	}
	if !reached {
		t.Fatalf("no start on a nearly full disk reached the checkpoint")
	}
	if cp, err := newMACKey(testKey).decodeCheckpoint(f.cp.records[CheckpointName]); err != nil || cp.N != 1 {
		t.Fatalf("after a start on a full disk the vault holds checkpoint #%d (%v), want #1: not written ahead of its copy", cp.N, err)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	l, err = Open(f.opts)
	if err != nil {
		t.Fatalf("Open with room on the disk again = %v, want the log", err)
	}
	defer l.Close()
	if rep := mustVerify(t, l); !rep.OK {
		t.Fatalf("Verify = %+v, want ok", rep)
	}
}

// ENOSPC from the file system itself, on a tiny tmpfs (needs root): calls
// fail closed once it is full, and everything reported written is in the
// log when it is next opened with room on the disk (the journal keeps
// what SQLite could not take).
func TestFullFileSystemFailsTheBatch(t *testing.T) {
	dir := smallFS(t, 256<<10)
	f := newFixture(t)
	f.path = filepath.Join(dir, "audit.sqlite")
	f.opts.Path = f.path
	l := f.open()
	defer func() { l.Close() }()
	big := denied("s", "github")
	big.Reason = strings.Repeat("r", MaxField)
	var ok, begun int
	var failed bool
	for range 400 {
		if _, err := l.Write(context.Background(), big); err != nil {
			failed = true
			break
		}
		ok++
	}
	if !failed {
		t.Fatalf("%d writes of 4 KiB fit in a 256 KiB file system; the test checks nothing", ok)
	}
	// A Begin whose intent still fits in the journal is durable there;
	// once neither the journal nor SQLite can take more, every Begin fails.
	for deadline := time.Now().Add(10 * time.Second); ; begun++ {
		if _, err := l.Begin(context.Background(), allowed("s", "github")); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Begin on a full file system succeeded %d times in 10 s, want it to fail", begun+1)
		}
		time.Sleep(time.Millisecond)
	}
	growFS(t, dir, 4<<20)
	l.Close()
	l = f.open()
	recs := mustQuery(t, l, Filter{})
	if len(recs) != ok+begun {
		t.Fatalf("log holds %d records, want the %d written and %d begun before the disk filled", len(recs), ok, begun)
	}
	if rep := mustVerify(t, l); !rep.OK {
		t.Fatalf("Verify after the file system had room again = %+v, want ok", rep)
	}
	mustWrite(t, l, denied("s", "github"))
}

func TestReadOnlyDataDirIsRefused(t *testing.T) {
	dir := readOnlyDir(t)
	f := newFixture(t)
	f.opts.Path = filepath.Join(dir, "audit.sqlite")
	l, err := Open(f.opts)
	if err == nil {
		l.Close()
		t.Fatalf("Open in a read-only dir = nil error, want one")
	}
	if !strings.Contains(err.Error(), "audit.sqlite") {
		t.Fatalf("Open in a read-only dir = %q, want it to name the file", err)
	}
}

// A WAL left by a process that died is recovered: every committed entry
// is there, and the intent it left open reads interrupted.
func TestWALLeftByACrashIsRecovered(t *testing.T) {
	f := newFixture(t)
	l := f.open()
	for range 5 {
		mustCall(t, l, allowed("s", "github"), 200)
	}
	if _, err := l.Begin(context.Background(), allowed("s", "github")); err != nil {
		t.Fatal(err)
	}
	// Copy the files as a kill -9 leaves them: committed frames in the
	// WAL, not yet checkpointed into the database file, and the journal.
	crash := newFixture(t)
	crash.cp = f.cp
	crash.opts.Checkpoint = f.cp
	for _, suffix := range []string{"", "-wal", journalSuffix} {
		copyFile(t, f.path+suffix, crash.path+suffix)
	}
	l.Close()
	if fi, err := os.Stat(crash.path + "-wal"); err != nil || fi.Size() == 0 {
		t.Fatalf("no WAL was copied (%v); the test checks nothing", err)
	}
	r := crash.open()
	defer r.Close()
	recs := mustQuery(t, r, Filter{})
	if len(recs) != 6 || recs[5].Decision != Interrupted {
		t.Fatalf("records after recovery = %+v, want 5 allowed calls and the open one interrupted", recs)
	}
	if rep := mustVerify(t, r); !rep.OK || rep.Head != 12 {
		t.Fatalf("Verify after recovery = %+v, want ok at head 12", rep)
	}
}

// One writer: a second writable Open of the same file (another process
// past a broken data-dir lock, or this one) is refused.
func TestSecondWriterIsRefused(t *testing.T) {
	f := newFixture(t)
	l := f.open()
	defer l.Close()
	if l2, err := Open(f.opts); !errors.Is(err, ErrInUse) {
		if l2 != nil {
			l2.Close()
		}
		t.Fatalf("second writable Open = %v, want ErrInUse", err)
	}
	ro := f.openReadOnly()
	mustWrite(t, l, denied("s", "github"))
	if got := mustQuery(t, ro, Filter{}); len(got) != 1 {
		t.Fatalf("a reader beside the writer sees %d records, want 1", len(got))
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}

// The WAL and shared-memory files hold entries too: they are as private as
// the log.
func TestLogFilesArePrivate(t *testing.T) {
	f := newFixture(t)
	l := f.open()
	defer l.Close()
	mustWrite(t, l, denied("s", "github"))
	for _, p := range []string{f.path, f.path + "-wal", f.path + "-shm", f.path + ".lock"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if perm := fi.Mode().Perm(); perm != 0o600 {
			t.Errorf("%s mode = %v, want 0600", filepath.Base(p), perm)
		}
	}
}
