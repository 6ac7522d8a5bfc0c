package audit

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// removedCheckpoint is a Checkpointer whose checkpoint was stored and then
// removed from the vault file: GetRecord says so (not "never stored").
type removedCheckpoint struct{ *memCheckpoint }

func (r removedCheckpoint) GetRecord(name string) ([]byte, error) {
	return nil, fmt.Errorf("vault: record was removed from the vault file: %s", name)
}

// Issue 14 item 3: deleting the log and the checkpoint, or replaying an old
// checkpoint after cutting the log, is detected.
func TestRollbackIsDetected(t *testing.T) {
	t.Run("log and checkpoint deleted", func(t *testing.T) {
		f := newFixture(t)
		l := f.open()
		mustWrite(t, l, denied("s", "github"))
		l.Close()
		for _, p := range []string{f.path, f.path + "-wal", f.path + "-shm"} {
			os.Remove(p)
		}
		f.opts.Checkpoint = removedCheckpoint{f.cp}
		if l, err := Open(f.opts); !errors.Is(err, ErrTampered) {
			if l != nil {
				l.Close()
			}
			t.Fatalf("Open of an empty log whose checkpoint was removed = %v, want ErrTampered", err)
		}
	})
	t.Run("checkpoint removed", func(t *testing.T) {
		f := newFixture(t)
		l := f.open()
		mustWrite(t, l, denied("s", "github"))
		l.Close()
		f.opts.Checkpoint = removedCheckpoint{f.cp}
		if l, err := Open(f.opts); !errors.Is(err, ErrTampered) {
			if l != nil {
				l.Close()
			}
			t.Fatalf("Open with the checkpoint removed = %v, want ErrTampered", err)
		}
		rep := mustVerify(t, f.openReadOnly())
		if rep.OK || rep.Problems[len(rep.Problems)-1].Kind != ProblemTruncated {
			t.Fatalf("Verify with the checkpoint removed = %+v, want truncated", rep)
		}
	})
	t.Run("old checkpoint replayed after cutting the log", func(t *testing.T) {
		f := newFixture(t)
		l := f.open()
		for range 4 {
			mustWrite(t, l, denied("s", "github"))
		}
		l.Close()
		old := f.cp.records[CheckpointName] // checkpoint at entry 4
		snapshot := filepath.Join(t.TempDir(), "old.sqlite")
		copyFile(t, f.path, snapshot)
		l = f.open()
		for range 4 {
			mustWrite(t, l, denied("s", "github"))
		}
		l.Close()
		// Cut the log back to entry 4 and put the old checkpoint back.
		f.tamper(func(db *sql.DB) error {
			_, err := db.Exec(`DELETE FROM entries WHERE seq > 4`)
			return err
		})
		f.cp.records[CheckpointName] = old
		if l, err := Open(f.opts); !errors.Is(err, ErrTampered) {
			if l != nil {
				l.Close()
			}
			t.Fatalf("Open after cutting the log and replaying its old checkpoint = %v, want ErrTampered", err)
		}
		rep := mustVerify(t, f.openReadOnly())
		if rep.OK || rep.Problems[0].Kind != ProblemRolledBack {
			t.Fatalf("Verify = %+v, want rolled back: the log's copy of its checkpoint is newer than the vault's", rep)
		}
		// Removing the log's copy too does not help.
		f.tamper(func(db *sql.DB) error { _, err := db.Exec(`DELETE FROM meta WHERE name = 'checkpoint'`); return err })
		if l, err := Open(f.opts); !errors.Is(err, ErrTampered) {
			if l != nil {
				l.Close()
			}
			t.Fatalf("Open with the log's checkpoint copy removed = %v, want ErrTampered", err)
		}
		if rep := mustVerify(t, f.openReadOnly()); rep.OK || rep.Problems[0].Kind != ProblemRolledBack {
			t.Fatalf("Verify with the log's checkpoint copy removed = %+v, want rolled back", rep)
		}
	})
}

