package audit

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/gofrs/flock"
)

// The journal is a plain file beside the SQLite log (path + "-pending")
// that a call's entries reach first. An appended batch is one write(2);
// an intent is durable once the journal is fdatasynced, and an outcome is
// recorded once it is written there, as it was once written to SQLite's
// WAL. The indexer moves the entries into SQLite a few milliseconds later
// in transactions of many entries, off the caller's path: a call costs
// two small appends and one fdatasync instead of two SQLite transactions,
// each a B-tree insert into the table and its indexes and a WAL frame for
// every page touched (the profile in BENCHMARKS.md, issue 19).
//
// The file is reserved ahead of its end in chunks (preallocate, on
// Linux), so an append changes neither its size nor its extents and an
// fdatasync writes the entries alone; what follows the last line reads as
// zeros.
//
// Every line is an entry exactly as SQLite stores it (its canonical JSON
// and MAC; a sealed entry never holds a raw newline). A writable open
// moves into SQLite every line that continues SQLite's chain (seq one
// more than its last) before anything reads the log, so a crash loses
// nothing the journal held; the rest (entries SQLite has, a line a crash
// cut short) is passed over. Readers in this process wait for the indexer
// to catch up before they read (flush); readers in another process wait
// at open while the writer is alive (awaitJournal). The chain-head
// checkpoint names only entries in SQLite with its WAL fsynced (settle),
// so a log read while its broker is down, before the journal is moved,
// is a shorter chain, never one cut below its checkpoint.
const (
	journalSuffix = "-pending"
	// journalLinger is how long the indexer lets entries gather before it
	// moves them: long enough that a transaction holds many, short enough
	// that another process sees a call within a few milliseconds.
	journalLinger = 5 * time.Millisecond
	// journalMax is the size past which the next append first waits for
	// every entry to be in SQLite, fsyncs the WAL and empties the file.
	journalMax = 4 << 20
	// journalRetry is how long the indexer waits after SQLite refused a
	// batch (a full disk) before it tries again.
	journalRetry = 100 * time.Millisecond
	// journalChunk is how far ahead of its end the journal is reserved.
	journalChunk = 1 << 20
)

// journal is the pending file of a writable SQLite store and the queue of
// its entries not yet in SQLite.
type journal struct {
	f    *os.File
	path string

	mu       sync.Mutex
	changed  *sync.Cond // broadcast when entries are queued or reach SQLite, and on stop
	queue    []row      // appended, not yet in SQLite, by seq
	appended uint64     // seq of the last entry appended
	indexed  uint64     // seq of the last entry in SQLite
	size     int64      // bytes of entries in the file: the next append goes here
	alloc    int64      // bytes of the file, those past size reserved (zeros)
	noAlloc  bool       // the file system cannot reserve: the file grows with each write
	err      error      // SQLite refused the entries queued: appends fail until it takes them
	broken   error      // the file could not be set right: appends fail for good
	stop     bool

	hurry chan struct{} // cuts the indexer's linger short
	done  chan struct{} // closed when the indexer has returned
}

// journalPath is the journal of the log at path.
func journalPath(path string) string { return path + journalSuffix }

// replayJournal moves into SQLite the entries of the journal beside the
// file that continue its chain, makes them durable and empties the
// journal. The writer's lock is held.
func (s *sqliteStore) replayJournal() error {
	name := journalPath(s.path)
	data, err := os.ReadFile(name)
	if errors.Is(err, os.ErrNotExist) || (err == nil && len(data) == 0) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("audit: read %s: %w", name, err)
	}
	var last int64
	if err := s.w.QueryRowContext(context.Background(), `SELECT coalesce(max(seq), 0) FROM entries`).Scan(&last); err != nil {
		return s.openError(err)
	}
	rows := continuing(data, uint64(last))
	if len(rows) > 0 {
		if err := s.insert(rows); err != nil {
			return err
		}
		if err := s.syncWAL(); err != nil {
			return err
		}
	}
	if err := os.Truncate(name, 0); err != nil {
		return fmt.Errorf("audit: empty %s: %w", name, err)
	}
	return nil
}

