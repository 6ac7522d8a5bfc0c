package audit

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"
)

var testKey = bytes.Repeat([]byte{7}, 32)

// memCheckpoint is a Checkpointer kept in a map; failPut, if set, decides
// whether a put fails.
type memCheckpoint struct {
	mu      sync.Mutex
	records map[string][]byte
	failPut func() error
	// hold, if set, is waited on (without the lock) before each put;
	// held, if set, is closed when a put starts waiting on it.
	hold chan struct{}
	held chan struct{}
}

func newMemCheckpoint() *memCheckpoint { return &memCheckpoint{records: map[string][]byte{}} }

// refuse makes every put fail with err from now on; nil lets them succeed.
func (m *memCheckpoint) refuse(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err == nil {
		m.failPut = nil
		return
	}
	m.failPut = func() error { return err }
}

func (m *memCheckpoint) PutRecord(name string, data []byte) error {
	m.mu.Lock()
	hold, held := m.hold, m.held
	m.held = nil
	m.mu.Unlock()
	if hold != nil {
		if held != nil {
			close(held)
		}
		<-hold
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failPut != nil {
		if err := m.failPut(); err != nil {
			return err
		}
	}
	m.records[name] = append([]byte(nil), data...)
	return nil
}

func (m *memCheckpoint) GetRecord(name string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, ok := m.records[name]
	if !ok {
		return nil, fmt.Errorf("get %s: %w", name, fs.ErrNotExist)
	}
	return d, nil
}

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)

// fixture is a log under test with its file and checkpoint.
type fixture struct {
	t     testing.TB
	path  string
	cp    *memCheckpoint
	clock *clock
	opts  Options
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	f := &fixture{t: t, path: filepath.Join(t.TempDir(), "audit.sqlite"), cp: newMemCheckpoint(), clock: &clock{t: t0}}
	f.opts = Options{Path: f.path, Key: testKey, Checkpoint: f.cp, Now: f.clock.Now}
	return f
}

func (f *fixture) open() *Log {
	f.t.Helper()
	l, err := Open(f.opts)
	if err != nil {
		f.t.Fatalf("Open(%s) = %v", f.path, err)
	}
	return l
}

// openReadOnly opens the file for offline verification.
func (f *fixture) openReadOnly() *Log {
	f.t.Helper()
	o := f.opts
	o.ReadOnly = true
	l, err := Open(o)
	if err != nil {
		f.t.Fatalf("Open(%s, ReadOnly) = %v", f.path, err)
	}
	f.t.Cleanup(func() { l.Close() })
	return l
}

// tamper edits the closed log file directly with SQL, as someone with
// sqlite3 and write access to the data dir would.
func (f *fixture) tamper(fn func(db *sql.DB) error) {
	f.t.Helper()
	db, err := sql.Open("sqlite", "file:"+f.path)
	if err != nil {
		f.t.Fatalf("open raw sqlite: %v", err)
	}
	if err := fn(db); err != nil {
		f.t.Fatalf("tamper: %v", err)
	}
	if err := db.Close(); err != nil {
		f.t.Fatalf("close raw sqlite: %v", err)
	}
}

// rawEntry is the stored value of entry seq.
func rawEntry(t testing.TB, db *sql.DB, seq uint64) string {
	t.Helper()
	var v string
	if err := db.QueryRow(`SELECT entry FROM entries WHERE seq = ?`, seq).Scan(&v); err != nil {
		t.Fatalf("read entry %d: %v", seq, err)
	}
	return v
}

// setRaw stores value as entry seq, replacing what is there.
func setRaw(db *sql.DB, seq uint64, value string) error {
	_, err := db.Exec(`INSERT INTO entries(seq, entry) VALUES (?, ?) ON CONFLICT(seq) DO UPDATE SET entry = excluded.entry`, seq, value)
	return err
}

func deleteRaw(db *sql.DB, seq uint64) error {
	_, err := db.Exec(`DELETE FROM entries WHERE seq = ?`, seq)
	return err
}

func denied(session, tool string) Record {
	return Record{
		Session: session, Scope: "triage", Client: "claude-code/1.0", Tool: tool, Kind: "http",
		Method: "DELETE", Host: "api.github.com", Path: "/repos/acme/api",
		Args:     []byte(`{"method":"DELETE","path":"/repos/acme/api"}`),
		Decision: Deny, Code: "not_granted", Reason: "DELETE /repos/acme/api is not granted to scope triage",
	}
}

func allowed(session, tool string) Record {
	return Record{
		Session: session, Scope: "triage", Tool: tool, Kind: "http",
		Method: "GET", Host: "api.github.com", Path: "/repos/acme/api/issues", QueryNames: []string{"state"},
		Args:     []byte(`{"method":"GET","path":"/repos/acme/api/issues","query":{"state":"open"}}`),
		Decision: Allow, Grant: "triage[0]", Credential: "github_token", CredVersion: 2,
	}
}

func mustWrite(t testing.TB, l *Log, rec Record) uint64 {
	t.Helper()
	seq, err := l.Write(context.Background(), rec)
	if err != nil {
		t.Fatalf("Write(%s/%s) = %v", rec.Session, rec.Tool, err)
	}
	return seq
}

func mustCall(t testing.TB, l *Log, rec Record, status int) uint64 {
	t.Helper()
	p, err := l.Begin(context.Background(), rec)
	if err != nil {
		t.Fatalf("Begin(%s/%s) = %v", rec.Session, rec.Tool, err)
	}
	out := rec
	out.Status, out.BytesIn, out.BytesOut, out.Duration = status, 120, 2048, 15*time.Millisecond
	if err := p.Finish(context.Background(), out); err != nil {
		t.Fatalf("Finish(%d) = %v", p.Seq(), err)
	}
	return p.Seq()
}

func mustQuery(t testing.TB, l *Log, f Filter) []Record {
	t.Helper()
	recs, err := l.Query(f)
	if err != nil {
		t.Fatalf("Query(%+v) = %v", f, err)
	}
	return recs
}

func mustVerify(t testing.TB, l *Log) Report {
	t.Helper()
	rep, err := l.Verify()
	if err != nil {
		t.Fatalf("Verify() error = %v", err)
	}
	return rep
}

func seqs(recs []Record) []uint64 {
	out := make([]uint64, len(recs))
	for i, r := range recs {
		out[i] = r.Seq
	}
	return out
}

// asStored is s as encoding/json stores it: each byte of invalid UTF-8
// becomes U+FFFD.
func asStored(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			b.WriteRune(utf8.RuneError)
		} else {
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}
