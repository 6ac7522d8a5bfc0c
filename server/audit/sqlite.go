package audit

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/gofrs/flock"
	"modernc.org/sqlite"
)

// schemaVersion is PRAGMA user_version of a file this package creates:
// the schema, then every migration.
var schemaVersion = 1 + len(migrations)

// schema is the SQLite schema. entries holds each sealed entry as it was
// MAC'd (entry) under its seq, and the columns the indexes need, generated
// from that JSON, so no column can say what the MAC'd entry does not.
// SQLite computes every generated column on insert, so the table has only
// those; the calls view has every column people filter on.
var schema = []string{
	`CREATE TABLE entries (
	seq INTEGER PRIMARY KEY,
	entry TEXT NOT NULL,
	type TEXT AS (json_extract(entry, '$.type')),
	"of" INTEGER AS (json_extract(entry, '$.of')),
	time TEXT AS (json_extract(entry, '$.time')),
	session TEXT AS (json_extract(entry, '$.session')),
	tool TEXT AS (json_extract(entry, '$.tool')),
	decision TEXT AS (json_extract(entry, '$.decision')),
	credential TEXT AS (json_extract(entry, '$.credential'))
) STRICT`,
	// Calls (not outcomes) by what people filter on; calls and outcomes
	// (not intents, which are all allow) by decision; outcomes by the
	// intent they complete. SQLite appends the rowid (seq) to each key, so
	// one value's calls come in seq order. Each index is as narrow as its
	// queries allow: every one is written on the call path.
	`CREATE INDEX entries_session ON entries(session) WHERE type <> 'outcome'`,
	`CREATE INDEX entries_tool ON entries(tool) WHERE type <> 'outcome'`,
	`CREATE INDEX entries_time ON entries(time) WHERE type <> 'outcome'`,
	`CREATE INDEX entries_credential ON entries(credential) WHERE type <> 'outcome'`,
	`CREATE INDEX entries_decision ON entries(decision) WHERE type <> 'intent'`,
	`CREATE INDEX entries_of ON entries("of") WHERE "of" IS NOT NULL`,
	`CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT`,
	// One row per call, as audit tail shows it: an intent merged with its
	// outcome. A call whose outcome is not written reads running (after a
	// crash, until the next start records it interrupted).
	`CREATE VIEW calls AS
SELECT c.seq, c.time, c.session,
	json_extract(c.entry, '$.scope') AS scope,
	json_extract(c.entry, '$.client') AS client,
	c.tool,
	json_extract(c.entry, '$.kind') AS kind,
	json_extract(c.entry, '$.method') AS method,
	json_extract(c.entry, '$.host') AS host,
	json_extract(c.entry, '$.path') AS path,
	json_extract(c.entry, '$.bucket') AS bucket,
	json_extract(c.entry, '$.action') AS action,
	json_extract(c.entry, '$.key') AS "key",
	CASE WHEN c.type <> 'intent' THEN c.decision WHEN o.seq IS NULL THEN 'running' ELSE o.decision END AS decision,
	json_extract(coalesce(o.entry, c.entry), '$.code') AS code,
	json_extract(coalesce(o.entry, c.entry), '$.reason') AS reason,
	json_extract(c.entry, '$.grant') AS "grant",
	c.credential,
	json_extract(c.entry, '$.credential_version') AS credential_version,
	json_extract(coalesce(o.entry, c.entry), '$.status') AS status,
	json_extract(coalesce(o.entry, c.entry), '$.bytes_in') AS bytes_in,
	json_extract(coalesce(o.entry, c.entry), '$.bytes_out') AS bytes_out,
	json_extract(coalesce(o.entry, c.entry), '$.duration_ns') AS duration_ns,
	round(json_extract(coalesce(o.entry, c.entry), '$.duration_ns') / 1e6, 3) AS duration_ms,
	json_extract(coalesce(o.entry, c.entry), '$.scrubbed') AS scrubbed,
	c.type AS type,
	o.seq AS outcome_seq,
	json_extract(coalesce(o.entry, c.entry), '$.mac') AS mac
FROM entries c LEFT JOIN entries o ON o."of" = c.seq AND o.type = 'outcome'
WHERE c.type <> 'outcome'`,
}