// continuing returns the complete lines of data that continue a chain
// whose last seq is last: seq last+1, last+2, … up to the first line that
// does not (a line a crash cut short ends the journal).
func continuing(data []byte, last uint64) []row {
	var out []row
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			break // cut short
		}
		line := data[:i]
		data = data[i+1:]
		seq, ok := lineSeq(line)
		if !ok {
			break
		}
		if seq <= last {
			continue
		}
		if seq != last+1 {
			break
		}
		out = append(out, row{Seq: seq, Value: string(line)})
		last = seq
	}
	return out
}

// lineSeq reads the seq a sealed entry starts with.
func lineSeq(line []byte) (uint64, bool) {
	const prefix = `{"seq":`
	if !bytes.HasPrefix(line, []byte(prefix)) {
		return 0, false
	}
	rest := line[len(prefix):]
	n := bytes.IndexByte(rest, ',')
	if n <= 0 {
		return 0, false
	}
	seq, err := strconv.ParseUint(string(rest[:n]), 10, 64)
	return seq, err == nil
}

// startJournal opens the journal (empty after replayJournal) and starts
// its indexer: from now on appendBatch of entries alone goes through it.
func (s *sqliteStore) startJournal() error {
	name := journalPath(s.path)
	_, statErr := os.Stat(name)
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("audit: open %s: %w", name, err)
	}
	if errors.Is(statErr, os.ErrNotExist) {
		// The file must outlive a crash before an fdatasync of it counts.
		// (Windows cannot fsync a directory; NTFS logs the creation.)
		if err := syncDir(filepath.Dir(name)); err != nil && runtime.GOOS != "windows" {
			f.Close()
			return err
		}
	}
	var last int64
	if err := s.w.QueryRowContext(context.Background(), `SELECT coalesce(max(seq), 0) FROM entries`).Scan(&last); err != nil {
		f.Close()
		return s.openError(err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("audit: stat %s: %w", name, err)
	}
	// replayJournal emptied the file; it may still be reserved ahead.
	j := &journal{f: f, path: name, appended: uint64(last), indexed: uint64(last), alloc: fi.Size(),
		hurry: make(chan struct{}, 1), done: make(chan struct{})}
	j.changed = sync.NewCond(&j.mu)
	s.j = j
	go s.indexer(j)
	return nil
}

// journalAppend writes rows to the journal in one write and queues them
// for the indexer. Only the Log's writer goroutine calls it.
func (s *sqliteStore) journalAppend(rows []row) error {
	j := s.j
	j.mu.Lock()
	err := cmp.Or(j.broken, j.err)
	full := j.size > journalMax
	j.mu.Unlock()
	if err != nil {
		return err
	}
	if full {
		if err := s.emptyJournal(); err != nil {
			return err
		}
	}
	n := 0
	for _, r := range rows {
		n += len(r.Value) + 1
	}
	buf := make([]byte, 0, n)
	for _, r := range rows {
		buf = append(buf, r.Value...)
		buf = append(buf, '\n')
	}
	j.mu.Lock()
	size := j.size
	j.mu.Unlock()
	j.reserve(size + int64(len(buf)))
	if _, err := j.f.WriteAt(buf, size); err != nil {
		// Nothing of the batch may stay: take back what was written.
		if terr := j.f.Truncate(size); terr != nil {
			j.fail(fmt.Errorf("audit: write %s: %w (and could not take it back: %v)", j.path, err, terr))
		}
		j.alloc = size
		return s.writeError(fmt.Errorf("%s: %w", j.path, err))
	}
	j.mu.Lock()
	j.size += int64(len(buf))
	j.queue = append(j.queue, rows...)
	j.appended = rows[len(rows)-1].Seq
	j.changed.Broadcast()
	j.mu.Unlock()
	return nil
}

// reserve makes the file's first end bytes reserved, a chunk beyond what
// they need. It is an optimization: where the file system cannot reserve,
// or not now (a full disk), the write that follows grows the file and
// fails if that is what fails. Only the writer goroutine calls it.
func (j *journal) reserve(end int64) {
	if end <= j.alloc || j.noAlloc {
		return
	}
	n := end - j.alloc + journalChunk
	ok, err := preallocate(j.f, j.alloc, n)
	switch {
	case ok:
		j.alloc += n
	case err == nil:
		j.noAlloc = true
	}
}

