package audit

import (
	"fmt"

	"github.com/tidwall/buntdb"
)

// Problem kinds reported by Verify.
const (
	// ProblemEdited: the entry's content changed after it was written
	// (its MAC no longer verifies, but the chain still names that MAC).
	ProblemEdited = "edited"
	// ProblemMissing: entries are absent from the middle of the chain.
	ProblemMissing = "missing"
	// ProblemReordered: a genuine entry sits at another entry's position.
	ProblemReordered = "reordered"
	// ProblemTruncated: the log ends before its checkpoint, or no longer
	// holds the checkpointed head.
	ProblemTruncated = "truncated"
	// ProblemForged: an entry, checkpoint or anchor that was not written
	// with the audit key, or a genuine entry spliced from another chain.
	ProblemForged = "forged"
)

// Problem is one thing wrong with the chain, at the seq where it is seen.
type Problem struct {
	Seq    uint64 `json:"seq"`
	Kind   string `json:"kind"`
	Detail string `json:"detail"`
}

// Report is the result of Verify.
type Report struct {
	Entries  uint64    `json:"entries"`
	Head     uint64    `json:"head"`
	OK       bool      `json:"ok"`
	Problems []Problem `json:"problems,omitempty"`
}

// verifyChunk is how many entries Verify reads under one read lock, so
// writers are not held up for the length of a whole verification.
const verifyChunk = 4096

// maxProblems bounds a report of a badly damaged file.
const maxProblems = 1000

// Verify checks the whole chain from the oldest kept entry (or the prune
// anchor) to the head, and the head against the checkpoint. Problems are
// in order of seq; the first is the first bad seq. The error is for a
// failure to read the log, not for what is wrong with it.
func (l *Log) Verify() (Report, error) {
	if l.isClosed() {
		return Report{}, ErrClosed
	}
	l.maint.Lock()
	defer l.maint.Unlock()
	v := &verifier{keyed: l.keyed, expect: 1}
	if l.cp != nil {
		v.readCheckpoint(l.cp)
	}
	var anchor []byte
	if err := l.db.View(func(tx *buntdb.Tx) error {
		a, err := tx.Get(anchorKey)
		if err == nil {
			anchor = []byte(a)
		}
		return nil
	}); err != nil {
		return Report{}, fmt.Errorf("audit: verify: %w", err)
	}
	if anchor != nil {
		a, err := l.keyed.decodeLink(anchorDomain, anchor)
		if err != nil {
			v.report(a.Seq, ProblemForged, "the prune anchor does not verify with the audit key")
			v.prevBad = true
		}
		v.anchor, v.hasAnchor = a, true
		v.expect, v.prevMAC, v.last = a.Seq+1, a.MAC, a.Seq
	}
	from := entryPrefix
	for done := false; !done; {
		done = true
		err := l.db.View(func(tx *buntdb.Tx) error {
			n := 0
			return tx.AscendRange("", from, entryEnd, func(k, val string) bool {
				if n == verifyChunk {
					done = false
					return false
				}
				n++
				from = k + "\x00"
				v.check(tx, k, val)
				return true
			})
		})
		if err != nil {
			return Report{}, fmt.Errorf("audit: verify: %w", err)
		}
	}
	v.checkTail()
	return Report{Entries: v.entries, Head: v.last, OK: len(v.problems) == 0, Problems: v.problems}, nil
}

// verifier walks the chain in key order.
type verifier struct {
	keyed     macKey
	anchor    link
	hasAnchor bool
	expect    uint64 // seq the next entry should have
	prevMAC   string // stored MAC of the entry before
	prevBad   bool   // the entry before already has a problem: skip the link check
	last      uint64
	entries   uint64
	seen      map[uint64]string // stored MAC by seq, only for the checkpoint's seq
	cp        link
	cpSeq     uint64
	cpRead    bool
	cpErr     error
	cpForged  bool
	problems  []Problem
	bad       map[uint64]bool
}

func (v *verifier) report(seq uint64, kind, detail string) {
	if v.bad == nil {
		v.bad = make(map[uint64]bool)
	}
	v.bad[seq] = true
	if len(v.problems) < maxProblems {
		v.problems = append(v.problems, Problem{Seq: seq, Kind: kind, Detail: detail})
	}
}

