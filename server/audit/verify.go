package audit

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io/fs"
	"os"
	"strconv"
	"strings"
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
	// holds the checkpointed head, or its checkpoint was removed.
	ProblemTruncated = "truncated"
	// ProblemForged: an entry, checkpoint or anchor that was not written
	// with the audit key, or a genuine entry spliced from another chain.
	ProblemForged = "forged"
	// ProblemRolledBack: the vault's checkpoint is older than a later one
	// recorded elsewhere (the log file's copy, or the anchor file): the
	// vault, or the whole data dir, was restored from an older copy.
	ProblemRolledBack = "rolled back"
	// ProblemSchema: the file's tables, indexes or views are not the ones
	// keyhole creates (an index dropped, a view or trigger added).
	ProblemSchema = "schema"
)

// Problem is one thing wrong with the chain, at the seq where it is seen.
type Problem struct {
	Seq    uint64 `json:"seq"`
	Kind   string `json:"kind"`
	Detail string `json:"detail"`
}

// Report is the result of Verify.
type Report struct {
	// Entries is how many entries were checked; From is the first seq
	// checked (0 when the walk began at the oldest kept entry).
	Entries uint64 `json:"entries"`
	From    uint64 `json:"from,omitempty"`
	Head    uint64 `json:"head"`
	// Checkpoint is the counter of the vault's checkpoint (0 if none).
	Checkpoint uint64 `json:"checkpoint,omitempty"`
	// Anchor is the counter of the newest line of the anchor file checked
	// (0 when no anchor file was given).
	Anchor   uint64    `json:"anchor,omitempty"`
	OK       bool      `json:"ok"`
	Problems []Problem `json:"problems,omitempty"`
}

// VerifyOptions configures VerifyWith.
type VerifyOptions struct {
	// From, if set, checks the chain from entry From on (its link to the
	// entry before it included) instead of from the oldest kept entry.
	From uint64
	// Anchor, if set, is an anchor file (Options.Anchor) to check the
	// log and the vault's checkpoint against: a vault or data dir restored
	// from an older copy is behind it.
	Anchor string
	// Progress, if set, is called after every page of entries with the
	// last seq checked and the head.
	Progress func(seq, head uint64)
}

// verifyPage is how many entries Verify reads at a time, each page in its
// own short read transaction, so memory stays flat and writers are never
// held up.
const verifyPage = 1024

// maxProblems bounds a report of a badly damaged file.
const maxProblems = 1000

// Verify checks the whole chain from the oldest kept entry (or the prune
// anchor) to the head, and the head against the checkpoint. Problems are
// in order of seq; the first is the first bad seq. The error is for a
// failure to read the log, not for what is wrong with it.
func (l *Log) Verify() (Report, error) {
	return l.VerifyWith(context.Background(), VerifyOptions{})
}

// VerifyWith is Verify with options: a first seq, an anchor file to check
// against, progress.
func (l *Log) VerifyWith(ctx context.Context, o VerifyOptions) (Report, error) {
	if l.isClosed() {
		return Report{}, ErrClosed
	}
	l.maint.Lock()
	defer l.maint.Unlock()
	// The checkpoint is read before the walk: the head only grows and the
	// checkpoint trails the fsynced head, so entries written during the
	// walk never make the log look behind its checkpoint.
	var c checkState
	if l.cp != nil {
		c.read(l)
	}
	pre := &verifier{keyed: l.keyed}
	problems, err := l.st.schemaProblems()
	if err != nil {
		return Report{}, fmt.Errorf("audit: verify: %w", err)
	}
	for _, p := range problems {
		pre.report(0, ProblemSchema, p)
	}
	anchor, hasAnchor, err := l.pruneAnchor()
	if err != nil && !errors.Is(err, ErrTampered) {
		return Report{}, fmt.Errorf("audit: verify: %w", err)
	}
	from, prev := anchor.Seq, anchor.MAC
	prevBad := err != nil
	if prevBad {
		pre.report(anchor.Seq, ProblemForged, "the prune anchor does not verify with the audit key")
	}
	if o.From > from+1 {
		from = o.From - 1
		mac, ok, err := l.macAt(from)
		if err != nil && !errors.Is(err, ErrTampered) {
			return Report{}, fmt.Errorf("audit: verify: %w", err)
		}
		prev, prevBad = mac, !ok
	}
	v := &verifier{keyed: l.keyed, expect: from + 1, prevMAC: prev, prevBad: prevBad, last: from,
		anchor: anchor, hasAnchor: hasAnchor, cpSeq: c.cp.Seq, problems: pre.problems}
	if err := l.walkWith(ctx, v, o.Progress); err != nil {
		return Report{}, err
	}
	c.checkTail(v)
	if o.Anchor != "" {
		if err := l.checkAnchorFile(v, &c, o.Anchor); err != nil {
			return Report{}, err
		}
	}
	rep := v.result()
	rep.Checkpoint = c.cp.N
	rep.Anchor = c.anchorN
	if o.From > 0 {
		rep.From = from + 1
	}
	return rep, nil
}