// emptyJournal waits for every entry to be in SQLite, makes the WAL
// durable and empties the journal.
func (s *sqliteStore) emptyJournal() error {
	if err := s.flush(); err != nil {
		return err
	}
	if err := s.syncWAL(); err != nil {
		return err
	}
	j := s.j
	if err := j.f.Truncate(0); err != nil {
		err = fmt.Errorf("audit: empty %s: %w", j.path, err)
		j.fail(err)
		return err
	}
	j.mu.Lock()
	j.size = 0
	j.mu.Unlock()
	j.alloc = 0
	return nil
}

func (j *journal) fail(err error) {
	j.mu.Lock()
	if j.broken == nil {
		j.broken = err
	}
	j.changed.Broadcast()
	j.mu.Unlock()
}

// indexer moves journalled entries into SQLite until the store closes.
func (s *sqliteStore) indexer(j *journal) {
	defer func() {
		j.mu.Lock()
		close(j.done)
		j.changed.Broadcast()
		j.mu.Unlock()
	}()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		j.mu.Lock()
		for len(j.queue) == 0 && !j.stop {
			j.changed.Wait()
		}
		if len(j.queue) == 0 {
			j.mu.Unlock()
			return
		}
		stopping := j.stop
		j.mu.Unlock()
		if !stopping {
			timer.Reset(journalLinger)
			select {
			case <-timer.C:
			case <-j.hurry:
				timer.Stop() // (Go 1.23 timers: no stale tick to drain)
			}
		}
		j.mu.Lock()
		batch := j.queue
		if len(batch) > maxBatch {
			batch = batch[:maxBatch]
		}
		j.mu.Unlock()
		err := s.insert(batch)
		j.mu.Lock()
		if err != nil {
			// Appends fail until SQLite takes the entries (a full disk
			// freed); they stay in the journal meanwhile, and at a stop
			// for the next start.
			j.err = err
			j.changed.Broadcast()
			stopping := j.stop
			j.mu.Unlock()
			if stopping {
				return
			}
			timer.Reset(journalRetry)
			<-timer.C
			continue
		}
		j.err = nil
		j.indexed = batch[len(batch)-1].Seq
		j.queue = j.queue[len(batch):]
		if len(j.queue) == 0 {
			j.queue = nil
		}
		j.changed.Broadcast()
		j.mu.Unlock()
	}
}

