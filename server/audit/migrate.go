package audit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/tidwall/buntdb"
)

// The buntdb file of earlier versions: entries under "e:" + a 20-digit
// seq (so key order is seq order), the prune anchor under "anchor".
// Everything else in it (index keys, pending markers) was derived.
const (
	legacyEntries    = "e:"
	legacyEntriesEnd = "e;"
	legacyAnchor     = "anchor"
)

// migrateBatch is how many entries one migration transaction copies.
const migrateBatch = 2048

// migrateIfNeeded migrates the legacy buntdb log into path when only the
// legacy file exists, or when path holds an interrupted migration. It
// builds the new file beside path, verifies its chain (same seqs, same
// MACs), moves it to path, and only then renames legacy to
// legacy+".migrated". Until that rename the legacy file is authoritative:
// a crash at any step leaves it in place, and the next Open migrates again.
func (l *Log) migrateIfNeeded(path, legacy string) error {
	if _, err := os.Stat(legacy); errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("audit: migrate %s: %w", legacy, err)
	}
	if _, err := os.Stat(path); err == nil {
		pending, err := migrationPending(path)
		if err != nil {
			return err
		}
		if !pending {
			return fmt.Errorf("audit: both %s and %s exist: %s is the log; move the other away", path, legacy, path)
		}
		// The crash came after the new file took its name and before the
		// old one was renamed: nothing was written to the new file since.
		if err := removeSQLite(path); err != nil {
			return err
		}
	}
	tmp := path + ".migrating"
	if err := removeSQLite(tmp); err != nil {
		return err
	}
	if err := l.copyLegacy(legacy, tmp, true); err != nil {
		removeSQLite(tmp)
		return err
	}
	dir := filepath.Dir(path)
	if err := syncFile(tmp); err != nil {
		removeSQLite(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		removeSQLite(tmp)
		return fmt.Errorf("audit: migrate: %w", err)
	}
	os.Remove(tmp + ".lock")
	if err := syncDir(dir); err != nil {
		return err
	}
	if err := os.Rename(legacy, legacy+".migrated"); err != nil {
		return fmt.Errorf("audit: migrate: %w", err)
	}
	if err := syncDir(dir); err != nil {
		return err
	}
	// The new file is now the log; it stops saying so once this is durable.
	st, err := openSQLite(path, false)
	if err != nil {
		return err
	}
	err = st.setMeta(metaMigration, "")
	if err == nil {
		err = st.sync()
	}
	return errors.Join(err, st.close())
}

// migrationPending reports whether the file at path was left by a
// migration that did not finish.
func migrationPending(path string) (bool, error) {
	st, err := openSQLite(path, true)
	if err != nil {
		return false, err
	}
	defer st.close()
	v, ok, err := st.meta(metaMigration)
	return ok && v != "", err
}

// copyLegacy copies every entry and the prune anchor of the buntdb file at
// legacy, as they are, into a new SQLite file at dst. With strict, it
// verifies the copied chain and refuses (ErrTampered) one that does not
// verify; without, it copies what can be copied, for Verify to report on.
func (l *Log) copyLegacy(legacy, dst string, strict bool) error {
	f, err := os.Open(legacy)
	if err != nil {
		return fmt.Errorf("audit: migrate %s: %w", legacy, err)
	}
	defer f.Close()
	// The old format is read the way the old code read it: loaded whole
	// (once), up to the last complete command.
	db, err := buntdb.Open(":memory:")
	if err != nil {
		return fmt.Errorf("audit: migrate %s: %w", legacy, err)
	}
	defer db.Close()
	if err := db.Load(f); err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("audit: migrate %s: it is not a keyhole audit log (%v)", legacy, err)
	}
	st, err := openSQLite(dst, false)
	if err != nil {
		return err
	}
	defer st.close()
	meta := map[string]string{metaMigration: legacy}
	var anchorValue string
	err = db.View(func(tx *buntdb.Tx) error {
		if a, err := tx.Get(legacyAnchor); err == nil {
			anchorValue = a
			meta[metaAnchor] = a
		}
		var batch []row
		var ferr error
		flush := func() bool {
			if ferr = st.appendBatch(batch, meta); ferr != nil && !strict {
				// Copy entry by entry, leaving out what SQLite refuses
				// (a value that is not JSON): Verify reports it missing.
				ferr = nil
				for _, r := range batch {
					st.appendBatch([]row{r}, meta)
				}
			}
			batch, meta = batch[:0], nil
			return ferr == nil
		}
		err := tx.AscendRange("", legacyEntries, legacyEntriesEnd, func(k, v string) bool {
			seq, ok := legacySeq(k)
			if !ok {
				if strict {
					ferr = fmt.Errorf("%w: %s holds an unexpected key %q", ErrTampered, legacy, k)
					return false
				}
				return true
			}
			batch = append(batch, row{Seq: seq, Value: v})
			return len(batch) < migrateBatch || flush()
		})
		if err == nil && ferr == nil && (len(batch) > 0 || meta != nil) {
			flush()
		}
		if ferr != nil {
			return ferr
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("audit: migrate %s: %w", legacy, err)
	}
	if err := st.sync(); err != nil {
		return err
	}
	if !strict {
		return nil
	}
	// Same seqs, same MACs: the copied chain must verify as the old did.
	m := &Log{st: st, keyed: l.keyed}
	var prev string
	var from uint64
	if anchorValue != "" {
		a, err := l.keyed.decodeLink(anchorDomain, []byte(anchorValue))
		if err != nil {
			return fmt.Errorf("%w: %s: the prune anchor does not verify; run keyhole audit verify", ErrTampered, legacy)
		}
		from, prev = a.Seq, a.MAC
	}
	rep, err := m.walk(context.Background(), from, prev, VerifyOptions{})
	if err != nil {
		return err
	}
	if !rep.OK {
		p := rep.Problems[0]
		return fmt.Errorf("%w: %s does not verify (entry %d: %s: %s), so it was not migrated; run keyhole audit verify", ErrTampered, legacy, p.Seq, p.Kind, p.Detail)
	}
	return nil
}

// legacySeq parses the seq of an "e:" key.
func legacySeq(key string) (uint64, bool) {
	if len(key) != len(legacyEntries)+20 {
		return 0, false
	}
	var n uint64
	for _, c := range key[len(legacyEntries):] {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	return n, true
}

// privateCopy copies a legacy log for a read-only Log into a private
// temporary directory, and returns the copy's path and what removes it.
func (l *Log) privateCopy(legacy string) (string, func(), error) {
	dir, err := os.MkdirTemp("", "keyhole-audit-")
	if err != nil {
		return "", nil, fmt.Errorf("audit: read %s: %w", legacy, err)
	}
	cleanup := func() { os.RemoveAll(dir) }
	path := filepath.Join(dir, "audit.sqlite")
	if err := l.copyLegacy(legacy, path, false); err != nil {
		cleanup()
		return "", nil, err
	}
	return path, cleanup, nil
}

// removeSQLite removes an SQLite file with its WAL, shared memory and lock.
func removeSQLite(path string) error {
	for _, p := range []string{path, path + "-wal", path + "-shm", path + ".lock"} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("audit: remove %s: %w", p, err)
		}
	}
	return nil
}

func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("audit: fsync %s: %w", path, err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("audit: fsync %s: %w", path, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("audit: fsync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("audit: fsync %s: %w", dir, err)
	}
	return nil
}
