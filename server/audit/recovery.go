package audit

import (
	"fmt"
	"strings"

	"github.com/tidwall/buntdb"
)

// MAC domains of the links kept outside the chain.
const (
	checkpointDomain = "checkpoint"
	anchorDomain     = "anchor"
)

// loadHead sets l.head from the last entry, or from the prune anchor when
// no entry is left. It reports whether the log is empty (no entry, no
// anchor). A head that does not verify is an error wrapping ErrTampered.
func (l *Log) loadHead() (bool, error) {
	var last string
	var anchor []byte
	err := l.db.View(func(tx *buntdb.Tx) error {
		if err := tx.DescendLessOrEqual("", entryEnd, func(k, v string) bool {
			if strings.HasPrefix(k, entryPrefix) {
				last = v
			}
			return false
		}); err != nil {
			return err
		}
		a, err := tx.Get(anchorKey)
		if err == nil {
			anchor = []byte(a)
		}
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("audit: read head: %w", err)
	}
	switch {
	case last != "":
		e, ok, err := l.keyed.unseal(last)
		if err != nil || !ok {
			return false, fmt.Errorf("%w: the last entry does not verify", ErrTampered)
		}
		l.head = link{Seq: e.Seq, MAC: e.MAC}
	case anchor != nil:
		a, err := l.keyed.decodeLink(anchorDomain, anchor)
		if err != nil {
			return false, fmt.Errorf("%w: %v", ErrTampered, err)
		}
		l.head = a
	default:
		return true, nil
	}
	return false, nil
}

// checkCheckpoint compares the head with the vault's checkpoint. An empty
// log without a checkpoint gets one at seq 0, so that later a log without
// a checkpoint means the checkpoint was removed.
func (l *Log) checkCheckpoint(empty bool) error {
	if l.cp == nil {
		return nil
	}
	data, err := l.cp.GetRecord(CheckpointName)
	if err != nil {
		if !empty {
			return fmt.Errorf("%w: no checkpoint for a log that has entries: %v", ErrTampered, err)
		}
		if err := l.cp.PutRecord(CheckpointName, l.keyed.encodeLink(checkpointDomain, link{})); err != nil {
			return fmt.Errorf("audit: write checkpoint: %w", err)
		}
		return nil
	}
	cp, err := l.keyed.decodeLink(checkpointDomain, data)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrTampered, err)
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
	return nil
}

// macAt returns the stored MAC of entry seq (or of the anchor, if it sits
// at seq). ok is false when seq was pruned or is 0.
func (l *Log) macAt(seq uint64) (mac string, ok bool, err error) {
	if seq == 0 {
		return "", false, nil
	}
	err = l.db.View(func(tx *buntdb.Tx) error {
		if v, err := tx.Get(entryKey(seq)); err == nil {
			e, err := decode(v)
			if err != nil {
				return fmt.Errorf("%w: entry %d: %v", ErrTampered, seq, err)
			}
			mac, ok = e.MAC, true
			return nil
		}
		if v, err := tx.Get(anchorKey); err == nil {
			a, err := l.keyed.decodeLink(anchorDomain, []byte(v))
			if err != nil {
				return fmt.Errorf("%w: %v", ErrTampered, err)
			}
			if a.Seq == seq {
				mac, ok = a.MAC, true
			}
		}
		return nil
	})
	return mac, ok, err
}

// interruptDangling writes an Interrupted outcome for every intent left
// without one by a previous process, and waits until they are fsynced.
func (l *Log) interruptDangling() error {
	var intents []*entry
	var orphans []string
	err := l.db.View(func(tx *buntdb.Tx) error {
		return tx.AscendKeys(pendingGlob, func(k, _ string) bool {
			seq, ok := seqOf(k)
			v, err := tx.Get(entryKey(seq))
			if !ok || err != nil {
				orphans = append(orphans, k)
				return true
			}
			if e, err := decode(v); err == nil && e.Type == typeIntent {
				intents = append(intents, e)
			} else {
				orphans = append(orphans, k)
			}
			return true
		})
	})
	if err != nil {
		return fmt.Errorf("audit: find dangling intents: %w", err)
	}
	if len(orphans) > 0 {
		// Markers whose intent is gone (tampering) mean nothing; the
		// chain, not the marker, is the evidence.
		if err := l.db.Update(func(tx *buntdb.Tx) error {
			for _, k := range orphans {
				tx.Delete(k)
			}
			return nil
		}); err != nil {
			return fmt.Errorf("audit: clear markers: %w", err)
		}
	}
	ops := make([]*op, len(intents))
	for i, e := range intents {
		ops[i] = &op{e: outcomeOf(e, e.Seq, &Record{
			Decision: Interrupted,
			Reason:   "keyhole stopped before the outcome of this call was recorded",
		}), durable: true, done: make(chan result, 1)}
		l.queue <- ops[i]
	}
	for _, o := range ops {
		if r := <-o.done; r.err != nil {
			return fmt.Errorf("audit: record interrupted call %d: %w", o.e.Of, r.err)
		}
	}
	return nil
}