// walk verifies the entries after seq from, whose predecessor has MAC
// prev, to the head, without the checkpoint checks.
func (l *Log) walk(ctx context.Context, from uint64, prev string, o VerifyOptions) (Report, error) {
	v := &verifier{keyed: l.keyed, expect: from + 1, prevMAC: prev, last: from}
	if err := l.walkWith(ctx, v, o.Progress); err != nil {
		return Report{}, err
	}
	return v.result(), nil
}

func (l *Log) walkWith(ctx context.Context, v *verifier, progress func(seq, head uint64)) error {
	var head uint64
	if progress != nil {
		if r, ok, err := l.st.last(); err == nil && ok {
			head = r.Seq
		}
	}
	type fetched struct {
		rows []row
		err  error
	}
	fetch := func(after uint64) <-chan fetched {
		c := make(chan fetched, 1)
		go func() {
			rows, err := l.st.entries(after, verifyPage)
			c <- fetched{rows, err}
		}()
		return c
	}
	// The next page is read while this one is checked: reading and MACs
	// run on both cores.
	cur := <-fetch(v.last)
	for cur.err == nil && len(cur.rows) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		page := cur.rows
		var nextc <-chan fetched
		if len(page) == verifyPage {
			nextc = fetch(page[len(page)-1].Seq)
		}
		var next fetched
		for i := range page {
			var following *row
			if i+1 < len(page) {
				following = &page[i+1]
			} else if nextc != nil {
				// The last entry's classification needs the next page.
				next = <-nextc
				nextc = nil
				if len(next.rows) > 0 {
					following = &next.rows[0]
				}
			}
			v.check(page[i], following)
		}
		if nextc != nil {
			next = <-nextc
		}
		if progress != nil {
			progress(v.last, max(head, v.last))
		}
		cur = next
	}
	if cur.err != nil {
		return fmt.Errorf("audit: verify: %w", cur.err)
	}
	return nil
}

// verifier walks the chain in seq order.
type verifier struct {
	keyed     macKey
	mac       hash.Hash
	buf       []byte // the body a MAC is computed over, reused
	anchor    link
	hasAnchor bool
	expect    uint64 // seq the next entry should have
	prevMAC   string // stored MAC of the entry before
	prevBad   bool   // the entry before already has a problem: skip the link check
	last      uint64
	entries   uint64
	cpSeq     uint64 // the checkpoint's seq, whose stored MAC the walk notes
	cpMAC     string
	cpSeen    bool
	cpBad     bool
	problems  []Problem
}

func (v *verifier) result() Report {
	return Report{Entries: v.entries, Head: v.last, OK: len(v.problems) == 0, Problems: v.problems}
}

func (v *verifier) report(seq uint64, kind, detail string) {
	if seq == v.cpSeq {
		v.cpBad = true
	}
	if len(v.problems) < maxProblems {
		v.problems = append(v.problems, Problem{Seq: seq, Kind: kind, Detail: detail})
	}
}

// check verifies one entry; next is the entry after it, if any.
func (v *verifier) check(r row, next *row) {
	v.entries++
	seq := r.Seq
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
	mac, valid := v.sealedMAC(r.Value)
	bad := true
	if valid {
		// The MAC verifies, so the value is as this package wrote it: its
		// seq and prev can be read from their fixed places.
		eseq, prev, ok := fastLink(r.Value)
		switch {
		case !ok:
			v.report(seq, ProblemEdited, "the entry cannot be decoded")
		case eseq != seq:
			v.report(seq, ProblemReordered, fmt.Sprintf("entry %d is stored at position %d", eseq, seq))
		case !v.prevBad && prev != v.prevMAC:
			v.report(seq, ProblemForged, fmt.Sprintf("entry %d does not follow entry %d: it was spliced from another chain", seq, seq-1))
		default:
			bad = false
		}
	} else if mac == "" {
		v.report(seq, ProblemEdited, "the entry cannot be decoded")
	} else {
		v.report(seq, v.classifyBadMAC(seq, mac, next), "the entry's MAC does not verify with the audit key")
	}
	v.prevMAC = mac
	if seq == v.cpSeq {
		v.cpMAC, v.cpSeen = mac, true
	}
	v.prevBad = bad
}

