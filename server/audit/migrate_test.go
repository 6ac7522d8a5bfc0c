package audit

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/tidwall/buntdb"

	"github.com/keyhole-dev/keyhole/vault"
)

// v1Dir copies testdata/v1 (a data dir written by the buntdb version of
// this package: see TestWriteV1Fixture's commit) into a temporary dir, with
// the modes keyhole requires, and opens its vault.
func v1Dir(t *testing.T) (dir string, v *vault.Vault) {
	t.Helper()
	dir = t.TempDir()
	for _, f := range []string{"vault.db", "audit.db", "master.key"} {
		data, err := os.ReadFile(filepath.Join("testdata", "v1", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	v, err := vault.Open(filepath.Join(dir, "vault.db"), vault.KeySource{KeyFile: filepath.Join(dir, "master.key")})
	if err != nil {
		t.Fatalf("open the v1 vault: %v", err)
	}
	t.Cleanup(func() { v.Close() })
	return dir, v
}

func v1Options(dir string, v *vault.Vault) Options {
	return Options{
		Path: filepath.Join(dir, "audit.sqlite"), Legacy: filepath.Join(dir, "audit.db"),
		Key: v.DeriveKey("keyhole audit v1"), Checkpoint: v,
	}
}

// v1Records is what the buntdb version exported from the fixture.
func v1Records(t *testing.T) []Record {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "v1", "records.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	var recs []Record
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var r Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
	}
	return recs
}

// v1MACs is the MAC of every kept entry of the fixture, by seq.
func v1MACs(t *testing.T) map[uint64]string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "v1", "macs.txt"))
	if err != nil {
		t.Fatal(err)
	}
	macs := map[uint64]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		seq, mac, _ := strings.Cut(line, " ")
		n, _ := strconv.ParseUint(seq, 10, 64)
		macs[n] = mac
	}
	return macs
}

func exportAll(t *testing.T, l *Log) []Record {
	t.Helper()
	var buf bytes.Buffer
	if err := l.Export(&buf, "jsonl", Filter{}); err != nil {
		t.Fatalf("Export = %v", err)
	}
	var recs []Record
	sc := bufio.NewScanner(&buf)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var r Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
	}
	return recs
}

// The first writable Open after the upgrade migrates audit.db: the chain
// continues with the same seqs and MACs, every record reads as the buntdb
// version read it, the old file is kept as audit.db.migrated, and the
// intent the old process left without outcome is recorded interrupted.
func TestMigrateV1Fixture(t *testing.T) {
	dir, v := v1Dir(t)
	opts := v1Options(dir, v)
	l, err := Open(opts)
	if err != nil {
		t.Fatalf("Open(v1 data dir) = %v", err)
	}
	defer l.Close()
	if _, err := os.Stat(opts.Legacy); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("audit.db after the migration: %v, want it renamed", err)
	}
	if _, err := os.Stat(opts.Legacy + ".migrated"); err != nil {
		t.Fatalf("audit.db.migrated: %v", err)
	}
	for seq, want := range v1MACs(t) {
		if got, ok, err := l.macAt(seq); err != nil || !ok || got != want {
			t.Errorf("entry %d MAC = %s (found %v, %v), want %s as in audit.db", seq, got, ok, err, want)
		}
	}
	want := v1Records(t)
	got := exportAll(t, l)
	if len(got) != len(want) {
		t.Fatalf("migrated log has %d records, want %d", len(got), len(want))
	}
	for i := range want {
		w, g := want[i], got[i]
		if w.Decision == Interrupted {
			// The old process left it without outcome: this start wrote one.
			if g.Seq != w.Seq || g.Decision != Interrupted || g.MAC == w.MAC || g.Prev == "" {
				t.Errorf("dangling call %d after migration = %+v, want interrupted by a new outcome entry", w.Seq, g)
			}
			continue
		}
		wj, _ := json.Marshal(w)
		gj, _ := json.Marshal(g)
		if !bytes.Equal(wj, gj) {
			t.Errorf("record %d after migration =\n%s\nwant (as the buntdb version read it)\n%s", w.Seq, gj, wj)
		}
	}
	rep := mustVerify(t, l)
	if !rep.OK || rep.Head != 18 || rep.Entries != 9 || rep.Checkpoint < 2 {
		t.Fatalf("Verify after migration = %+v, want ok, entries 10–18 (9 kept + 1 interrupted outcome), a new checkpoint", rep)
	}
	if seq := mustWrite(t, l, denied("s", "github")); seq != 19 {
		t.Fatalf("the first write after migration got seq %d, want 19: the chain continues", seq)
	}
	l.Close()
	// Reopening does not migrate again (the old file is kept aside).
	l, err = Open(opts)
	if err != nil {
		t.Fatalf("reopen = %v", err)
	}
	if rep := mustVerify(t, l); !rep.OK || rep.Head != 19 {
		t.Fatalf("Verify after reopen = %+v", rep)
	}
}

