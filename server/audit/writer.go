package audit

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// maxBatch bounds the entries of one group commit.
const maxBatch = 4096

// op is one entry on its way through the group committer.
type op struct {
	e       *entry
	middle  []byte // e encoded, without seq and prev (encodeMiddle)
	durable bool   // wake only after fsync (intents)
	done    chan result
}

// result is what the writer reports for an op.
type result struct {
	seq       uint64
	err       error
	committed bool // the entry is in the file even though err is set
}

// Pending is an intent awaiting its outcome.
type Pending struct {
	l      *Log
	seq    uint64
	intent *entry
	done   atomic.Bool
}

// Seq returns the seq of the intent: the call's seq.
func (p *Pending) Seq() uint64 { return p.seq }

// Begin writes the intent entry of an allowed call and returns once it is
// fsynced. rec.Decision must be Allow; a zero rec.Time is the Log's clock.
// The context is checked only before the entry is queued: once queued, the
// entry is written and Begin waits for it, so an intent is never left
// behind without its caller knowing.
func (l *Log) Begin(ctx context.Context, rec Record) (*Pending, error) {
	if rec.Decision != Allow {
		return nil, fmt.Errorf("audit: begin: decision %q, want %q", rec.Decision, Allow)
	}
	e := l.entryFrom(typeIntent, &rec)
	res := l.submit(ctx, e, true)
	if res.err != nil {
		if res.committed {
			// The intent is in the file but not known durable: close it
			// so the call reads as failed, not in flight. Best effort:
			// the caller already fails the call.
			l.submit(context.Background(), outcomeOf(e, res.seq, &Record{
				Decision: Error, Code: "audit_failed", Reason: "the audit log could not make this intent durable; the call was not made",
			}), false)
		}
		return nil, res.err
	}
	return &Pending{l: l, seq: res.seq, intent: e}, nil
}

// Finish writes the outcome of the intent: its decision (Allow, Deny or
// Error), code, reason, status, bytes, duration and whether scrubbing
// fired; the other fields of outcome are ignored. It returns once the
// entry is written to the OS; the fsync follows in the group commit. A
// second Finish returns an error.
func (p *Pending) Finish(ctx context.Context, outcome Record) error {
	if err := checkFinal(outcome.Decision); err != nil {
		return fmt.Errorf("audit: finish %d: %w", p.seq, err)
	}
	if !p.done.CompareAndSwap(false, true) {
		return fmt.Errorf("audit: finish %d: outcome already written", p.seq)
	}
	e := outcomeOf(p.intent, p.seq, &outcome)
	capFields(e)
	res := p.l.submit(ctx, e, false)
	if res.err != nil && !res.committed {
		p.done.Store(false) // nothing was written: the caller may retry
	}
	return res.err
}

// Write writes one complete record, a call that never went upstream, and
// returns its seq once it is written to the OS; the fsync follows in the
// group commit. rec.Decision must be Allow, Deny or Error; a zero rec.Time
// is the Log's clock.
func (l *Log) Write(ctx context.Context, rec Record) (uint64, error) {
	if err := checkFinal(rec.Decision); err != nil {
		return 0, fmt.Errorf("audit: write: %w", err)
	}
	res := l.submit(ctx, l.entryFrom(typeCall, &rec), false)
	return res.seq, res.err
}

func checkFinal(d Decision) error {
	switch d {
	case Allow, Deny, Error:
		return nil
	}
	return fmt.Errorf("decision %q, want %q, %q or %q", d, Allow, Deny, Error)
}

func (l *Log) entryFrom(t string, rec *Record) *entry {
	if rec.Time.IsZero() {
		rec.Time = l.now()
	}
	e := fromRecord(t, rec)
	e.Args, e.ArgsSHA256 = applyArgs(l.args, rec.Args)
	capFields(e)
	return e
}

// newOp encodes e for the writer, on the caller's goroutine, in the
// log's chain (its replica, in PostgreSQL).
func (l *Log) newOp(e *entry, durable bool) (*op, error) {
	e.Replica = l.replica
	middle, err := encodeMiddle(e)
	if err != nil {
		return nil, err
	}
	return &op{e: e, middle: middle, durable: durable, done: make(chan result, 1)}, nil
}

