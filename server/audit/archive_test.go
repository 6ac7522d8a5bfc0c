package audit

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

// TestArchiveIsTheWayOutOfALogThatDoesNotMatchItsCheckpoint (issue 13
// item 3): a log cut behind its checkpoint is refused by Open; Archive
// moves it aside, where it still verifies (as TAMPERED) with the same key
// and its checkpoint, and starts a new chain that Open accepts, whose
// first record names the archived head.
func TestArchiveIsTheWayOutOfALogThatDoesNotMatchItsCheckpoint(t *testing.T) {
	f := newFixture(t)
	l := f.open()
	for i := 0; i < 5; i++ {
		if _, err := l.Write(context.Background(), denied("s1", "github")); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	f.tamper(func(db *sql.DB) error { _, err := db.Exec(`DELETE FROM entries WHERE seq = 5`); return err })
	if _, err := Open(f.opts); !errors.Is(err, ErrTampered) {
		t.Fatalf("Open of a cut log = %v, want ErrTampered", err)
	}

	dir := filepath.Join(filepath.Dir(f.path), "audit-archive-1")
	a, err := Archive(f.opts, dir)
	if err != nil {
		t.Fatalf("Archive = %v", err)
	}
	if a.Head != 4 || a.HeadMAC == "" || a.Report.OK || a.Report.Entries != 4 {
		t.Fatalf("Archive = %+v; want the head at seq 4 and a report of the cut", a)
	}

	// The old log verifies with the same key and the checkpoint kept beside it.
	old, err := Open(Options{Path: filepath.Join(dir, filepath.Base(f.path)), Key: testKey, ReadOnly: true, Checkpoint: FileCheckpoint(filepath.Join(dir, ArchiveCheckpointFile))})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := old.Verify()
	old.Close()
	if err != nil || rep.OK || len(rep.Problems) == 0 || rep.Problems[0].Kind != ProblemTruncated {
		t.Fatalf("verify of the archived log = %+v, %v; want it reported truncated", rep, err)
	}

	// The new chain opens, verifies, and names the archived head first.
	nl := f.open()
	defer nl.Close()
	if rep, err := nl.Verify(); err != nil || !rep.OK || rep.Entries != 1 {
		t.Fatalf("verify of the new chain = %+v, %v; want 1 entry, intact", rep, err)
	}
	first, err := nl.Get(1)
	if err != nil {
		t.Fatal(err)
	}
	if first.Tool != ArchiveToolName || !strings.Contains(first.Reason, "head seq 4 mac "+a.HeadMAC) || !strings.Contains(first.Reason, dir) || !strings.Contains(first.Reason, "TAMPERED") {
		t.Fatalf("the new chain's first record = %+v; want it to name the archived head and what verify found", first)
	}
	if _, err := Archive(f.opts, dir); err == nil {
		t.Fatal("Archive into an existing directory succeeded")
	}
}