// migrations upgrade a file of version i+1 to version i+2. A new file gets
// the schema and then every migration, so a new file and an upgraded one
// hold the same schema, down to the text SQLite keeps of each object.
var migrations = [][]string{
	// 1 → 2: what reports aggregate (Log.Usage): calls by credential,
	// scope, session and the grant that allowed them, in time, read from
	// the index alone.
	{
		`ALTER TABLE entries ADD COLUMN scope TEXT AS (json_extract(entry, '$.scope'))`,
		`ALTER TABLE entries ADD COLUMN "grant" TEXT AS (json_extract(entry, '$.grant'))`,
		`CREATE INDEX entries_usage ON entries(credential, scope, session, "grant", time) WHERE type <> 'outcome'`,
	},
}

// SQLite result codes (the low byte of an extended code) this package names.
const (
	sqliteReadOnly = 8
	sqliteCorrupt  = 11
	sqliteFull     = 13
	sqliteCantOpen = 14
	sqliteNotADB   = 26
)

// syncFull makes every commit fsync the WAL (synchronous=FULL) instead of
// the syncer fsyncing it once for the batches waiting. It is for the
// benchmark that compares the two (KEYHOLE_AUDIT_SYNC=full); explicit
// fsyncs were measured cheaper (see BENCHMARKS.md).
var syncFull = os.Getenv("KEYHOLE_AUDIT_SYNC") == "full"

// sqliteStore is the store in an SQLite file: one writer connection (nil
// for a read-only store) and a pool of read-only connections.
type sqliteStore struct {
	path string
	w    *sql.Conn // the one writer connection
	wdb  *sql.DB
	r    *sql.DB // read-only connections
	lock *flock.Flock

	// version is the file's schema version (readers take older ones).
	version int

	wmu  sync.Mutex // one transaction at a time on the writer connection
	stmt writerStmts

	walMu   sync.Mutex
	wal     *os.File    // own descriptor of the WAL, for fsync
	walInfo os.FileInfo // of wal, to tell whether the path still names it

	// ck is the connection background checkpoints run on; ckNow asks
	// for one, ckDone is closed when the checkpointer has stopped.
	ck      *sql.DB
	ckNow   chan struct{}
	ckStop  chan struct{}
	ckDone  chan struct{}
	ckRows  int // rows appended since the last request (under wmu)
	ckCount atomic.Int64

	// j is the journal calls' entries reach first (journal.go), nil
	// until the Log starts it; walDirty is set by a transaction written
	// to SQLite directly, whose WAL the next sync must fsync.
	j        *journal
	walDirty atomic.Bool
	// seen is, in a read-only store, the seq of the last journal entry
	// a read found in SQLite (awaitJournal).
	seenMu sync.Mutex
	seen   uint64
	// noLockWait: a reader moving a dead writer's journal does not wait
	// for the writer's lock.
	noLockWait bool
}

var _ store = (*sqliteStore)(nil)

// WAL checkpoints copy the WAL's pages into the database file and fsync
// both. SQLite runs them in the committing connection once the WAL holds
// wal_autocheckpoint pages (1,000 by default): the writer, and every
// caller waiting for it, stopped for two fsyncs and the copying about
// every 110 calls — in the p99 of a call. So a connection of their own
// checkpoints in the background (PASSIVE: never blocking the writer or
// readers) every checkpointRows appended rows. A WAL is restarted from
// its start only by a writer that finds it wholly copied, which under
// steady writes a background checkpoint never leaves it; so the writer's
// own checkpoint stays as the backstop at walBackstop pages (16 MiB),
// where it finds almost everything copied already: the WAL file stays at
// about that size, rewritten in place, and a call pays the backstop's
// fsyncs about once every thousand calls.
const (
	walBackstop    = 4096
	checkpointRows = 256
)

// dsn is a file: URI for path with the given parameters.
func dsn(path string, params ...string) string {
	u := url.URL{Path: path}
	return "file:" + u.EscapedPath() + "?" + strings.Join(params, "&")
}

// openSQLite opens the file at path. A writable store creates the file
// (0600) and its schema if needed, and takes the writer's lock; a
// read-only one requires the file to exist.
func openSQLite(path string, readOnly bool) (*sqliteStore, error) {
	s := &sqliteStore{path: path}
	if readOnly {
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("audit: open %s: %w", path, err)
		}
		moveDeadJournal(path)
	} else {
		if err := s.openWriter(); err != nil {
			s.close()
			return nil, err
		}
	}
	r, err := sql.Open("sqlite", dsn(path, "mode=ro", "_pragma=busy_timeout(10000)", "_pragma=query_only(1)"))
	if err != nil {
		s.close()
		return nil, fmt.Errorf("audit: open %s: %w", path, err)
	}
	r.SetMaxOpenConns(4)
	s.r = r
	if err := s.checkReadable(); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