func (v *verifier) check(tx *buntdb.Tx, key, val string) {
	v.entries++
	seq, ok := seqOf(key)
	if !ok {
		v.report(v.expect, ProblemForged, fmt.Sprintf("unexpected key %q among the entries", key))
		return
	}
	if seq < v.expect {
		v.report(seq, ProblemForged, fmt.Sprintf("entry %d is at or before the prune anchor (%d)", seq, v.anchor.Seq))
		return
	}
	if seq > v.expect {
		detail := fmt.Sprintf("entry %d is missing", v.expect)
		if seq-v.expect > 1 {
			detail = fmt.Sprintf("entries %d to %d are missing", v.expect, seq-1)
		}
		v.report(v.expect, ProblemMissing, detail)
		v.prevBad = true
	}
	v.expect, v.last = seq+1, seq
	e, valid, err := v.keyed.unseal(val)
	bad := true
	switch {
	case err != nil:
		v.report(seq, ProblemEdited, "the entry cannot be decoded")
		v.prevMAC = ""
	case !valid:
		v.report(seq, v.classifyBadMAC(tx, seq, e.MAC), "the entry's MAC does not verify with the audit key")
	case e.Seq != seq:
		v.report(seq, ProblemReordered, fmt.Sprintf("entry %d is stored at position %d", e.Seq, seq))
	case !v.prevBad && e.Prev != v.prevMAC:
		v.report(seq, ProblemForged, fmt.Sprintf("entry %d does not follow entry %d: it was spliced from another chain", seq, seq-1))
	default:
		bad = false
	}
	if e != nil {
		v.prevMAC = e.MAC
		if seq == v.cpSeq && v.seen != nil {
			v.seen[seq] = e.MAC
		}
	}
	v.prevBad = bad
}

// classifyBadMAC tells an edited entry (the chain still names its MAC: the
// next entry's prev, or the checkpoint) from a forged one.
func (v *verifier) classifyBadMAC(tx *buntdb.Tx, seq uint64, mac string) string {
	if next, err := tx.Get(entryKey(seq + 1)); err == nil {
		if n, err := decode(next); err == nil && n.Prev == mac {
			return ProblemEdited
		}
	}
	if v.seen != nil && v.cpSeq == seq {
		return ProblemEdited // the checkpoint's MAC is compared in checkTail
	}
	return ProblemForged
}

// readCheckpoint reads the checkpoint before the walk, so the walk can
// note the stored MAC at its seq. The head only grows and the checkpoint
// trails the fsynced head, so entries written during the walk never make
// the log look behind its checkpoint.
func (v *verifier) readCheckpoint(cp Checkpointer) {
	v.cpRead = true
	data, err := cp.GetRecord(CheckpointName)
	if err != nil {
		v.cpErr = err
		return
	}
	c, err := v.keyed.decodeLink(checkpointDomain, data)
	if err != nil {
		v.cpErr = err
		v.cpForged = true
	}
	v.cp, v.cpSeq = c, c.Seq
	v.seen = make(map[uint64]string, 1)
}

// checkTail compares the walked head with the checkpoint.
func (v *verifier) checkTail() {
	switch {
	case !v.cpRead:
	case v.cpForged:
		v.report(v.cp.Seq, ProblemForged, "the head checkpoint does not verify with the audit key")
	case v.cpErr != nil:
		if v.entries > 0 || v.hasAnchor {
			v.report(v.last, ProblemTruncated, "the vault holds no checkpoint for this log, so its tail cannot be checked")
		}
	case v.cp.Seq > v.last:
		v.report(v.last+1, ProblemTruncated, fmt.Sprintf("the log ends at entry %d but its checkpoint is at entry %d", v.last, v.cp.Seq))
	case v.cp.Seq == 0 || v.bad[v.cp.Seq] || (v.hasAnchor && v.cp.Seq < v.anchor.Seq):
	default:
		mac, ok := v.seen[v.cp.Seq]
		if v.hasAnchor && v.cp.Seq == v.anchor.Seq {
			mac, ok = v.anchor.MAC, true
		}
		if ok && mac != v.cp.MAC {
			v.report(v.cp.Seq, ProblemTruncated, fmt.Sprintf("entry %d is not the checkpointed one: the tail was cut and rewritten", v.cp.Seq))
		}
	}
}
