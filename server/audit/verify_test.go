package audit

import (
	"bytes"
	"database/sql"
	"encoding/json"
	"errors"
	"io/fs"
	"maps"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// problemAt is a Problem without its detail, for comparison.
type problemAt struct {
	Seq  uint64
	Kind string
}

func TestVerifyDetectsTampering(t *testing.T) {
	otherKey := macKey(bytes.Repeat([]byte{9}, 32))
	forge := func(seq uint64, prev string) string {
		e := fromRecord(typeCall, &Record{Time: t0, Session: "s", Tool: "github", Decision: Allow})
		e.Seq, e.Prev = seq, prev
		v, _, _ := otherKey.seal(e)
		return v
	}
	get := func(db *sql.DB, seq uint64) string { return rawEntry(t, db, seq) }
	macOf := func(db *sql.DB, seq uint64) string {
		e, err := decode(get(db, seq))
		if err != nil {
			t.Fatal(err)
		}
		return e.MAC
	}
	tests := map[string]struct {
		tamper      func(db *sql.DB) error
		checkpoint  func(cp *memCheckpoint)
		want        []problemAt
		openRefused bool // a writable Open refuses the file
	}{
		"edit one field": {
			tamper: func(db *sql.DB) error {
				return setRaw(db, 3, strings.Replace(get(db, 3), `"tool":"github"`, `"tool":"gitlab"`, 1))
			},
			want: []problemAt{{3, ProblemEdited}},
		},
		"edit the head": {
			tamper: func(db *sql.DB) error {
				return setRaw(db, 8, strings.Replace(get(db, 8), `"decision":"deny"`, `"decision":"allow"`, 1))
			},
			want:        []problemAt{{8, ProblemEdited}},
			openRefused: true,
		},
		"delete a record": {
			tamper: func(db *sql.DB) error { return deleteRaw(db, 4) },
			want:   []problemAt{{4, ProblemMissing}},
		},
		"swap two records": {
			tamper: func(db *sql.DB) error {
				a, b := get(db, 3), get(db, 4)
				setRaw(db, 3, b)
				return setRaw(db, 4, a)
			},
			want: []problemAt{{3, ProblemReordered}, {4, ProblemReordered}},
		},
		"truncate the tail": {
			tamper: func(db *sql.DB) error {
				deleteRaw(db, 8)
				return deleteRaw(db, 7)
			},
			want:        []problemAt{{7, ProblemTruncated}},
			openRefused: true,
		},
		"forge an appended record": {
			tamper:      func(db *sql.DB) error { return setRaw(db, 9, forge(9, macOf(db, 8))) },
			want:        []problemAt{{9, ProblemForged}},
			openRefused: true,
		},
		"forge a record in place": {
			tamper: func(db *sql.DB) error { return setRaw(db, 5, forge(5, macOf(db, 4))) },
			want:   []problemAt{{5, ProblemForged}},
		},
		"forge the checkpoint": {
			checkpoint: func(cp *memCheckpoint) {
				var c checkpoint
				if err := json.Unmarshal(cp.records[CheckpointName], &c); err != nil {
					t.Fatal(err)
				}
				cp.records[CheckpointName] = otherKey.encodeCheckpoint(c)
			},
			want:        []problemAt{{8, ProblemForged}},
			openRefused: true,
		},
		"delete the checkpoint": {
			checkpoint:  func(cp *memCheckpoint) { delete(cp.records, CheckpointName) },
			want:        []problemAt{{8, ProblemTruncated}},
			openRefused: true,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			l := f.open()
			for range 8 {
				mustWrite(t, l, denied("s", "github"))
			}
			if rep := mustVerify(t, l); !rep.OK || rep.Entries != 8 || rep.Head != 8 {
				t.Fatalf("Verify before tampering = %+v, want ok with 8 entries", rep)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			if tc.tamper != nil {
				f.tamper(tc.tamper)
			}
			if tc.checkpoint != nil {
				tc.checkpoint(f.cp)
			}

			rep := mustVerify(t, f.openReadOnly())
			var got []problemAt
			for _, p := range rep.Problems {
				got = append(got, problemAt{p.Seq, p.Kind})
				if p.Detail == "" {
					t.Errorf("problem %+v has no detail", p)
				}
			}
			if rep.OK || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("Verify = %+v\nproblems %v, want %v", rep, got, tc.want)
			}

			w, err := Open(f.opts)
			if err == nil {
				w.Close()
			}
			if refused := errors.Is(err, ErrTampered); refused != tc.openRefused {
				t.Fatalf("writable Open = %v; want refused with ErrTampered: %v", err, tc.openRefused)
			}
		})
	}
}

func TestVerifyWithoutCheckpointer(t *testing.T) {
	f := newFixture(t)
	f.opts.Checkpoint = nil
	l := f.open()
	for range 3 {
		mustWrite(t, l, denied("s", "github"))
	}
	l.Close()
	// Without a checkpoint, a cut tail is not detectable: documented.
	f.tamper(func(db *sql.DB) error { return deleteRaw(db, 3) })
	if rep := mustVerify(t, f.openReadOnly()); !rep.OK || rep.Head != 2 {
		t.Fatalf("Verify without checkpointer = %+v, want ok at head 2", rep)
	}
}