// flush waits until every entry appended so far is in SQLite.
func (s *sqliteStore) flush() error {
	j := s.j
	if j == nil {
		return nil
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	target := j.appended
	for j.indexed < target && j.err == nil && !j.stopped() {
		select {
		case j.hurry <- struct{}{}:
		default:
		}
		j.changed.Wait()
	}
	if j.err != nil {
		return j.err
	}
	return nil
}

// stopped reports whether the indexer has returned. j.mu is held.
func (j *journal) stopped() bool {
	select {
	case <-j.done:
		return true
	default:
		return false
	}
}

// settle makes every entry through seq readable in SQLite and durable in
// its WAL: what a checkpoint may name.
func (s *sqliteStore) settle(uint64) error {
	if s.j == nil {
		return nil
	}
	if err := s.flush(); err != nil {
		return err
	}
	return s.syncWAL()
}

// closeJournal stops the indexer once it has moved everything, fsyncs
// the WAL and removes the journal. An entry SQLite refused stays in the
// journal for the next start.
func (s *sqliteStore) closeJournal() error {
	j := s.j
	if j == nil {
		return nil
	}
	j.mu.Lock()
	j.stop = true
	j.changed.Broadcast()
	j.mu.Unlock()
	select {
	case j.hurry <- struct{}{}:
	default:
	}
	<-j.done
	defer j.f.Close()
	if j.err != nil || len(j.queue) > 0 {
		return j.err
	}
	if err := s.syncWAL(); err != nil {
		return err
	}
	if err := os.Remove(j.path); err != nil {
		return fmt.Errorf("audit: remove %s: %w", j.path, err)
	}
	return nil
}

// moveDeadJournal, before a read-only open, moves into SQLite the
// journal a writer left when it died (a kill, a crash), as SQLite's own
// readers roll back a journal a dead writer left: so a reader sees every
// call, not all but the last, until the broker next starts. It takes the
// writer's lock to do so; a running writer, or a file this reader may not
// write, leaves the journal where it is.
func moveDeadJournal(path string) {
	if journalTail(journalPath(path)) == 0 || writerLocked(path) {
		return
	}
	w := &sqliteStore{path: path, noLockWait: true}
	w.openWriter() // replays the journal; any error leaves it for the writer
	w.close()
}

// lockWriter takes the writer's lock of the log at path. A reader moving
// a dead writer's journal holds it for milliseconds, so a writer starting
// meanwhile waits for it (up to lockWait) rather than failing; a second
// writer is refused with ErrInUse once that has passed.
func lockWriter(path string, wait time.Duration) (*flock.Flock, error) {
	deadline := time.Now().Add(wait)
	for {
		f, err := lockFile(path)
		if !errors.Is(err, ErrInUse) || time.Now().After(deadline) {
			return f, err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// lockWait is how long a writer waits for the lock (see lockWriter).
const lockWait = 2 * time.Second

// awaitJournal, in a read-only store, waits while the log's writer is
// running (up to a few seconds) for the entries its journal holds to
// reach SQLite, so a reader sees every call a caller has seen return. A
// journal whose last entry a read already found in SQLite costs reading
// its end (its size and times say nothing: the file is reserved ahead, and
// its times may not change between two appends).
func (s *sqliteStore) awaitJournal() {
	want := journalTail(journalPath(s.path))
	s.seenMu.Lock()
	seen := s.seen
	s.seenMu.Unlock()
	if want <= seen {
		return
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		var last int64
		err := s.r.QueryRow(`SELECT coalesce(max(seq), 0) FROM entries`).Scan(&last)
		if err != nil || !writerLocked(s.path) || time.Now().After(deadline) {
			return
		}
		if uint64(last) >= want {
			s.seenMu.Lock()
			s.seen = max(s.seen, want)
			s.seenMu.Unlock()
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// journalTail is the seq of the last complete entry of the journal at
// name, 0 if it has none. It reads the end of the file back to the last
// entry, past the zeros of its reserved part, more of it only when the
// last entry is longer.
func journalTail(name string) uint64 {
	f, err := os.Open(name)
	if err != nil {
		return 0
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0
	}
	end := entriesEnd(f, fi.Size())
	for n := int64(64 << 10); ; n *= 4 {
		off := max(end-n, 0)
		data := make([]byte, end-off)
		m, _ := f.ReadAt(data, off)
		data = data[:m]
		if seq := lastSeq(data); seq != 0 || off == 0 || n >= journalMax {
			return seq
		}
	}
}

// entriesEnd is where the entries of a journal of size bytes end: before
// the zeros of its reserved part. An entry holds no zero byte and nothing
// but zeros follows the last one, so the end is found by bisection, a
// byte read at a time: a reader beside a running broker pays about twenty
// reads, not a scan of the megabyte reserved. (After a crash a page of
// zeros may lie inside the entries; the end found is then an earlier
// one, and the next writable start replays the whole journal anyway.)
func entriesEnd(f *os.File, size int64) int64 {
	var b [1]byte
	lo, hi := int64(0), size // the end is in [lo, hi]
	for lo < hi {
		mid := lo + (hi-lo)/2
		if _, err := f.ReadAt(b[:], mid); err != nil {
			return hi
		}
		if b[0] == 0 {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return lo
}

// lastSeq is the seq of the last complete line of a journal.
func lastSeq(data []byte) uint64 {
	end := bytes.LastIndexByte(data, '\n')
	if end < 0 {
		return 0
	}
	start := bytes.LastIndexByte(data[:end], '\n') + 1
	seq, _ := lineSeq(data[start:end])
	return seq
}