func (s *sqliteStore) openWriter() error {
	// SQLite creates files 0644 and gives the WAL the database's mode; the
	// log holds arguments, so create it 0600 first.
	f, err := os.OpenFile(s.path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("audit: open %s: %w", s.path, err)
	}
	f.Close()
	wait := lockWait
	if s.noLockWait {
		wait = 0
	}
	if s.lock, err = lockWriter(s.path, wait); err != nil {
		return err
	}
	sync := "_pragma=synchronous(NORMAL)"
	if syncFull {
		sync = "_pragma=synchronous(FULL)"
	}
	db, err := sql.Open("sqlite", dsn(s.path, "_pragma=busy_timeout(10000)", sync, fmt.Sprintf("_pragma=wal_autocheckpoint(%d)", walBackstop)))
	if err != nil {
		return fmt.Errorf("audit: open %s: %w", s.path, err)
	}
	db.SetMaxOpenConns(1)
	s.wdb = db
	if s.w, err = db.Conn(context.Background()); err != nil {
		return s.openError(err)
	}
	if err := s.ensureSchema(); err != nil {
		return err
	}
	if err := s.stmt.prepare(s.w); err != nil {
		return s.openError(err)
	}
	if err := s.replayJournal(); err != nil {
		return err
	}
	if !syncFull {
		if s.wal, err = os.OpenFile(s.path+"-wal", os.O_RDWR|os.O_CREATE, 0o600); err != nil {
			return fmt.Errorf("audit: open %s-wal: %w", s.path, err)
		}
		if s.walInfo, err = s.wal.Stat(); err != nil {
			return fmt.Errorf("audit: open %s-wal: %w", s.path, err)
		}
	}
	ck, err := sql.Open("sqlite", dsn(s.path, "_pragma=busy_timeout(10000)", sync))
	if err != nil {
		return fmt.Errorf("audit: open %s: %w", s.path, err)
	}
	ck.SetMaxOpenConns(1)
	s.ck = ck
	s.ckNow, s.ckStop, s.ckDone = make(chan struct{}, 1), make(chan struct{}), make(chan struct{})
	go s.checkpointer()
	return nil
}

// checkpointer runs a PASSIVE WAL checkpoint each time one is asked for,
// until the store closes. A checkpoint that fails or cannot finish
// (readers on old snapshots) leaves the WAL longer; the next one, or the
// writer's backstop, catches up.
func (s *sqliteStore) checkpointer() {
	defer close(s.ckDone)
	for {
		select {
		case <-s.ckStop:
			return
		case <-s.ckNow:
		}
		if _, err := s.ck.Exec(`PRAGMA wal_checkpoint(PASSIVE)`); err == nil {
			s.ckCount.Add(1)
		}
	}
}

// noteRows counts appended rows and asks for a checkpoint every
// checkpointRows. s.wmu is held.
func (s *sqliteStore) noteRows(n int) {
	if s.ckNow == nil {
		return
	}
	if s.ckRows += n; s.ckRows < checkpointRows {
		return
	}
	s.ckRows = 0
	select {
	case s.ckNow <- struct{}{}:
	default: // one is pending
	}
}

// openError names what an error met while opening the file means.
func (s *sqliteStore) openError(err error) error {
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff {
		case sqliteNotADB:
			return fmt.Errorf("audit: %s is not an SQLite database (restore it from a backup, or move it away to start a new log): %w", s.path, err)
		case sqliteCorrupt:
			return fmt.Errorf("audit: %s is damaged or truncated (restore it from a backup): %w", s.path, err)
		case sqliteReadOnly, sqliteCantOpen:
			return fmt.Errorf("audit: %s cannot be written (is the data dir read-only?): %w", s.path, err)
		}
	}
	return fmt.Errorf("audit: open %s: %w", s.path, err)
}