// submit queues e and waits for the writer's result.
func (l *Log) submit(ctx context.Context, e *entry, synced bool) result {
	if l.readOnly {
		return result{err: ErrReadOnly}
	}
	if err := ctx.Err(); err != nil {
		return result{err: fmt.Errorf("audit: %w", err)}
	}
	o, err := l.newOp(e, synced)
	if err != nil {
		return result{err: err}
	}
	l.closing.RLock()
	if l.closed {
		l.closing.RUnlock()
		return result{err: ErrClosed}
	}
	l.queue <- o
	l.closing.RUnlock()
	return <-o.done
}

// writer is the group committer: it commits whatever is queued as one
// transaction and hands the batch to the syncer, so the next batch is
// written while the previous one is being fsynced.
func (l *Log) writer() {
	syncs := make(chan synced, 64)
	syncerDone := make(chan struct{})
	go l.syncer(syncs, syncerDone)
	defer func() {
		close(syncs)
		<-syncerDone
		close(l.done)
	}()
	batch := make([]*op, 0, 64)
	seal := newSealer(l.keyed)
	for o := range l.queue {
		batch = append(batch[:0], o)
		batch = l.gather(batch)
		if s, ok := l.commit(batch, seal); ok {
			syncs <- s
			batch = make([]*op, 0, 64) // the syncer owns the old one now
		}
	}
}

// synced is a written batch awaiting its fsync.
type synced struct {
	batch []*op
	head  checkpoint // Seq, MAC and Open of the head after the batch
}

// syncer fsyncs written batches: every batch waiting when an fsync starts
// is covered by it, so under load one fsync serves many batches. After the
// fsync it wakes the durable waiters and passes the head on to be
// checkpointed in the vault.
func (l *Log) syncer(in <-chan synced, done chan<- struct{}) {
	heads := make(chan checkpoint, 1)
	cpDone := make(chan struct{})
	go l.checkpointer(heads, cpDone)
	defer func() {
		close(heads)
		<-cpDone
		close(done)
	}()
	for s := range in {
		pending := l.gatherSyncs(in, []synced{s})
		err := l.st.sync()
		if err != nil {
			l.fail(err)
		}
		for _, p := range pending {
			// A stall (l.stalled) came after these were committed: it
			// does not undo their fsync.
			wake(p.batch, durable, l.broken(), true)
		}
		if err == nil && l.cp != nil {
			// Hand the newest durable head to the checkpointer, replacing
			// one it has not taken yet.
			head := pending[len(pending)-1].head
			select {
			case heads <- head:
			default:
				select {
				case <-heads:
				default:
				}
				heads <- head
			}
		}
	}
}

// lazySync is how long a batch that nobody waits on (outcomes, denials:
// already in the file, to be fsynced "within a few milliseconds") may wait
// for the next batch, so that one fsync covers both. An intent never waits.
const lazySync = 2 * time.Millisecond

// gatherSyncs adds to pending every batch already waiting and, while none
// of them has a caller waiting on its fsync, lingers up to lazySync for one
// that has.
func (l *Log) gatherSyncs(in <-chan synced, pending []synced) []synced {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		select {
		case more, ok := <-in:
			if !ok {
				return pending
			}
			pending = append(pending, more)
			continue
		default:
		}
		if waited(pending) {
			return pending
		}
		if timer == nil {
			timer = time.NewTimer(lazySync)
		}
		select {
		case more, ok := <-in:
			if !ok {
				return pending
			}
			pending = append(pending, more)
		case <-timer.C:
			return pending
		}
	}
}

// waited reports whether a caller waits on the fsync of any of the batches.
func waited(pending []synced) bool {
	for _, p := range pending {
		for _, o := range p.batch {
			if o.durable {
				return true
			}
		}
	}
	return false
}

// checkpointInterval is the least time between two checkpoints. Each
// rewrites the vault file (which keeps no history) with two fsyncs that
// share the disk with the intents', so they are spaced out; the last
// durable head is always checkpointed on Close. The checkpoint trails
// the durable head by up to this (plus the batch being fsynced): a cut of
// only the entries written that recently before a crash goes unnoticed;
// a deeper cut is ErrTampered at the next start and a truncation to
// Verify (TestCutTailWindow).
const checkpointInterval = 100 * time.Millisecond

