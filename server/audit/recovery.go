package audit

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
)

// anchorDomain is the MAC domain of the prune anchor.
const anchorDomain = "anchor"

// loadHead sets l.head from the last entry, or from the prune anchor when
// no entry is left. It reports whether the log is empty (no entry, no
// anchor). A head that does not verify is an error wrapping ErrTampered.
func (l *Log) loadHead() (bool, error) {
	last, ok, err := l.st.last()
	if err != nil {
		return false, err
	}
	if ok {
		e, valid, err := l.keyed.unseal(last.Value)
		if err != nil || !valid || e.Seq != last.Seq {
			return false, fmt.Errorf("%w: the last entry (%d) does not verify", ErrTampered, last.Seq)
		}
		l.head = link{Seq: e.Seq, MAC: e.MAC}
		return false, nil
	}
	a, ok, err := l.pruneAnchor()
	if err != nil || !ok {
		return !ok, err
	}
	l.head = a
	return false, nil
}

// pruneAnchor returns the prune anchor; ok is false when nothing was
// pruned. One that does not verify is an error wrapping ErrTampered.
func (l *Log) pruneAnchor() (link, bool, error) {
	v, ok, err := l.st.meta(metaAnchor)
	if err != nil || !ok {
		return link{}, false, err
	}
	a, err := l.keyed.decodeLink(anchorDomain, []byte(v))
	if err != nil {
		return a, true, fmt.Errorf("%w: %v", ErrTampered, err)
	}
	return a, true, nil
}

// vaultCheckpoint reads the checkpoint through the Checkpointer. none is
// true when no checkpoint was ever stored; any other failure to read one
// (it was removed, or does not verify) is an error wrapping ErrTampered.
func (l *Log) vaultCheckpoint() (cp checkpoint, none bool, err error) {
	data, err := l.cp.GetRecord(l.cpName)
	if errors.Is(err, fs.ErrNotExist) {
		return checkpoint{}, true, nil
	}
	if err != nil {
		return checkpoint{}, false, fmt.Errorf("%w: the vault's checkpoint cannot be read: %v", ErrTampered, err)
	}
	cp, err = l.keyed.decodeCheckpoint(data)
	if err != nil {
		return cp, false, fmt.Errorf("%w: %v", ErrTampered, err)
	}
	return cp, false, nil
}

// checkpointCopy reads the log file's copy of the last checkpoint it
// wrote; ok is false when there is none.
func (l *Log) checkpointCopy() (checkpoint, bool, error) {
	v, ok, err := l.st.meta(metaCheckpoint)
	if err != nil || !ok {
		return checkpoint{}, false, err
	}
	c, err := l.keyed.decodeCheckpoint([]byte(v))
	if err != nil {
		return c, true, fmt.Errorf("%w: the log's copy of its checkpoint does not verify", ErrTampered)
	}
	return c, true, nil
}

// checkStart checks a log about to be written: its schema, its head
// against the checkpoint, and the entries written after the checkpoint
// (the only ones not already known good). It never reads the whole log.
// It sets where recover looks for dangling intents.
func (l *Log) checkStart() error {
	empty, err := l.loadHead()
	if err != nil {
		return err
	}
	problems, err := l.st.schemaProblems()
	if err != nil {
		return err
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: the file's schema was changed: %s", ErrTampered, strings.Join(problems, "; "))
	}
	anchor, _, err := l.pruneAnchor()
	if err != nil {
		return err
	}
	l.danglingAfter = anchor.Seq
	if l.cp == nil {
		return nil
	}
	cp, none, err := l.vaultCheckpoint()
	if err != nil {
		return err
	}
	if none {
		if !empty {
			return fmt.Errorf("%w: no checkpoint for a log that has entries", ErrTampered)
		}
		return nil
	}
	// The copy in the log is written after the vault's checkpoint: it is
	// never newer, and missing only before the second checkpoint.
	if cp2, ok, err := l.checkpointCopy(); err != nil {
		return err
	} else if ok && cp2.N > cp.N {
		return fmt.Errorf("%w: the vault's checkpoint (#%d) is older than the one this log recorded (#%d): the vault was rolled back", ErrTampered, cp.N, cp2.N)
	} else if !ok && cp.N > 1 {
		return fmt.Errorf("%w: the log's copy of its checkpoint was removed", ErrTampered)
	} else if !ok && cp.N == 1 {
		// The first checkpoint's copy never reached the file (its disk
		// was full): copy it before the second is written.
		l.cpOwed = l.keyed.encodeCheckpoint(cp)
	}
	if cp.Seq > l.head.Seq {
		return fmt.Errorf("%w: the log ends at seq %d, its checkpoint is at seq %d: the tail was cut", ErrTampered, l.head.Seq, cp.Seq)
	}
	mac, ok, err := l.macAt(cp.Seq)
	if err != nil {
		return err
	}
	if ok && mac != cp.MAC {
		return fmt.Errorf("%w: entry %d is not the one checkpointed", ErrTampered, cp.Seq)
	}
	// The entries after the checkpoint were written by a process that
	// stopped before checkpointing them: verify them now.
	from := max(cp.Seq, anchor.Seq)
	prev := cp.MAC
	if from == anchor.Seq && anchor.Seq > 0 {
		prev = anchor.MAC
	} else if !ok {
		prev = "" // checkpoint at seq 0: the chain starts at 1
	}
	rep, err := l.walk(context.Background(), from, prev, VerifyOptions{})
	if err != nil {
		return err
	}
	if !rep.OK {
		p := rep.Problems[0]
		return fmt.Errorf("%w: entry %d after the checkpoint: %s: %s", ErrTampered, p.Seq, p.Kind, p.Detail)
	}
	l.cpN, l.cpSeq = cp.N, cp.Seq
	switch {
	case cp.N == 0:
		// Written before checkpoints named the oldest open intent: look
		// through the whole log, once.
	case cp.Open > 0:
		l.danglingAfter = max(anchor.Seq, cp.Open-1)
	default:
		l.danglingAfter = max(anchor.Seq, cp.Seq)
	}
	return nil
}

