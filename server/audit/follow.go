package audit

import (
	"context"
	"maps"
	"slices"
	"time"
)

// followPoll is how often Follow looks for new entries.
const followPoll = 200 * time.Millisecond

// Follow is `tail -f` on the log: it calls fn with the last f.Limit
// records that match f (all of them when f.Limit is 0), then with the
// matching records written after them, in seq order, a batch per poll,
// until ctx ends (then it returns nil) or fn returns an error (which it
// returns). A call passed as running is passed again once its outcome is
// written (before the records written after that outcome), or once it
// reads interrupted (its process is gone). It works on
// a read-only Log over a file another process writes: each poll reads the
// file as it is.
func (l *Log) Follow(ctx context.Context, f Filter, fn func([]Record) error) error {
	if l.isClosed() {
		return ErrClosed
	}
	recs, err := l.Query(f)
	if err != nil {
		return err
	}
	after := f.AfterSeq
	running := map[uint64]bool{} // calls in flight that match f but its decision
	for _, r := range recs {
		after = max(after, r.Seq)
		if r.Decision == Running {
			running[r.Seq] = true
		}
	}
	if len(recs) > 0 {
		if err := fn(recs); err != nil {
			return err
		}
	}
	// Calls before the first shown that are running and match all but the
	// decision are watched too, so their outcome is not missed.
	if f.Decision != "" && f.Decision != Running {
		g := f
		g.Decision, g.Limit = Running, 0
		if err := l.Stream(ctx, g, func(r Record) error {
			running[r.Seq] = true
			return nil
		}); err != nil {
			return err
		}
	}
	// lastSeq is the head at the last look; 0 makes the first look read
	// on from after even if nothing is written later, so records written
	// between the query above and the first tick are not missed.
	var lastSeq uint64
	tick := time.NewTicker(followPoll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		r, ok, err := l.st.last()
		if err != nil {
			return err
		}
		// While a call is running, look again even if nothing was written:
		// if its process dies, the call now reads as interrupted.
		if (!ok || r.Seq == lastSeq) && len(running) == 0 {
			continue
		}
		if ok {
			lastSeq = r.Seq
		}
		// The calls that were running are read again after the head was:
		// an outcome written before it is seen, so a call that finished
		// before a later one is passed before it. The new records are
		// read up to that head; later ones wait for the next look.
		var done []Record
		for _, seq := range slices.Sorted(maps.Keys(running)) {
			rec, err := l.Get(seq)
			if err != nil {
				return err
			}
			if rec.Decision == Running {
				continue
			}
			delete(running, seq)
			if f.Decision == "" || rec.Decision == f.Decision {
				done = append(done, rec)
			}
		}
		g := f
		g.Limit, g.AfterSeq, g.Decision = 0, after, ""
		if ok && (g.BeforeSeq == 0 || g.BeforeSeq > lastSeq+1) {
			g.BeforeSeq = lastSeq + 1
		}
		err = l.Stream(ctx, g, func(rec Record) error {
			after = max(after, rec.Seq)
			if rec.Decision == Running {
				running[rec.Seq] = true
			}
			if f.Decision == "" || rec.Decision == f.Decision {
				done = append(done, rec)
			}
			if len(done) >= pageSize {
				err := fn(done)
				done = nil
				return err
			}
			return nil
		})
		if err == nil && len(done) > 0 {
			err = fn(done)
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
}
