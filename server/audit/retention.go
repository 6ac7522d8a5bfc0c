package audit

import (
	"encoding/json"
	"fmt"
	"time"
)

// pruneBatch is how many entries one prune transaction deletes: small
// enough that the writer is held up for a few milliseconds at most.
const pruneBatch = 256

// pruneHook, if set (by tests), runs between two prune transactions.
var pruneHook func()

// Prune deletes the oldest calls: the longest prefix of the chain whose
// calls began before before, stopping early at any call still without an
// outcome. It deletes in small transactions, each moving a MAC'd anchor to
// the last entry it deleted, so the chain verifies from the oldest kept
// entry at every step (a crash mid-prune included) and writers are never
// held up for long. It returns the number of calls deleted. Calls later in
// the chain with an earlier time (a clock set back) are kept.
func (l *Log) Prune(before time.Time) (int, error) {
	if l.readOnly {
		return 0, ErrReadOnly
	}
	if l.isClosed() {
		return 0, ErrClosed
	}
	l.maint.Lock()
	defer l.maint.Unlock()
	cut, calls, err := l.findCut(formatTime(before))
	if err != nil {
		return 0, fmt.Errorf("audit: prune: %w", err)
	}
	anchor, _, err := l.pruneAnchor()
	if err != nil {
		return 0, fmt.Errorf("audit: prune: %w", err)
	}
	for from := anchor.Seq; from+1 < cut; {
		through := min(from+pruneBatch, cut-1)
		mac, ok, err := l.macAt(through)
		if err != nil {
			return 0, fmt.Errorf("audit: prune: %w", err)
		}
		if !ok {
			return 0, fmt.Errorf("audit: prune: entry %d is missing", through)
		}
		a := l.keyed.encodeLink(anchorDomain, link{Seq: through, MAC: mac})
		if _, err := l.st.deletePrefix(through, map[string]string{metaAnchor: string(a)}); err != nil {
			return 0, fmt.Errorf("audit: prune: %w", err)
		}
		from = through
		if pruneHook != nil && from+1 < cut {
			pruneHook()
		}
	}
	if err := l.st.sync(); err != nil {
		return calls, fmt.Errorf("audit: prune: %w", err)
	}
	return calls, nil
}

// pruned is the part of an entry findCut reads.
type pruned struct {
	Seq  uint64 `json:"seq"`
	Type string `json:"type"`
	Of   uint64 `json:"of"`
	Time string `json:"time"`
}

// findCut reads the log from its oldest entry, a page at a time, to the
// first entry at or after limit (a formatted time), and returns the seq
// the prune stops before (every entry before it goes) and the number of
// calls before it. An intent whose outcome is not before the cut moves the
// cut to that intent.
func (l *Log) findCut(limit string) (cut uint64, calls int, err error) {
	anchor, _, err := l.pruneAnchor()
	if err != nil {
		return 0, 0, err
	}
	open := map[uint64]bool{}
	after := anchor.Seq
	cut = after + 1
scan:
	for {
		page, err := l.st.entries(after, verifyPage)
		if err != nil {
			return 0, 0, err
		}
		for _, r := range page {
			var e pruned
			if err := json.Unmarshal([]byte(r.Value), &e); err != nil {
				return 0, 0, fmt.Errorf("entry %d: %w", r.Seq, err)
			}
			if e.Time >= limit {
				break scan
			}
			switch e.Type {
			case typeIntent:
				open[r.Seq] = true
			case typeOutcome:
				delete(open, e.Of)
			}
			cut = r.Seq + 1
		}
		if len(page) < verifyPage {
			break
		}
		after = page[len(page)-1].Seq
	}
	for s := range open {
		cut = min(cut, s)
	}
	// Count the calls that go: every first entry before the cut.
	for after := anchor.Seq; after+1 < cut; {
		page, err := l.st.entries(after, min(verifyPage, int(cut-1-after)))
		if err != nil {
			return 0, 0, err
		}
		if len(page) == 0 {
			break
		}
		for _, r := range page {
			if r.Seq >= cut {
				break
			}
			var e pruned
			if json.Unmarshal([]byte(r.Value), &e) == nil && e.Type != typeOutcome {
				calls++
			}
		}
		after = page[len(page)-1].Seq
	}
	return cut, calls, nil
}