// checkpointer writes the newest durable head to the vault. The entries are
// already durable in the log; the checkpoint only guards against a cut
// tail, so it does not hold callers up and may lag (it only ever names an
// entry the log holds). If it cannot be written the log fails closed from
// the next write on: for good, or, when the disk has no room for it
// (errFull), until a later try every checkpointInterval writes it.
func (l *Log) checkpointer(heads <-chan checkpoint, done chan<- struct{}) {
	defer close(done)
	var last time.Time
	var owed *checkpoint // a head the disk had no room for
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	for {
		var head checkpoint
		closing := false
		select {
		case h, ok := <-heads:
			if !ok {
				if owed == nil {
					return
				}
				head, closing = *owed, true
			} else {
				head = h
			}
		case <-retry.C:
			head = *owed
		}
		if wait := checkpointInterval - time.Since(last); wait > 0 && !closing {
			// Coalesce: keep the newest head that arrives while waiting,
			// and write at once when the log closes.
			timer := time.NewTimer(wait)
		linger:
			for {
				select {
				case h, ok := <-heads:
					if !ok {
						closing = true
						break linger
					}
					head = h
				case <-timer.C:
					break linger
				}
			}
			timer.Stop()
		}
		last = time.Now()
		if l.st.settle(head.Seq) != nil {
			// The store cannot take the entries yet (a full disk): the
			// writes fail closed meanwhile, and a later head is
			// checkpointed once it can. A stalled log writes no later
			// head: try this one again.
			if closing {
				return
			}
			if owed != nil {
				retry.Reset(checkpointInterval)
			}
			continue
		}
		l.cpMu.Lock()
		err := l.writeCheckpoint(head)
		l.cpMu.Unlock()
		switch {
		case errors.Is(err, errFull):
			l.stall(err)
			if closing {
				return
			}
			owed = &head
			retry.Reset(checkpointInterval)
		case err != nil:
			l.fail(err)
		default:
			owed = nil
			retry.Stop()
			l.stall(nil)
		}
		if closing {
			return
		}
	}
}

// writeCheckpoint writes head, as the next checkpoint, to the vault, then
// a copy to the log file and a line to the anchor file. l.cpMu is held.
//
// A copy the log file has no room for (errFull) is owed, not fatal: it is
// written before the next checkpoint goes to the vault, so the copy is
// never more than one checkpoint behind the vault's and is missing only
// before the second, as Open checks.
func (l *Log) writeCheckpoint(head checkpoint) error {
	if l.cpOwed != nil {
		if err := l.copyCheckpoint(l.cpOwed); err != nil {
			return err
		}
		l.cpOwed = nil
	}
	if l.cpN > 0 && head.Seq < l.cpSeq {
		return nil // a newer head is already checkpointed
	}
	head.N = l.cpN + 1
	head.Time = formatTime(time.Now()) // for people reading the anchor file: the wall clock
	data := l.keyed.encodeCheckpoint(head)
	if err := l.cp.PutRecord(l.cpName, data); err != nil {
		if errors.Is(err, syscall.ENOSPC) {
			// The vault file is rewritten whole: on a full disk it fails
			// where SQLite, reusing its WAL, goes on. Nothing was
			// written; the same checkpoint is tried again.
			return fmt.Errorf("audit: write checkpoint: %w: %w", errFull, err)
		}
		return fmt.Errorf("audit: write checkpoint: %w", err)
	}
	l.cpN, l.cpSeq = head.N, head.Seq
	if err := l.copyCheckpoint(data); err != nil {
		if errors.Is(err, errFull) {
			l.cpOwed = data
		}
		return err
	}
	return nil
}

// copyCheckpoint writes data, a checkpoint the vault holds, to the log
// file and a line to the anchor file.
func (l *Log) copyCheckpoint(data []byte) error {
	if err := l.st.setMeta(metaCheckpoint, string(data)); err != nil {
		return fmt.Errorf("audit: write checkpoint copy: %w", err)
	}
	if l.anchor != nil {
		if _, err := l.anchor.Write(append(data, '\n')); err != nil {
			return fmt.Errorf("audit: write anchor: %w", err)
		}
	}
	return nil
}

// fail makes the log refuse every write from now on.
func (l *Log) fail(err error) {
	l.mu.Lock()
	if l.failed == nil {
		l.failed = err
	}
	l.mu.Unlock()
}

