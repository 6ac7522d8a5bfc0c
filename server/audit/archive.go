package audit

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// ArchiveCheckpointFile holds, in an archive directory, the checkpoint the
// vault kept for the archived log when it was archived.
const ArchiveCheckpointFile = "audit.checkpoint"

// ArchiveToolName is the tool name of the first record of a chain started
// by Archive.
const ArchiveToolName = "keyhole.audit.archive"

// Archived says what Archive moved aside.
type Archived struct {
	// Dir holds the old log and the checkpoint the vault kept for it.
	Dir string `json:"dir"`
	// Head is the last entry of the old log and HeadMAC its MAC: the
	// first record of the new chain names them.
	Head    uint64 `json:"head"`
	HeadMAC string `json:"head_mac"`
	// Report is what verifying the old log against its checkpoint found.
	Report Report `json:"report"`
	// Seq is the new chain's first record.
	Seq uint64 `json:"seq"`
}

// Archive is the way out of a log that does not match its checkpoint (or a
// log the operator wants to close): it verifies the log at opts.Path
// against its checkpoint, moves it into dir (created; it must not exist)
// with a copy of that checkpoint, so it stays verifiable with the same key
// (see FileCheckpoint), and starts a new chain at opts.Path whose first
// record (tool ArchiveToolName) names the archived head, its seq and MAC,
// and what verifying it found. The caller must own the log (no other
// writer). opts.Checkpoint must be set.
func Archive(opts Options, dir string) (Archived, error) {
	if opts.Checkpoint == nil {
		return Archived{}, errors.New("audit: archive needs the checkpoint")
	}
	ro := opts
	ro.ReadOnly, ro.Mirror, ro.Anchor = true, "", ""
	old, err := Open(ro)
	if err != nil {
		return Archived{}, err
	}
	a := Archived{Dir: dir, Head: old.head.Seq, HeadMAC: old.head.MAC}
	a.Report, err = old.Verify()
	old.Close()
	if err != nil {
		return a, err
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return a, fmt.Errorf("audit: archive: %w", err)
	}
	keyed := newMACKey(opts.Key)
	var n uint64 // the counter of the last checkpoint
	if data, err := opts.Checkpoint.GetRecord(CheckpointName); err == nil {
		if err := os.WriteFile(filepath.Join(dir, ArchiveCheckpointFile), data, 0o600); err != nil {
			return a, fmt.Errorf("audit: archive: %w", err)
		}
		if c, err := keyed.decodeCheckpoint(data); err == nil {
			n = c.N
		}
	}
	// The file and its WAL, shared memory and lock go together.
	for _, suffix := range []string{"", "-wal", "-shm", ".lock"} {
		from := opts.Path + suffix
		if _, err := os.Stat(from); err != nil {
			continue
		}
		if err := os.Rename(from, filepath.Join(dir, filepath.Base(from))); err != nil {
			return a, fmt.Errorf("audit: archive: %w", err)
		}
	}
	if err := startChain(opts, keyed, n+1); err != nil {
		return a, fmt.Errorf("audit: archive: start a new chain (the old log is in %s): %w", dir, err)
	}
	nl, err := Open(opts)
	if err != nil {
		return a, err
	}
	verdict := "verified intact"
	if !a.Report.OK {
		verdict = fmt.Sprintf("TAMPERED (%d problem(s); the first at seq %d: %s: %s)", len(a.Report.Problems), a.Report.Problems[0].Seq, a.Report.Problems[0].Kind, a.Report.Problems[0].Detail)
	}
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	a.Seq, err = nl.Write(context.Background(), Record{
		Time: now().UTC(), Session: "-", Scope: "-", Tool: ArchiveToolName, Decision: Allow,
		Reason: fmt.Sprintf("a new chain; the previous log (%d entries) is archived in %s, its head seq %d mac %s, %s", a.Report.Entries, dir, a.Head, a.HeadMAC, verdict),
	})
	return a, errors.Join(err, nl.Close())
}

// startChain creates an empty log at opts.Path whose checkpoint, in the
// vault and in the file, is the n-th: a chain of no entry that Open
// accepts, with the counter going on from the archived chain's.
func startChain(opts Options, keyed macKey, n uint64) error {
	st, err := openSQLite(opts.Path, false)
	if err != nil {
		return err
	}
	data := keyed.encodeCheckpoint(checkpoint{N: n, Time: formatTime(time.Now())})
	if err := opts.Checkpoint.PutRecord(CheckpointName, data); err != nil {
		st.close()
		return err
	}
	err = st.setMeta(metaCheckpoint, string(data))
	return errors.Join(err, st.close())
}

// FileCheckpoint is the checkpoint Archive kept beside an archived log,
// for verifying it: GetRecord reads the file; the archive is never
// written to.
type FileCheckpoint string

// GetRecord implements Checkpointer.
func (f FileCheckpoint) GetRecord(name string) ([]byte, error) {
	if name != CheckpointName {
		return nil, fs.ErrNotExist
	}
	return os.ReadFile(string(f))
}

// PutRecord implements Checkpointer: an archive is read-only.
func (f FileCheckpoint) PutRecord(string, []byte) error { return ErrReadOnly }

var _ Checkpointer = FileCheckpoint("")
