package audit

import (
	"context"
	"path/filepath"
	"testing"
)

// TestReadOnlyReaderSeesWriterCallsRunning: another process's read-only
// view of a call without an outcome says running while the writer lives and
// interrupted once it is gone.
func TestReadOnlyReaderSeesWriterCallsRunning(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.db")
	cp := newMemCheckpoint()
	w, err := Open(Options{Path: path, Key: testKey, Checkpoint: cp})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := w.Begin(context.Background(), Record{Session: "s", Tool: "gh", Decision: Allow}); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		alive func() bool
		want  Decision
	}{
		"writer alive": {func() bool { return true }, Running},
		"writer gone":  {func() bool { return false }, Interrupted},
		"not known":    {nil, Interrupted},
	} {
		t.Run(name, func(t *testing.T) {
			r, err := Open(Options{Path: path, Key: testKey, Checkpoint: cp, ReadOnly: true, WriterAlive: tc.alive})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			recs, err := r.Query(Filter{})
			if err != nil || len(recs) != 1 || recs[0].Decision != tc.want {
				t.Fatalf("read-only Query = %+v, %v; want one record %s", recs, err, tc.want)
			}
			if got, err := r.Get(1); err != nil || got.Decision != tc.want {
				t.Fatalf("read-only Get(1) = %+v, %v; want %s", got, err, tc.want)
			}
			if recs, err := r.Query(Filter{Decision: tc.want}); err != nil || len(recs) != 1 {
				t.Fatalf("Query(decision %s) = %d records, %v; want 1", tc.want, len(recs), err)
			}
		})
	}
}