// sealedMAC returns the MAC a sealed value carries and whether it verifies
// over the value's body. mac is "" for a value that is not sealed at all.
func (v *verifier) sealedMAC(value string) (mac string, valid bool) {
	n := len(value)
	if n < macSuffixLen+2 || value[n-macSuffixLen:n-macSuffixLen+len(macField)] != macField || value[n-2:] != `"}` {
		return "", false
	}
	mac = value[n-macSuffixLen+len(macField) : n-2]
	if v.mac == nil {
		v.mac = hmac.New(sha256.New, v.keyed)
	}
	v.mac.Reset()
	v.buf = append(append(v.buf[:0], value[:n-macSuffixLen]...), '}')
	v.mac.Write(v.buf)
	var sum [sha256.Size]byte
	var want [2 * sha256.Size]byte
	hex.Encode(want[:], v.mac.Sum(sum[:0]))
	return mac, hmac.Equal(want[:], []byte(mac))
}

// fastLink reads seq and prev from a sealed value this package wrote:
// `{"seq":N,` first, `"prev":"…"` just before the MAC.
func fastLink(value string) (seq uint64, prev string, ok bool) {
	const head = `{"seq":`
	if !strings.HasPrefix(value, head) {
		return 0, "", false
	}
	end := strings.IndexByte(value[len(head):], ',')
	if end < 0 {
		return 0, "", false
	}
	seq, err := strconv.ParseUint(value[len(head):len(head)+end], 10, 64)
	if err != nil {
		return 0, "", false
	}
	// The body ends with "prev":"" (the first entry) or "prev":"<64 hex>".
	body := value[:len(value)-macSuffixLen]
	const field = `"prev":"`
	for _, n := range []int{0, 64} {
		if i := len(body) - 1 - n - len(field); i >= 0 && body[i:i+len(field)] == field && body[len(body)-1] == '"' {
			return seq, body[i+len(field) : len(body)-1], true
		}
	}
	return 0, "", false
}

// classifyBadMAC tells an edited entry (the chain still names its MAC: the
// next entry's prev, or the checkpoint) from a forged one.
func (v *verifier) classifyBadMAC(seq uint64, mac string, next *row) string {
	if next != nil && next.Seq == seq+1 {
		if n, err := decode(next.Value); err == nil && n.Prev == mac {
			return ProblemEdited
		}
	}
	if seq == v.cpSeq {
		return ProblemEdited // the checkpoint's MAC is compared in checkTail
	}
	return ProblemForged
}

// checkState is what Verify knows of the checkpoint and anchor file.
type checkState struct {
	read_    bool
	cp       checkpoint
	cpNone   bool  // no checkpoint was ever stored
	cpErr    error // it cannot be read (removed) or does not verify
	cpForged bool
	copy     checkpoint // the log file's copy
	copyOK   bool
	copyErr  error
	anchorN  uint64
}

func (c *checkState) read(l *Log) {
	c.read_ = true
	// A writer puts each checkpoint in the vault before its copy in the
	// log file. Read the copy first and the vault after it, so a checkpoint
	// written between the two reads never looks like a vault that fell
	// behind its log: in this process under cpMu, and across processes
	// with the vault read again from its file after the copy.
	if !l.readOnly {
		l.cpMu.Lock()
		defer l.cpMu.Unlock()
	}
	c.copy, c.copyOK, c.copyErr = l.checkpointCopy()
	if r, ok := l.cp.(refresher); ok && l.readOnly {
		if err := r.Refresh(); err != nil {
			c.cpErr = err
			return
		}
	}
	data, err := l.cp.GetRecord(l.cpName)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		c.cpNone = true
	case err != nil:
		c.cpErr = err
	default:
		c.cp, err = l.keyed.decodeCheckpoint(data)
		if err != nil {
			c.cpErr, c.cpForged = err, true
		}
	}
}