// macAt returns the stored MAC of entry seq (or of the anchor, if it sits
// at seq). ok is false when seq was pruned or is 0.
func (l *Log) macAt(seq uint64) (mac string, ok bool, err error) {
	if seq == 0 {
		return "", false, nil
	}
	r, found, err := l.st.get(seq)
	if err != nil {
		return "", false, err
	}
	if found {
		e, err := decode(r.Value)
		if err != nil {
			return "", false, fmt.Errorf("%w: entry %d: %v", ErrTampered, seq, err)
		}
		return e.MAC, true, nil
	}
	a, found, err := l.pruneAnchor()
	if err != nil || !found || a.Seq != seq {
		return "", false, err
	}
	return a.MAC, true, nil
}

// recover writes an Interrupted outcome for every intent that has no
// outcome in the chain (a previous process died mid-call), waits until
// they are fsynced, then writes a checkpoint. Only intents after
// l.danglingAfter are looked at: every earlier one had its outcome when
// the checkpoint was written.
func (l *Log) recover() error {
	after := l.danglingAfter
	for {
		page, err := l.st.openIntents(after, 512)
		if err != nil {
			return fmt.Errorf("audit: find dangling intents: %w", err)
		}
		if len(page) == 0 {
			break
		}
		ops := make([]*op, 0, len(page))
		for _, r := range page {
			after = r.Seq
			e, valid, err := l.keyed.unseal(r.Value)
			if err != nil || !valid || e.Seq != r.Seq || e.Type != typeIntent {
				continue // not a genuine intent: Verify's to report
			}
			o, err := l.newOp(outcomeOf(e, e.Seq, &Record{
				Decision: Interrupted,
				Reason:   "keyhole stopped before the outcome of this call was recorded",
			}), true)
			if err != nil {
				return fmt.Errorf("audit: record interrupted call %d: %w", e.Seq, err)
			}
			ops = append(ops, o)
			l.queue <- o
		}
		for _, o := range ops {
			if r := <-o.done; r.err != nil {
				return fmt.Errorf("audit: record interrupted call %d: %w", o.e.Of, r.err)
			}
		}
	}
	if l.cp == nil {
		return nil
	}
	// A checkpoint at every start, with its counter and no open intent.
	head, err := l.durableHead()
	if err != nil {
		return err
	}
	l.cpMu.Lock()
	defer l.cpMu.Unlock()
	return l.writeCheckpoint(head)
}

// durableHead reads the head from the store (the writer goroutine owns
// l.head): the last entry, or the anchor, or seq 0.
func (l *Log) durableHead() (checkpoint, error) {
	last, ok, err := l.st.last()
	if err != nil {
		return checkpoint{}, err
	}
	if ok {
		e, err := decode(last.Value)
		if err != nil {
			return checkpoint{}, fmt.Errorf("audit: entry %d: %w", last.Seq, err)
		}
		return checkpoint{Seq: last.Seq, MAC: e.MAC}, nil
	}
	a, _, err := l.pruneAnchor()
	return checkpoint{Seq: a.Seq, MAC: a.MAC}, err
}