// ensureSchema creates the schema in an empty file, and refuses a file
// whose schema is not one this package wrote.
func (s *sqliteStore) ensureSchema() error {
	ctx := context.Background()
	var version, objects int
	if err := s.w.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&version); err != nil {
		return s.openError(err)
	}
	if err := s.w.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master`).Scan(&objects); err != nil {
		return s.openError(err)
	}
	if version > schemaVersion || version == 0 && objects != 0 {
		return fmt.Errorf("audit: %s is not an audit log this keyhole wrote (schema version %d with %d objects, want version %d)", s.path, version, objects, schemaVersion)
	}
	// Only a file that is ours, or empty, is switched to WAL.
	var mode string
	if err := s.w.QueryRowContext(ctx, `PRAGMA journal_mode = WAL`).Scan(&mode); err != nil {
		return s.openError(err)
	}
	if mode != "wal" {
		return fmt.Errorf("audit: %s: journal mode is %q, not WAL", s.path, mode)
	}
	if version == schemaVersion {
		s.version = version
		return nil
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return s.openError(err)
	}
	defer tx.Rollback()
	// A new file gets the schema, an older one the migrations it lacks
	// (creating an index over a long log takes a while, once).
	var stmts []string
	if version == 0 {
		stmts = schema
		version = 1
	}
	for _, m := range migrations[version-1:] {
		stmts = append(stmts, m...)
	}
	for _, stmt := range stmts {
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("audit: create schema in %s: %w", s.path, err)
		}
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf(`PRAGMA user_version = %d`, schemaVersion)); err != nil {
		return fmt.Errorf("audit: create schema in %s: %w", s.path, err)
	}
	if err := tx.Commit(); err != nil {
		return s.openError(err)
	}
	s.version = schemaVersion
	return nil
}

// checkReadable reads the schema version through a read-only connection,
// so a file that is not a database or is damaged fails at open.
func (s *sqliteStore) checkReadable() error {
	var version int
	if err := s.r.QueryRow(`PRAGMA user_version`).Scan(&version); err != nil {
		return s.openError(err)
	}
	// A reader takes a file of an earlier version as it is (the keyhole
	// writing it upgrades it when it next starts).
	if version < 1 || version > schemaVersion {
		return fmt.Errorf("audit: %s is not an audit log this keyhole wrote (schema version %d, want %d)", s.path, version, schemaVersion)
	}
	s.version = version
	var n int
	if err := s.r.QueryRow(`SELECT count(*) FROM (SELECT seq FROM entries ORDER BY seq DESC LIMIT 1)`).Scan(&n); err != nil {
		return s.openError(err)
	}
	return nil
}

// writerStmts are the statements of the write path, prepared once on the
// writer connection: a transaction is BEGIN, the inserts, COMMIT, with no
// SQL parsed on the way.
type writerStmts struct {
	begin, commit, rollback, insert, setMeta, deleteTo *sql.Stmt
}

func (w *writerStmts) prepare(c *sql.Conn) error {
	ctx := context.Background()
	for _, p := range []struct {
		st  **sql.Stmt
		sql string
	}{
		{&w.begin, `BEGIN IMMEDIATE`},
		{&w.commit, `COMMIT`},
		{&w.rollback, `ROLLBACK`},
		{&w.insert, `INSERT INTO entries(seq, entry) VALUES (?, ?)`},
		{&w.setMeta, `INSERT INTO meta(name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value`},
		{&w.deleteTo, `DELETE FROM entries WHERE seq <= ?`},
	} {
		st, err := c.PrepareContext(ctx, p.sql)
		if err != nil {
			return err
		}
		*p.st = st
	}
	return nil
}

func (w *writerStmts) close() {
	for _, st := range []*sql.Stmt{w.begin, w.commit, w.rollback, w.insert, w.setMeta, w.deleteTo} {
		if st != nil {
			st.Close()
		}
	}
}

// write runs fn in one transaction on the writer connection.
func (s *sqliteStore) write(fn func(ctx context.Context) error) error {
	if s.w == nil {
		return ErrReadOnly
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	ctx := context.Background()
	if _, err := s.stmt.begin.ExecContext(ctx); err != nil {
		return s.writeError(err)
	}
	err := fn(ctx)
	if err == nil {
		if _, err = s.stmt.commit.ExecContext(ctx); err == nil {
			return nil
		}
	}
	// A failed statement or COMMIT leaves the transaction open (or SQLite
	// rolled it back already): either way nothing of it is in the file.
	s.stmt.rollback.ExecContext(ctx)
	return s.writeError(err)
}

// appendBatch appends entries alone to the journal once the Log has
// started it; anything else is one SQLite transaction, after the
// journal's entries.
func (s *sqliteStore) appendBatch(entries []row, meta map[string]string) error {
	if s.j != nil && len(meta) == 0 && len(entries) > 0 {
		return s.journalAppend(entries)
	}
	if err := s.flush(); err != nil {
		return err
	}
	s.walDirty.Store(true)
	return s.write(func(ctx context.Context) error {
		if err := s.insertRows(ctx, entries); err != nil {
			return err
		}
		for name, value := range meta {
			if _, err := s.stmt.setMeta.ExecContext(ctx, name, value); err != nil {
				return err
			}
		}
		return nil
	})
}

// insert writes entries in one transaction (the indexer's and a replay's).
func (s *sqliteStore) insert(entries []row) error {
	return s.write(func(ctx context.Context) error { return s.insertRows(ctx, entries) })
}

func (s *sqliteStore) insertRows(ctx context.Context, entries []row) error {
	for _, e := range entries {
		if _, err := s.stmt.insert.ExecContext(ctx, int64(e.Seq), e.Value); err != nil {
			return err
		}
	}
	s.noteRows(len(entries))
	return nil
}

// caughtUp waits, before a read, for the journal's entries to be in
// SQLite, so a reader sees every entry appended: in the writer's process
// every one, in a read-only store those of a running writer. If the
// indexer failed, the read sees what SQLite holds.
func (s *sqliteStore) caughtUp() {
	switch {
	case s.j != nil:
		_ = s.flush()
	case s.w == nil:
		s.awaitJournal()
	}
}

// errFull marks a write SQLite had no room for. It is never the log's
// end: the writes fail closed until there is room again.
var errFull = errors.New("the disk is full")

// writeError names what an error met while writing means.
func (s *sqliteStore) writeError(err error) error {
	var se *sqlite.Error
	if errors.As(err, &se) && se.Code()&0xff == sqliteFull {
		return fmt.Errorf("audit: write %s: %w: %w", s.path, errFull, err)
	}
	return fmt.Errorf("audit: write %s: %w", s.path, err)
}

// sync makes durable every entry appendBatch returned from: the
// journal's, and the WAL's if anything was written to SQLite directly.
func (s *sqliteStore) sync() error {
	if j := s.j; j != nil {
		if err := datasync(j.f); err != nil {
			return fmt.Errorf("audit: fsync %s: %w", j.path, err)
		}
		if !s.walDirty.Load() {
			return nil
		}
	}
	return s.syncWAL()
}

// syncWAL fsyncs SQLite's WAL (synchronous=FULL: the commits did).
func (s *sqliteStore) syncWAL() error {
	if s.w == nil || syncFull {
		return nil
	}
	s.walDirty.Store(false)
	s.walMu.Lock()
	defer s.walMu.Unlock()
	// The WAL is the same file while the writer connection is open; if it
	// were ever replaced, fsync the new one.
	if fi, err := os.Stat(s.path + "-wal"); err == nil && !os.SameFile(fi, s.walInfo) {
		f, err := os.OpenFile(s.path+"-wal", os.O_RDWR, 0)
		if err != nil {
			return fmt.Errorf("audit: reopen %s-wal: %w", s.path, err)
		}
		mine, err := f.Stat()
		if err != nil {
			f.Close()
			return fmt.Errorf("audit: reopen %s-wal: %w", s.path, err)
		}
		s.wal.Close()
		s.wal, s.walInfo = f, mine
	}
	if err := datasync(s.wal); err != nil {
		return fmt.Errorf("audit: fsync %s-wal: %w", s.path, err)
	}
	return nil
}

func (s *sqliteStore) scanRow(q string, args ...any) (row, bool, error) {
	s.caughtUp()
	var seq int64
	var v string
	err := s.r.QueryRow(q, args...).Scan(&seq, &v)
	if errors.Is(err, sql.ErrNoRows) {
		return row{}, false, nil
	}
	if err != nil {
		return row{}, false, fmt.Errorf("audit: read %s: %w", s.path, err)
	}
	return row{Seq: uint64(seq), Value: v}, true, nil
}

func (s *sqliteStore) get(seq uint64) (row, bool, error) {
	return s.scanRow(`SELECT seq, entry FROM entries WHERE seq = ?`, int64(seq))
}

func (s *sqliteStore) outcome(intent uint64) (row, bool, error) {
	return s.scanRow(`SELECT seq, entry FROM entries WHERE "of" = ? AND type = 'outcome' ORDER BY seq LIMIT 1`, int64(intent))
}

func (s *sqliteStore) last() (row, bool, error) {
	return s.scanRow(`SELECT seq, entry FROM entries ORDER BY seq DESC LIMIT 1`)
}

// outcomeOfCall is the first outcome of call c.
const outcomeOfCall = `(SELECT o.entry FROM entries o WHERE o."of" = c.seq AND o.type = 'outcome' ORDER BY o.seq LIMIT 1)`

func (s *sqliteStore) calls(q callQuery) ([]callRow, error) {
	s.caughtUp()
	var where []string
	var args []any
	add := func(cond string, a ...any) {
		where = append(where, cond)
		args = append(args, a...)
	}
	add(`c.type <> 'outcome'`)
	for _, f := range []struct{ col, v string }{
		{"c.session", q.Session}, {"json_extract(c.entry, '$.scope')", q.Scope}, {"c.tool", q.Tool}, {"c.credential", q.Credential},
	} {
		if f.v != "" {
			add(f.col+" = ?", f.v)
		}
	}
	if !q.Since.IsZero() {
		add(`c.time >= ?`, formatTime(q.Since))
	}
	if !q.Until.IsZero() {
		add(`c.time < ?`, formatTime(q.Until))
	}
	if q.After > 0 {
		add(`c.seq > ?`, int64(q.After))
	}
	if q.Before > 0 {
		add(`c.seq < ?`, int64(q.Before))
	}
	switch q.Decision {
	case "":
	case Running, Interrupted:
		add(`c.type = 'intent' AND NOT EXISTS (SELECT 1 FROM entries o WHERE o."of" = c.seq AND o.type = 'outcome' AND o.decision <> 'interrupted')`)
	default:
		add(`((c.type <> 'intent' AND c.decision = ?) OR (c.type = 'intent' AND EXISTS (SELECT 1 FROM entries o WHERE o."of" = c.seq AND o.type = 'outcome' AND o.decision = ?)))`, string(q.Decision), string(q.Decision))
	}
	order := "ASC"
	if q.Desc {
		order = "DESC"
	}
	query := `SELECT c.seq, c.entry, coalesce(` + outcomeOfCall + `, '') FROM entries c WHERE ` +
		strings.Join(where, " AND ") + ` ORDER BY c.seq ` + order + ` LIMIT ?`
	args = append(args, q.Limit)
	rows, err := s.r.Query(query, args...)
	if err != nil {
		return nil, fmt.Errorf("audit: read %s: %w", s.path, err)
	}
	defer rows.Close()
	var out []callRow
	for rows.Next() {
		var c callRow
		var seq int64
		if err := rows.Scan(&seq, &c.First.Value, &c.Outcome.Value); err != nil {
			return nil, fmt.Errorf("audit: read %s: %w", s.path, err)
		}
		c.First.Seq = uint64(seq)
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("audit: read %s: %w", s.path, err)
	}
	return out, nil
}

func (s *sqliteStore) rows(q string, args ...any) ([]row, error) {
	s.caughtUp()
	rs, err := s.r.Query(q, args...)
	if err != nil {
		return nil, fmt.Errorf("audit: read %s: %w", s.path, err)
	}
	defer rs.Close()
	var out []row
	for rs.Next() {
		var seq int64
		var v string
		if err := rs.Scan(&seq, &v); err != nil {
			return nil, fmt.Errorf("audit: read %s: %w", s.path, err)
		}
		out = append(out, row{Seq: uint64(seq), Value: v})
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("audit: read %s: %w", s.path, err)
	}
	return out, nil
}

func (s *sqliteStore) entries(after uint64, limit int) ([]row, error) {
	return s.rows(`SELECT seq, entry FROM entries WHERE seq > ? ORDER BY seq LIMIT ?`, int64(after), limit)
}

func (s *sqliteStore) openIntents(after uint64, limit int) ([]row, error) {
	return s.rows(`SELECT i.seq, i.entry FROM entries i WHERE i.seq > ? AND i.type = 'intent'
		AND NOT EXISTS (SELECT 1 FROM entries o WHERE o."of" = i.seq AND o.type = 'outcome')
		ORDER BY i.seq LIMIT ?`, int64(after), limit)
}

func (s *sqliteStore) deletePrefix(through uint64, meta map[string]string) (int, error) {
	if err := s.flush(); err != nil {
		return 0, err
	}
	s.walDirty.Store(true)
	var n int64
	err := s.write(func(ctx context.Context) error {
		res, err := s.stmt.deleteTo.ExecContext(ctx, int64(through))
		if err != nil {
			return err
		}
		n, _ = res.RowsAffected()
		for name, value := range meta {
			if _, err := s.stmt.setMeta.ExecContext(ctx, name, value); err != nil {
				return err
			}
		}
		return nil
	})
	return int(n), err
}

func (s *sqliteStore) meta(name string) (string, bool, error) {
	s.caughtUp()
	var v string
	err := s.r.QueryRow(`SELECT value FROM meta WHERE name = ?`, name).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("audit: read %s: %w", s.path, err)
	}
	return v, true, nil
}

func (s *sqliteStore) setMeta(name, value string) error {
	return s.appendBatch(nil, map[string]string{name: value})
}

func (s *sqliteStore) schemaProblems() ([]string, error) {
	want, err := schemaOf(s.version)
	if err != nil {
		return nil, fmt.Errorf("audit: read %s: %w", s.path, err)
	}
	rows, err := s.r.Query(`SELECT type, name, coalesce(sql, '') FROM sqlite_master`)
	if err != nil {
		return nil, fmt.Errorf("audit: read %s: %w", s.path, err)
	}
	defer rows.Close()
	var problems []string
	seen := map[string]bool{}
	for rows.Next() {
		var typ, name, text string
		if err := rows.Scan(&typ, &name, &text); err != nil {
			return nil, fmt.Errorf("audit: read %s: %w", s.path, err)
		}
		if strings.HasPrefix(name, "sqlite_autoindex_") {
			continue
		}
		seen[name] = true
		w, ok := want[name]
		switch {
		case !ok:
			problems = append(problems, fmt.Sprintf("%s %s is not one keyhole creates", typ, name))
		case normalizeSQL(text) != w:
			problems = append(problems, fmt.Sprintf("%s %s was altered", typ, name))
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("audit: read %s: %w", s.path, err)
	}
	for name := range want {
		if !seen[name] {
			problems = append(problems, fmt.Sprintf("%s is missing", name))
		}
	}
	return problems, nil
}

func normalizeSQL(s string) string { return strings.Join(strings.Fields(s), " ") }

// schemas caches schemaOf.
var schemas sync.Map // int → map[string]string

// schemaOf returns the objects of a file of the given version, each name
// with the normalized text SQLite keeps of it, as this package creates
// them: the schema and the version's migrations run in an in-memory
// database (an ALTER TABLE rewrites the table's text its own way).
func schemaOf(version int) (map[string]string, error) {
	if v, ok := schemas.Load(version); ok {
		return v.(map[string]string), nil
	}
	if version < 1 || version > schemaVersion {
		return nil, fmt.Errorf("no schema version %d", version)
	}
	db, err := sql.Open("sqlite", ":memory:")
	if err != nil {
		return nil, err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	stmts := slices.Clone(schema)
	for _, m := range migrations[:version-1] {
		stmts = append(stmts, m...)
	}
	for _, stmt := range stmts {
		if _, err := db.Exec(stmt); err != nil {
			return nil, fmt.Errorf("schema version %d: %w", version, err)
		}
	}
	rows, err := db.Query(`SELECT name, coalesce(sql, '') FROM sqlite_master`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	want := map[string]string{}
	for rows.Next() {
		var name, text string
		if err := rows.Scan(&name, &text); err != nil {
			return nil, err
		}
		if !strings.HasPrefix(name, "sqlite_autoindex_") {
			want[name] = normalizeSQL(text)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	schemas.Store(version, want)
	return want, nil
}

func (s *sqliteStore) close() error {
	var errs []error
	errs = append(errs, s.closeJournal())
	if s.ck != nil {
		close(s.ckStop)
		<-s.ckDone
		errs = append(errs, s.ck.Close())
		s.ck = nil
	}
	if s.r != nil {
		errs = append(errs, s.r.Close())
	}
	s.stmt.close()
	if s.w != nil {
		errs = append(errs, s.w.Close())
	}
	if s.wdb != nil {
		errs = append(errs, s.wdb.Close())
	}
	if s.wal != nil {
		s.wal.Close()
	}
	if s.lock != nil {
		s.lock.Close()
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("audit: close %s: %w", s.path, err)
	}
	return nil
}