func TestVerifyWrongKeyFlagsEveryEntry(t *testing.T) {
	f := newFixture(t)
	l := f.open()
	mustWrite(t, l, denied("s", "github"))
	mustWrite(t, l, denied("s", "github"))
	l.Close()
	f.opts.Key = bytes.Repeat([]byte{1}, 32)
	f.opts.Checkpoint = nil
	rep := mustVerify(t, f.openReadOnly())
	if rep.OK || len(rep.Problems) != 2 || rep.Problems[0].Seq != 1 {
		t.Fatalf("Verify with the wrong key = %+v, want both entries flagged", rep)
	}
}

// staleCheckpoint is a Checkpointer frozen at the moment it was copied, as
// a vault opened read-only by another process is.
type staleCheckpoint struct{ records map[string][]byte }

func (s *staleCheckpoint) PutRecord(string, []byte) error { return ErrReadOnly }
func (s *staleCheckpoint) GetRecord(name string) ([]byte, error) {
	if d, ok := s.records[name]; ok {
		return d, nil
	}
	return nil, fs.ErrNotExist
}

func snapshotOf(m *memCheckpoint) map[string][]byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return maps.Clone(m.records)
}

// refreshingCheckpoint is a snapshot that can read its source again, as
// vault.Vault.Refresh does for a vault opened read-only.
type refreshingCheckpoint struct {
	staleCheckpoint
	src *memCheckpoint
}

func (r *refreshingCheckpoint) Refresh() error {
	r.records = snapshotOf(r.src)
	return nil
}

// A reader beside a live writer holds a vault snapshot from when it
// opened; the writer checkpoints again (vault first, then the log file's
// copy) before the reader verifies. Verify reads the log's copy first and
// the vault again after it, so a healthy log never reads as rolled back;
// a vault that really is older than the log's copy still does.
func TestVerifyBesideALiveWriterIsNotARollback(t *testing.T) {
	f := newFixture(t)
	l := f.open()
	mustWrite(t, l, denied("s", "github"))
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	snap := snapshotOf(f.cp) // what a reader's vault holds when it opens
	l = f.open()
	mustWrite(t, l, denied("s", "github"))
	mustCall(t, l, allowed("s", "github"), 200)
	if err := l.Close(); err != nil { // a newer checkpoint: vault, then the copy
		t.Fatal(err)
	}

	o := f.opts
	o.ReadOnly = true
	o.Checkpoint = &refreshingCheckpoint{staleCheckpoint: staleCheckpoint{records: maps.Clone(snap)}, src: f.cp}
	r, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if rep := mustVerify(t, r); !rep.OK {
		t.Fatalf("Verify beside a writer that checkpointed since the reader opened = %+v, want ok", rep)
	}

	o.Checkpoint = &staleCheckpoint{records: maps.Clone(snap)} // a vault restored from that older copy
	stale, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	defer stale.Close()
	rep := mustVerify(t, stale)
	if rep.OK || len(rep.Problems) == 0 || rep.Problems[0].Kind != ProblemRolledBack {
		t.Fatalf("Verify with a vault older than the log's copy = %+v, want %s", rep, ProblemRolledBack)
	}
}

// TestCutTailWindow: the checkpoint trails the durable head by up to
// checkpointInterval (and the batch being fsynced), so a cut of only the
// entries written since the last checkpoint — a process that died before
// checkpointing them, its tail then cut — is not detected (the window,
// documented in BENCHMARKS.md and the package doc); a cut that reaches
// one entry deeper is.
func TestCutTailWindow(t *testing.T) {
	f := newFixture(t)
	l := f.open()
	for range 10 {
		mustWrite(t, l, denied("s", "github"))
	}
	// Wait (on a count, not a clock) until the checkpoint names seq 10.
	for i := 0; ; i++ {
		data, err := f.cp.GetRecord(CheckpointName)
		if err == nil {
			if c, err := l.keyed.decodeCheckpoint(data); err == nil && c.Seq == 10 {
				break
			}
		}
		if i == 30_000 {
			t.Fatal("the checkpoint did not reach seq 10 in 30 s")
		}
		time.Sleep(time.Millisecond)
	}
	// The next checkpoint never comes: the process "dies" with 11-13
	// durable but not checkpointed.
	f.cp.mu.Lock()
	f.cp.hold = make(chan struct{})
	f.cp.mu.Unlock()
	for range 3 {
		mustWrite(t, l, denied("s", "github"))
	}
	// 11-13 in SQLite, its WAL fsynced (not only in the journal).
	if err := l.st.settle(13); err != nil {
		t.Fatal(err)
	}

	verifyAfterCut := func(from uint64) Report {
		t.Helper()
		dir := t.TempDir()
		g := *f
		g.path = filepath.Join(dir, "audit.sqlite")
		g.opts.Path = g.path
		// The file as the dead process left it: the database and its WAL.
		copyFile(t, f.path, g.path)
		copyFile(t, f.path+"-wal", g.path+"-wal")
		g.tamper(func(db *sql.DB) error {
			_, err := db.Exec(`DELETE FROM entries WHERE seq >= ?`, from)
			return err
		})
		return mustVerify(t, g.openReadOnly())
	}
	if rep := verifyAfterCut(12); !rep.OK || rep.Head != 11 {
		t.Fatalf("Verify after cutting 12-13 (inside the window) = %+v, want ok at head 11: the window", rep)
	}
	rep := verifyAfterCut(10)
	if rep.OK || len(rep.Problems) == 0 || rep.Problems[len(rep.Problems)-1].Kind != ProblemTruncated {
		t.Fatalf("Verify after cutting 10-13 (past the checkpoint) = %+v, want truncated", rep)
	}
	close(f.cp.hold)
	l.Close()
}