// A whole data dir restored from an older copy agrees with itself; only an
// anchor kept elsewhere tells.
func TestAnchorDetectsWholeDataDirRollback(t *testing.T) {
	f := newFixture(t)
	anchor := filepath.Join(t.TempDir(), "elsewhere", "audit.anchor")
	os.MkdirAll(filepath.Dir(anchor), 0o700)
	f.opts.Anchor = anchor
	l := f.open()
	for range 3 {
		mustWrite(t, l, denied("s", "github"))
	}
	l.Close()
	// The copy an attacker keeps: the log and the vault's checkpoint.
	copyDir := t.TempDir()
	copyFile(t, f.path, filepath.Join(copyDir, "audit.sqlite"))
	oldCP := maps.Clone(f.cp.records)
	l = f.open()
	for range 3 {
		mustWrite(t, l, denied("s", "github"))
	}
	l.Close()
	ok := mustVerifyWith(t, f.openReadOnly(), VerifyOptions{Anchor: anchor})
	if !ok.OK || ok.Anchor == 0 || ok.Anchor != ok.Checkpoint {
		t.Fatalf("Verify against the anchor before any rollback = %+v, want ok", ok)
	}
	// Roll the whole data dir back.
	for _, p := range []string{f.path + "-wal", f.path + "-shm"} {
		os.Remove(p)
	}
	copyFile(t, filepath.Join(copyDir, "audit.sqlite"), f.path)
	f.cp.records = oldCP
	if rep := mustVerify(t, f.openReadOnly()); !rep.OK {
		t.Fatalf("Verify without the anchor = %+v; a consistent older copy is expected to pass (the README says so)", rep)
	}
	rep := mustVerifyWith(t, f.openReadOnly(), VerifyOptions{Anchor: anchor})
	if rep.OK || rep.Problems[0].Kind != ProblemRolledBack {
		t.Fatalf("Verify against the anchor after the rollback = %+v, want rolled back", rep)
	}
	// A forged anchor line is reported, not trusted.
	af, _ := os.OpenFile(anchor, os.O_APPEND|os.O_WRONLY, 0)
	af.WriteString(`{"n":999,"seq":999,"mac":"00","sig":"00"}` + "\n")
	af.Close()
	rep = mustVerifyWith(t, f.openReadOnly(), VerifyOptions{Anchor: anchor})
	var forged bool
	for _, p := range rep.Problems {
		forged = forged || (p.Kind == ProblemForged && strings.Contains(p.Detail, "anchor"))
	}
	if !forged || rep.Anchor == 999 {
		t.Fatalf("Verify with a forged anchor line = %+v, want it reported and ignored", rep)
	}
}

func mustVerifyWith(t testing.TB, l *Log, o VerifyOptions) Report {
	t.Helper()
	rep, err := l.VerifyWith(context.Background(), o)
	if err != nil {
		t.Fatalf("VerifyWith(%+v) = %v", o, err)
	}
	return rep
}

// Every checkpoint counts up, across restarts.
func TestCheckpointCounterGrows(t *testing.T) {
	f := newFixture(t)
	var last uint64
	for i := range 3 {
		l := f.open()
		mustWrite(t, l, denied("s", "github"))
		l.Close()
		cp, err := newMACKey(testKey).decodeCheckpoint(f.cp.records[CheckpointName])
		if err != nil {
			t.Fatal(err)
		}
		if cp.N <= last || cp.Seq != uint64(i+1) {
			t.Fatalf("checkpoint after start %d = %+v, want counter above %d at entry %d", i, cp, last, i+1)
		}
		last = cp.N
	}
}

// A start verifies the entries after the checkpoint (written by a process
// that died before checkpointing them) and only those.
func TestStartVerifiesFromTheCheckpoint(t *testing.T) {
	setup := func(t *testing.T) (*fixture, []byte) {
		f := newFixture(t)
		l := f.open()
		for range 4 {
			mustWrite(t, l, denied("s", "github"))
		}
		l.Close()
		cp := f.cp.records[CheckpointName] // at entry 4
		l = f.open()
		for range 4 {
			mustWrite(t, l, denied("s", "github"))
		}
		l.Close()
		return f, cp
	}
	t.Run("edit after the checkpoint", func(t *testing.T) {
		f, cp := setup(t)
		// As if the process died before checkpointing 5–8.
		f.cp.records[CheckpointName] = cp
		f.tamper(func(db *sql.DB) error {
			if _, err := db.Exec(`UPDATE meta SET value = ? WHERE name = 'checkpoint'`, string(cp)); err != nil {
				return err
			}
			return setRaw(db, 6, strings.Replace(rawEntry(t, db, 6), `"decision":"deny"`, `"decision":"allow"`, 1))
		})
		if l, err := Open(f.opts); !errors.Is(err, ErrTampered) || !strings.Contains(err.Error(), "entry 6") {
			if l != nil {
				l.Close()
			}
			t.Fatalf("Open with entry 6 edited after the checkpoint = %v, want ErrTampered naming entry 6", err)
		}
	})
	t.Run("edit before the checkpoint", func(t *testing.T) {
		f, _ := setup(t)
		f.tamper(func(db *sql.DB) error {
			return setRaw(db, 2, strings.Replace(rawEntry(t, db, 2), `"decision":"deny"`, `"decision":"allow"`, 1))
		})
		l := f.open() // a start reads nothing before the checkpoint
		defer l.Close()
		rep := mustVerify(t, l)
		if rep.OK || rep.Problems[0].Seq != 2 {
			t.Fatalf("Verify = %+v, want entry 2 reported", rep)
		}
	})
}