// refresher is a Checkpointer that is a snapshot of a file another process
// writes (a vault opened read-only): Refresh reads the file again.
type refresher interface {
	Refresh() error
}

// checkTail compares the walked head with the checkpoint.
func (c *checkState) checkTail(v *verifier) {
	if c.copyErr != nil {
		v.report(c.copy.Seq, ProblemForged, "the log's copy of its checkpoint does not verify with the audit key")
	}
	switch {
	case !c.read_:
	case c.cpForged:
		v.report(c.cp.Seq, ProblemForged, "the head checkpoint does not verify with the audit key")
	case c.cpErr != nil:
		v.report(v.last, ProblemTruncated, "the vault had a checkpoint for this log and it is gone: "+c.cpErr.Error())
	case c.cpNone:
		if v.entries > 0 || v.hasAnchor {
			v.report(v.last, ProblemTruncated, "the vault holds no checkpoint for this log, so its tail cannot be checked")
		}
	case !c.copyOK && c.copyErr == nil && c.cp.N > 1:
		v.report(c.cp.Seq, ProblemRolledBack, fmt.Sprintf("the log's copy of its checkpoint was removed (the vault's is #%d): the log may have been cut and its vault rolled back", c.cp.N))
	case c.copyOK && c.copy.N > c.cp.N:
		v.report(c.cp.Seq, ProblemRolledBack, fmt.Sprintf("the vault's checkpoint (#%d, at entry %d) is older than the one this log recorded (#%d, at entry %d): the vault was restored from an older copy", c.cp.N, c.cp.Seq, c.copy.N, c.copy.Seq))
	case c.cp.Seq > v.last:
		v.report(v.last+1, ProblemTruncated, fmt.Sprintf("the log ends at entry %d but its checkpoint is at entry %d", v.last, c.cp.Seq))
	case c.cp.Seq == 0 || v.cpBad || (v.hasAnchor && c.cp.Seq < v.anchor.Seq):
	default:
		mac, ok := v.cpMAC, v.cpSeen
		if v.hasAnchor && c.cp.Seq == v.anchor.Seq {
			mac, ok = v.anchor.MAC, true
		}
		if ok && mac != c.cp.MAC {
			v.report(c.cp.Seq, ProblemTruncated, fmt.Sprintf("entry %d is not the checkpointed one: the tail was cut and rewritten", c.cp.Seq))
		}
	}
}

// checkAnchorFile checks the log and the vault's checkpoint against the
// newest line of an anchor file: the log must still hold the entry it
// names, and the vault's checkpoint must not be older.
func (l *Log) checkAnchorFile(v *verifier, c *checkState, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("audit: verify: anchor: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 4096), 1<<20)
	var newest checkpoint
	line := 0
	for sc.Scan() {
		line++
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		a, err := l.keyed.decodeCheckpoint(b)
		if err != nil || a.N == 0 {
			v.report(0, ProblemForged, fmt.Sprintf("line %d of the anchor file %s does not verify with the audit key", line, path))
			continue
		}
		if a.N > newest.N {
			newest = a
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("audit: verify: anchor %s: %w", path, err)
	}
	c.anchorN = newest.N
	if newest.N == 0 {
		v.report(0, ProblemTruncated, fmt.Sprintf("the anchor file %s holds no checkpoint", path))
		return nil
	}
	switch {
	case c.read_ && c.cpErr == nil && !c.cpNone && c.cp.N < newest.N:
		v.report(c.cp.Seq, ProblemRolledBack, fmt.Sprintf("the vault's checkpoint (#%d, at entry %d) is older than the anchor's (#%d, at entry %d): the data dir or its vault was restored from an older copy", c.cp.N, c.cp.Seq, newest.N, newest.Seq))
	case newest.Seq > v.last:
		v.report(v.last+1, ProblemTruncated, fmt.Sprintf("the log ends at entry %d but the anchor names entry %d", v.last, newest.Seq))
	default:
		mac, ok, err := l.macAt(newest.Seq)
		if err != nil && !errors.Is(err, ErrTampered) {
			return fmt.Errorf("audit: verify: %w", err)
		}
		if ok && mac != newest.MAC {
			v.report(newest.Seq, ProblemTruncated, fmt.Sprintf("entry %d is not the one the anchor names: the log was cut and rewritten", newest.Seq))
		}
	}
	return nil
}
