package audit

import (
	"fmt"
	"strings"
	"time"

	"github.com/tidwall/buntdb"
)

// Prune deletes the oldest calls: the longest prefix of the chain whose
// calls began before before, stopping early at any call still without an
// outcome. It stores a MAC'd anchor at the cut so the chain still verifies
// from the oldest kept entry, and returns the number of calls deleted.
// Calls later in the chain with an earlier time (a clock set back) are
// kept. The file's space is reused only by buntdb's own rewrite, which
// this package never runs; pruned entries stay in the file as deletions.
func (l *Log) Prune(before time.Time) (int, error) {
	if l.readOnly {
		return 0, ErrReadOnly
	}
	if l.isClosed() {
		return 0, ErrClosed
	}
	l.maint.Lock()
	defer l.maint.Unlock()
	var removed int
	err := l.db.Update(func(tx *buntdb.Tx) error {
		var err error
		removed, err = l.prune(tx, formatTime(before))
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("audit: prune: %w", err)
	}
	if err := l.sync.Sync(); err != nil {
		return removed, fmt.Errorf("audit: prune: fsync: %w", err)
	}
	return removed, nil
}

// prunable is an entry of the prefix Prune may delete.
type prunable struct {
	ix  indexed // its index keys go with it
	mac string
}

// prune deletes the prefix of entries older than limit (a formatted time),
// up to the first call still without an outcome, with their index keys,
// and moves the anchor.
func (l *Log) prune(tx *buntdb.Tx, limit string) (int, error) {
	var prefix []prunable
	open := map[uint64]bool{}
	var derr error
	cut := uint64(0)
	err := tx.AscendRange("", entryPrefix, entryEnd, func(k, val string) bool {
		e, err := decode(val)
		if err != nil {
			derr = fmt.Errorf("entry %s: %w", strings.TrimPrefix(k, entryPrefix), err)
			return false
		}
		if e.Time >= limit {
			cut = e.Seq
			return false
		}
		switch e.Type {
		case typeIntent:
			open[e.Seq] = true
		case typeOutcome:
			delete(open, e.Of)
		}
		prefix = append(prefix, prunable{ix: indexedOf(e), mac: e.MAC})
		return true
	})
	if err == nil {
		err = derr
	}
	if err != nil {
		return 0, err
	}
	if cut == 0 && len(prefix) > 0 {
		cut = prefix[len(prefix)-1].ix.Seq + 1
	}
	for s := range open {
		cut = min(cut, s)
	}
	var anchor link
	removed := 0
	for i := range prefix {
		p := &prefix[i]
		if p.ix.Seq >= cut {
			break
		}
		if _, err := tx.Delete(entryKey(p.ix.Seq)); err != nil {
			return 0, err
		}
		if err := deleteIndex(tx, &p.ix); err != nil {
			return 0, err
		}
		anchor = link{Seq: p.ix.Seq, MAC: p.mac}
		if p.ix.Type != typeOutcome {
			removed++
		}
	}
	if anchor.Seq == 0 {
		return 0, nil
	}
	_, _, err = tx.Set(anchorKey, string(l.keyed.encodeLink(anchorDomain, anchor)), nil)
	return removed, err
}