// A reader (audit tail, verify) before any broker started after the
// upgrade reads audit.db through a private copy, exactly as the buntdb
// version did, and changes nothing in the data dir.
func TestReadOnlyReadsLegacyLog(t *testing.T) {
	dir, v := v1Dir(t)
	opts := v1Options(dir, v)
	opts.ReadOnly = true
	before, _ := os.ReadFile(opts.Legacy)
	l, err := Open(opts)
	if err != nil {
		t.Fatalf("Open(v1, ReadOnly) = %v", err)
	}
	got := exportAll(t, l)
	want := v1Records(t)
	gj, _ := json.Marshal(got)
	wj, _ := json.Marshal(want)
	if !bytes.Equal(gj, wj) {
		t.Fatalf("read-only records of audit.db =\n%s\nwant\n%s", gj, wj)
	}
	if rep := mustVerify(t, l); !rep.OK || rep.Head != 17 {
		t.Fatalf("Verify(read-only audit.db) = %+v, want ok at head 17", rep)
	}
	l.Close()
	after, _ := os.ReadFile(opts.Legacy)
	if !bytes.Equal(before, after) {
		t.Fatalf("a read-only open changed audit.db")
	}
	if _, err := os.Stat(opts.Path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a read-only open created %s", opts.Path)
	}
}

// A crash at any step of the migration leaves audit.db authoritative: the
// next Open migrates again, from it.
func TestMigrationCrashLeavesOldFileAuthoritative(t *testing.T) {
	tests := map[string]func(t *testing.T, l *Log, opts Options){
		"while building the new file": func(t *testing.T, l *Log, opts Options) {
			if err := l.copyLegacy(opts.Legacy, opts.Path+".migrating", true); err != nil {
				t.Fatal(err)
			}
			// Cut it short, as a crash mid-copy would.
			os.Truncate(opts.Path+".migrating", 4096)
		},
		"after the new file took its name": func(t *testing.T, l *Log, opts Options) {
			if err := l.copyLegacy(opts.Legacy, opts.Path, true); err != nil {
				t.Fatal(err)
			}
		},
	}
	for name, crash := range tests {
		t.Run(name, func(t *testing.T) {
			dir, v := v1Dir(t)
			opts := v1Options(dir, v)
			crash(t, &Log{keyed: newMACKey(opts.Key)}, opts)
			l, err := Open(opts)
			if err != nil {
				t.Fatalf("Open after a crashed migration = %v", err)
			}
			defer l.Close()
			if rep := mustVerify(t, l); !rep.OK || rep.Head != 18 {
				t.Fatalf("Verify = %+v, want the migrated chain at head 18", rep)
			}
			if _, err := os.Stat(opts.Path + ".migrating"); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("the partial file is left: %v", err)
			}
		})
	}
}

// A log with both files and no unfinished migration is not guessed at.
func TestMigrationRefusesTwoLogs(t *testing.T) {
	dir, v := v1Dir(t)
	opts := v1Options(dir, v)
	l, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	if err := os.Rename(opts.Legacy+".migrated", opts.Legacy); err != nil {
		t.Fatal(err)
	}
	if l, err := Open(opts); err == nil || !strings.Contains(err.Error(), "both") {
		if l != nil {
			l.Close()
		}
		t.Fatalf("Open with audit.db beside a live audit.sqlite = %v, want a refusal naming both", err)
	}
}

// An old log that does not verify is not migrated: the start is refused
// and audit.db stays as it is, for audit verify to show what is wrong.
func TestMigrationRefusesTamperedLegacyLog(t *testing.T) {
	dir, v := v1Dir(t)
	opts := v1Options(dir, v)
	db, err := buntdb.Open(opts.Legacy)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *buntdb.Tx) error {
		key := "e:00000000000000000013"
		val, err := tx.Get(key)
		if err != nil {
			return err
		}
		_, _, err = tx.Set(key, strings.Replace(val, `"decision":"error"`, `"decision":"allow"`, 1), nil)
		return err
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(opts.Legacy)
	if l, err := Open(opts); !errors.Is(err, ErrTampered) {
		if l != nil {
			l.Close()
		}
		t.Fatalf("Open over a tampered audit.db = %v, want ErrTampered", err)
	}
	after, _ := os.ReadFile(opts.Legacy)
	if !bytes.Equal(before, after) {
		t.Fatalf("a refused migration changed audit.db")
	}
	for _, p := range []string{opts.Path, opts.Path + ".migrating"} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("a refused migration left %s", p)
		}
	}
	ro := opts
	ro.ReadOnly = true
	l, err := Open(ro)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if rep := mustVerify(t, l); rep.OK || rep.Problems[0].Seq != 13 || rep.Problems[0].Kind != ProblemEdited {
		t.Fatalf("Verify(tampered audit.db) = %+v, want entry 13 edited", rep)
	}
}