// stall makes the log refuse writes while err is not nil: a checkpoint
// found no room (errFull). stall(nil) lets them through again.
func (l *Log) stall(err error) {
	l.mu.Lock()
	l.stalled = err
	l.mu.Unlock()
}

// broken is the error that made the log refuse writes for good, or nil.
func (l *Log) broken() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.failed
}

// failure is the error that makes the log refuse writes, or nil.
func (l *Log) failure() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.failed != nil {
		return l.failed
	}
	return l.stalled
}

// gather adds queued ops to batch, lingering up to MaxBatchDelay.
func (l *Log) gather(batch []*op) []*op {
	var deadline <-chan time.Time
	if l.delay > 0 {
		t := time.NewTimer(l.delay)
		defer t.Stop()
		deadline = t.C
	}
	for len(batch) < maxBatch {
		select {
		case o, ok := <-l.queue:
			if !ok {
				return batch
			}
			batch = append(batch, o)
			continue
		default:
		}
		if deadline == nil {
			return batch
		}
		select {
		case o, ok := <-l.queue:
			if !ok {
				return batch
			}
			batch = append(batch, o)
		case <-deadline:
			return batch
		}
	}
	return batch
}

// commit writes one batch: seal, one transaction, mirror, wake the
// writers. It reports whether the batch is in the file and awaits its fsync.
func (l *Log) commit(batch []*op, seal *sealer) (synced, bool) {
	if failed := l.failure(); failed != nil {
		wake(batch, all, failed, false)
		return synced{}, false
	}
	head := l.head
	rows := make([]row, len(batch))
	var intents, outcomes []uint64
	for i, o := range batch {
		o.e.Seq, o.e.Prev = head.Seq+1, head.MAC
		v, mac := seal.seal(o.e.Seq, o.e.Prev, o.middle)
		rows[i], head = row{Seq: o.e.Seq, Value: v, Durable: o.durable}, link{Seq: o.e.Seq, MAC: mac}
		switch o.e.Type {
		case typeIntent:
			intents = append(intents, o.e.Seq)
		case typeOutcome:
			outcomes = append(outcomes, o.e.Of)
		}
	}
	// Mark intents in flight before readers can see them.
	l.setInflight(intents, true)
	if err := l.st.appendBatch(rows, nil); err != nil {
		// The transaction rolled back: nothing of the batch is in the file.
		l.setInflight(intents, false)
		wake(batch, all, err, false)
		return synced{}, false
	}
	l.head = head
	l.setInflight(outcomes, false)
	if l.mirror != nil {
		var b strings.Builder
		for _, r := range rows {
			b.WriteString(r.Value)
			b.WriteByte('\n')
		}
		if _, err := l.mirror.WriteString(b.String()); err != nil {
			wake(batch, all, fmt.Errorf("audit: write mirror: %w", err), true)
			return synced{}, false
		}
	}
	wake(batch, written, nil, true)
	return synced{batch: batch, head: checkpoint{Seq: head.Seq, MAC: head.MAC, Open: l.oldestInflight()}}, true
}

// Selectors of the ops a wake reports to.
func all(*op) bool       { return true }
func durable(o *op) bool { return o.durable }
func written(o *op) bool { return !o.durable }

// wake reports a result to the ops of batch that which selects.
func wake(batch []*op, which func(*op) bool, err error, committed bool) {
	for _, o := range batch {
		if which(o) {
			o.done <- result{seq: o.e.Seq, err: err, committed: committed}
		}
	}
}

func (l *Log) setInflight(seqs []uint64, on bool) {
	if len(seqs) == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range seqs {
		if on {
			l.inflight[s] = struct{}{}
		} else {
			delete(l.inflight, s)
		}
	}
}

// oldestInflight is the seq of the oldest intent in flight, or 0.
func (l *Log) oldestInflight() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	var oldest uint64
	for s := range l.inflight {
		if oldest == 0 || s < oldest {
			oldest = s
		}
	}
	return oldest
}

// isInflight reports whether the intent seq awaits its outcome in a live
// process: this one, or for a read-only Log the file's writer.
func (l *Log) isInflight(seq uint64) bool {
	if l.readOnly {
		return l.alive != nil && l.alive()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := l.inflight[seq]
	return ok
}