func TestVerifyFrom(t *testing.T) {
	f := newFixture(t)
	l := f.open()
	for range 10 {
		mustWrite(t, l, denied("s", "github"))
	}
	l.Close()
	f.tamper(func(db *sql.DB) error {
		return setRaw(db, 3, strings.Replace(rawEntry(t, db, 3), `"tool":"github"`, `"tool":"gitlab"`, 1))
	})
	r := f.openReadOnly()
	var progress []uint64
	rep := mustVerifyWith(t, r, VerifyOptions{From: 5, Progress: func(seq, head uint64) { progress = append(progress, seq, head) }})
	if !rep.OK || rep.From != 5 || rep.Entries != 6 || rep.Head != 10 {
		t.Fatalf("Verify from 5 = %+v, want ok over entries 5–10", rep)
	}
	if len(progress) == 0 || progress[len(progress)-2] != 10 || progress[len(progress)-1] != 10 {
		t.Fatalf("progress = %v, want it to end at 10 of 10", progress)
	}
	for _, from := range []uint64{3, 4} {
		// From 4 checks entry 4's link to entry 3 (whose stored MAC still
		// chains); from 3 checks entry 3 itself.
		rep = mustVerifyWith(t, r, VerifyOptions{From: from})
		if from == 3 && (rep.OK || rep.Problems[0].Seq != 3) {
			t.Fatalf("Verify from 3 = %+v, want entry 3 reported", rep)
		}
		if from == 4 && !rep.OK {
			t.Fatalf("Verify from 4 = %+v, want ok", rep)
		}
	}
}

// Issue 14 item 8: what readers show comes from MAC'd entries only. An
// index dropped with sqlite3 changes no answer (and is reported), and a
// start writes an interrupted outcome only for an intent the chain holds
// no outcome for.
func TestStateOutsideTheChainChangesNothingShown(t *testing.T) {
	f := newFixture(t)
	l := f.open()
	mustWrite(t, l, denied("s1", "github"))
	mustCall(t, l, allowed("s1", "github"), 200)
	mustCall(t, l, allowed("s2", "github"), 404)
	if _, err := l.Begin(context.Background(), allowed("s1", "github")); err != nil { // seq 6, dangling
		t.Fatal(err)
	}
	l.Close()
	want := map[string][]Record{}
	filters := map[string]Filter{"session": {Session: "s1"}, "tool": {Tool: "github"}, "time": {Since: t0}, "decision": {Decision: Allow}, "all": {}}
	r := f.openReadOnly()
	for name, flt := range filters {
		want[name] = mustQuery(t, r, flt)
	}
	r.Close()
	f.tamper(func(db *sql.DB) error {
		for _, ix := range []string{"entries_session", "entries_tool", "entries_time", "entries_of", "entries_decision"} {
			if _, err := db.Exec(`DROP INDEX ` + ix); err != nil {
				return err
			}
		}
		return nil
	})
	r = f.openReadOnly()
	for name, flt := range filters {
		if got := mustQuery(t, r, flt); !reflect.DeepEqual(got, want[name]) {
			t.Fatalf("Query(%s) with the indexes dropped = %+v, want %+v", name, got, want[name])
		}
	}
	rep := mustVerify(t, r)
	if rep.OK || rep.Problems[0].Kind != ProblemSchema {
		t.Fatalf("Verify with the indexes dropped = %+v, want a schema problem", rep)
	}
	if l, err := Open(f.opts); !errors.Is(err, ErrTampered) {
		if l != nil {
			l.Close()
		}
		t.Fatalf("writable Open of a file whose schema was changed = %v, want ErrTampered", err)
	}

	// A start that looks at every intent (as after a checkpoint of the
	// earlier format) closes only the one without an outcome.
	g := newFixture(t)
	l = g.open()
	mustCall(t, l, allowed("s1", "github"), 200)
	if _, err := l.Begin(context.Background(), allowed("s1", "github")); err != nil { // seq 3
		t.Fatal(err)
	}
	l.Close()
	mac, _, _ := func() (string, bool, error) {
		r := g.openReadOnly()
		return r.macAt(3)
	}()
	// The log as the buntdb version left it: a checkpoint without counter
	// (and so without the oldest open intent), no copy in the log.
	g.cp.records[CheckpointName] = newMACKey(testKey).encodeLink(checkpointDomain, link{Seq: 3, MAC: mac})
	g.tamper(func(db *sql.DB) error { _, err := db.Exec(`DELETE FROM meta WHERE name = 'checkpoint'`); return err })
	l = g.open()
	defer l.Close()
	recs := mustQuery(t, l, Filter{})
	if len(recs) != 2 || recs[0].Decision != Allow || recs[0].Status != 200 || recs[1].Decision != Interrupted {
		t.Fatalf("records after a full recovery scan = %+v, want the completed call unchanged and the dangling one interrupted", recs)
	}
	if rep := mustVerify(t, l); !rep.OK || rep.Head != 4 {
		t.Fatalf("Verify = %+v, want head 4: one interrupted outcome written, no more", rep)
	}
}
