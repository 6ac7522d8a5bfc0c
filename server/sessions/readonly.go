package sessions

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/tidwall/buntdb"
)

// ErrNoStore is returned by Snapshot when the data dir has no session
// store: no phantom-token session was ever started there.
var ErrNoStore = errors.New("sessions: no session store")

// Snapshot returns every session stored at path, oldest first, as List
// does with key (records that fail their MAC come back Tampered), read
// from a copy of the file in memory: the file is never opened by buntdb
// nor written, so it is safe beside a broker that owns it (it reads the
// sessions as of the last write the broker made).
func Snapshot(path string, key []byte) ([]Record, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w at %s", ErrNoStore, path)
	}
	if err != nil {
		return nil, fmt.Errorf("sessions: open %s: %w", path, err)
	}
	defer f.Close()
	mem, err := buntdb.Open(":memory:")
	if err != nil {
		return nil, fmt.Errorf("sessions: open %s: %w", path, err)
	}
	// A broker writing the file's tail as it is read leaves a record half
	// written; buntdb stops at it, and what came before is what was
	// committed.
	if err := mem.Load(bufio.NewReader(f)); err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		mem.Close()
		return nil, fmt.Errorf("sessions: read %s: %w", path, err)
	}
	s := &Store{db: mem, key: key}
	defer s.Close()
	return s.List()
}
