// Package audit is keyhole's append-only, hash-chained, durable per-call
// audit log, kept in an SQLite file (audit.sqlite) behind a small store
// interface. It records; it decides nothing.
//
// # Entries and records
//
// The chain is over entries. Every entry has a sequence number (from 1, no
// gaps), the hex MAC of the entry before it (prev) and its own MAC:
// HMAC-SHA256, keyed by the 32-byte audit key, over the entry's canonical
// JSON encoding, which includes seq and prev. An entry is one of:
//
//   - call: a complete call that never went upstream (denied, or failed
//     before the upstream saw a byte). Written by [Log.Write].
//   - intent: an allowed call about to go upstream. Written by [Log.Begin],
//     which returns only after the entry is fsynced.
//   - outcome: the result of an intent, naming the intent's seq (of).
//     Written by [Pending.Finish]. On [Open], every intent that has no
//     outcome in the chain (the process died mid-call) gets an outcome with
//     decision "interrupted", as a new, chained entry.
//
// Readers ([Log.Query], [Log.Get], [Log.Stream], [Log.Follow],
// [Log.Export]) merge an intent and its outcome into one [Record], so every
// call reads as exactly one record. A record's Seq is the seq of the call's
// first entry; its Prev and MAC are those of the entry that completed it.
// An intent still in flight in this process (or, for a read-only Log, in
// the live process writing the file) reads as [Running]; one without an
// outcome that is not in flight reads as [Interrupted].
//
// # Storage
//
// The file holds one table of entries: seq, the sealed entry (its canonical
// JSON and MAC) and columns generated from that JSON for people to filter
// on, indexed by session, tool, time, decision, credential and the intent
// an outcome completes. Because the columns are generated from the MAC'd
// JSON, they cannot disagree with it; readers still decode the JSON and
// check every record against their filter, so what they show comes only
// from MAC'd entries. A view, calls, merges each intent with its outcome
// for `sqlite3 -readonly`.
//
// # Durability
//
// One writer goroutine seals whatever entries are queued and appends them
// together, in one write, to the journal beside the file (path +
// "-pending"); a syncer fdatasyncs the journal once for every batch
// waiting (group commit): Write and Finish return once their batch is
// written (in the OS's cache, so a killed process loses nothing); Begin
// returns once its batch is fsynced. An indexer moves the journal's
// entries into the SQLite file (WAL mode, one writer connection) a few
// milliseconds later, many to a transaction, off the callers' path; the
// next writable Open moves what a crash left in the journal, and so does
// a reader that finds a dead writer's journal (journal.go). A failed
// write or fsync of the journal makes the Log refuse every further write,
// since what reached the disk is unknown; reopen it. While SQLite refuses
// the journal's entries (a full disk) writes fail; the indexer retries,
// and writes succeed again once SQLite takes them (after an I/O error it
// may take a reopen; the journal keeps them meanwhile). Readers use their own read-only connections, never
// blocked by the writer; they first wait for the journal's entries to be
// in SQLite, so a reader sees every entry whose write has returned.
//
// # Tamper evidence
//
// At most every 100 ms while entries are written, and at Close, the
// newest head of the chain in the SQLite file, its WAL fsynced (seq and
// MAC, with a counter that grows by one with every checkpoint and the
// oldest intent still open, all MAC'd) is written through the [Checkpointer] into the vault, and a copy
// into the log file; with Options.Anchor it is also appended to a file
// kept outside the data dir. The checkpoint trails the head by up to that
// interval: a cut of only the entries written in it before a crash is not
// detected (the window), a deeper one is. A writable [Open] checks
// the head against the checkpoint and verifies the entries written after
// it; it refuses a log that is behind its checkpoint, a checkpoint that was
// removed, or a vault checkpoint older than the copy in the log
// ([ErrTampered]). [Log.Verify] walks the whole chain. [Log.Prune] deletes
// a prefix of the chain and stores a MAC'd anchor (seq and MAC of the last
// deleted entry), so the chain still verifies from the oldest kept entry.
// A copy of the whole data dir restored later is consistent with itself:
// only an anchor file kept elsewhere detects it.
//
// To inspect or verify a file offline (another process's log, a copy, a
// tampered file), open it with Options.ReadOnly: writes fail with
// ErrReadOnly, and nothing is written to the file but the entries a dead
// writer's journal holds (appended as that writer would have at its next
// start).
package audit

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Decision is what became of a call.
type Decision string

// Decisions. Allow, Deny and Error are given by the caller; Interrupted is
// written by Open for a call whose process died before its outcome was
// recorded; Running is how a reader sees a call still in flight.
const (
	Allow       Decision = "allow"
	Deny        Decision = "deny"
	Error       Decision = "error"
	Interrupted Decision = "interrupted"
	Running     Decision = "running"
)

// Record is one call as the audit log shows it.
type Record struct {
	Seq uint64 `json:"seq"`
	// Replica is the broker whose chain holds the record, in a log kept in
	// PostgreSQL by several brokers ("" in a log file).
	Replica string    `json:"replica,omitempty"`
	Time    time.Time `json:"time"`
	Session string    `json:"session"`
	Scope   string    `json:"scope"`
	// Config is the config file the session's scope came from (its
	// absolute path).
	Config      string          `json:"config,omitempty"`
	Client      string          `json:"client,omitempty"` // "name/version"
	Tool        string          `json:"tool"`
	Kind        string          `json:"kind,omitempty"`
	Method      string          `json:"method,omitempty"`
	Host        string          `json:"host,omitempty"`
	Path        string          `json:"path,omitempty"`
	QueryNames  []string        `json:"query_names,omitempty"`
	Bucket      string          `json:"bucket,omitempty"`
	Action      string          `json:"action,omitempty"`
	Key         string          `json:"key,omitempty"`
	Args        json.RawMessage `json:"args,omitempty"`
	ArgsSHA256  string          `json:"args_sha256,omitempty"`
	Decision    Decision        `json:"decision"`
	Code        string          `json:"code,omitempty"`   // denial code
	Reason      string          `json:"reason,omitempty"` // denial reason or error detail
	Grant       string          `json:"grant,omitempty"`
	Credential  string          `json:"credential,omitempty"`
	CredVersion int             `json:"credential_version,omitempty"`
	Status      int             `json:"status,omitempty"`
	BytesIn     int64           `json:"bytes_in,omitempty"`
	BytesOut    int64           `json:"bytes_out,omitempty"`
	Duration    time.Duration   `json:"duration_ns"`
	Scrubbed    bool            `json:"scrubbed,omitempty"`
	Hops        []Hop           `json:"hops,omitempty"` // redirects the call followed, in order
	// CredentialKind is what the call sent: static, aws_sts, oauth2 or
	// github_app; TokenID and TokenExpires name a minted token (never
	// its value: "sha256:" and 16 hex digits of its hash) and its expiry.
	CredentialKind string    `json:"credential_kind,omitempty"`
	TokenID        string    `json:"token_id,omitempty"`
	TokenExpires   time.Time `json:"token_expires,omitzero"`
	// Cut names each field that was longer than MaxField (or, for
	// query_names, held more than MaxQueryNames names) and was cut to fit,
	// with the hex SHA-256 of its whole value (for query_names, of the JSON
	// array of every name).
	Cut map[string]string `json:"cut,omitempty"`
	// Operator is the OS user who made a change of who may do what
	// (keyhole.secret.*, keyhole.session.*, keyhole.reload, keyhole.init).
	Operator string `json:"operator,omitempty"`
	// Source is the address a keyhole.auth.failed request came from.
	Source string `json:"source,omitempty"`
	// Count is how many requests a rate-limited record (keyhole.auth.failed)
	// stands for; 0 and 1 both mean one.
	Count int    `json:"count,omitempty"`
	Prev  string `json:"prev"` // hex MAC of the entry before the completing entry
	MAC   string `json:"mac"`  // hex MAC of the entry that completed the record
}

// Hop is one redirect a call followed after the broker re-authorized it:
// the request it made and the status the upstream answered.
type Hop struct {
	Method string `json:"method"`
	Path   string `json:"path"`
	Status int    `json:"status,omitempty"`
}

// Argument modes for Options.Arguments.
const (
	// ArgsFull stores the arguments (as the server passes them, already
	// scrubbed); arguments longer than MaxArgs are stored as a JSON string
	// of their first MaxArgs bytes. ArgsSHA256 is the hash of the whole.
	ArgsFull = "full"
	// ArgsHashed stores only ArgsSHA256.
	ArgsHashed = "hashed"
	// ArgsNone stores neither.
	ArgsNone = "none"
)

// MaxArgs is the size above which stored arguments are truncated.
const MaxArgs = 4096

// CheckpointName is the record name under which the head checkpoint is
// kept through the Checkpointer.
const CheckpointName = "audit.checkpoint"

// Options configures Open.
type Options struct {
	// Path is the SQLite file (audit.sqlite). It is created with mode 0600.
	// It is ignored with Postgres.
	Path string
	// Postgres, if set, keeps the log in PostgreSQL (see postgres.go): the
	// chain of Replica, in the table every broker's chain shares. The pool
	// stays the caller's.
	Postgres *pgxpool.Pool
	// Replica names the chain in PostgreSQL: one per broker.
	Replica string
	// Holder names the process that writes Replica's chain while it holds
	// its lease: the same holder (the same host and data dir) takes its
	// lease back at once after a crash; another waits for it to expire.
	Holder string
	// LeaseTTL is how long a broker's lease on its chain lasts without
	// being renewed (0: DefaultLeaseTTL).
	LeaseTTL time.Duration
	// LeaseWait is how long a writable Open waits for a lease another
	// holder has before it refuses (0: it refuses at once). A broker that
	// restarts while a peer is recording its dead calls as interrupted
	// gets its chain back once the peer lets it go, moments later; a
	// broker that really runs under the same replica name keeps renewing
	// its lease, so the Open still fails.
	LeaseWait time.Duration
	// Legacy is the buntdb file (audit.db) an earlier keyhole wrote. When
	// Path does not exist and Legacy does, Open migrates it into Path: the
	// same entries with the same seqs and MACs, the chain re-verified, the
	// old file renamed to Legacy+".migrated". A crash during the migration
	// leaves Legacy as it was, and the next Open migrates again. A
	// read-only Open reads a Legacy file through a private copy.
	Legacy string
	// Key is the 32-byte audit key.
	Key []byte
	// Checkpoint keeps the head of the chain outside the audit file. It may
	// be nil: then truncation of the tail is not detectable.
	Checkpoint Checkpointer
	// Anchor, if set, is a file (outside the data dir) to which every
	// checkpoint is appended as one JSON line, so that a rollback of the
	// whole data dir can be detected (see [VerifyOptions]).
	Anchor string
	// Arguments is ArgsFull (the default when empty), ArgsHashed or ArgsNone.
	Arguments string
	// Mirror, if set, is a file to which every entry is appended as one
	// JSON line, exactly as stored (so a mirror can be checked too). It is
	// written to the OS with each batch but not fsynced.
	Mirror string
	// Now is the clock for records written without a time; nil is time.Now.
	Now func() time.Time
	// MaxBatchDelay is how long the group committer lingers for more
	// entries after the first; 0 commits whatever is queued at once.
	MaxBatchDelay time.Duration
	// ReadOnly never writes to the Checkpointer, nor to the file but to
	// move a dead writer's journal into it: for offline inspection and
	// verification. Open does not refuse a
	// tampered log in this mode, and Begin, Write and Prune return
	// ErrReadOnly.
	ReadOnly bool
	// WriterAlive, with ReadOnly, reports whether another process holds
	// the file open for writing. While it does, an intent without an
	// outcome is that process's call in flight and reads as Running;
	// otherwise (or when WriterAlive is nil) it reads as Interrupted.
	WriterAlive func() bool
}

// Checkpointer stores small named records outside the audit file (the vault
// does). GetRecord returns an error matching fs.ErrNotExist when no record
// of that name was ever stored, and another error when it cannot say (for
// example, a record that was stored and is gone).
type Checkpointer interface {
	PutRecord(name string, data []byte) error
	GetRecord(name string) ([]byte, error)
}

// Sentinel errors.
var (
	// ErrNotFound is returned by Get for a seq the log does not hold.
	ErrNotFound = errors.New("audit: record not found")
	// ErrClosed is returned by every method of a closed Log.
	ErrClosed = errors.New("audit: log closed")
	// ErrReadOnly is returned by writes to a Log opened ReadOnly.
	ErrReadOnly = errors.New("audit: log opened read-only")
	// ErrTampered is returned by a writable Open when the file does not
	// agree with its checkpoint (its tail was cut, or its head, the entries
	// after the checkpoint or the checkpoint were altered or removed). Open
	// it ReadOnly and Verify it to see what.
	ErrTampered = errors.New("audit: log does not match its checkpoint")
	// ErrInUse is returned by a writable Open when another Log (in this
	// process or another) has the file open for writing.
	ErrInUse = errors.New("audit: log is open for writing elsewhere")
)

// Log is an open audit log. Its methods are safe for concurrent use.
type Log struct {
	st       store
	keyed    macKey
	cp       Checkpointer
	args     string
	now      func() time.Time
	delay    time.Duration
	readOnly bool
	alive    func() bool // read-only: is the file's writer running?
	cleanup  func()      // removes a private copy of a legacy file
	replica  string      // the chain's replica (PostgreSQL), written in every entry
	cpName   string      // the Checkpointer's record of this chain's head

	mirror *os.File
	anchor *os.File

	// queue feeds the writer goroutine; closing guards sends against Close.
	queue   chan *op
	closing sync.RWMutex
	closed  bool
	done    chan struct{}

	// head is owned by the writer goroutine (and Open before it starts).
	head link
	// cpMu serializes checkpoint writes; cpN is the counter of the last.
	cpMu  sync.Mutex
	cpN   uint64
	cpSeq uint64 // the seq the last checkpoint names
	// cpOwed is the last checkpoint when the log file had no room for its
	// copy: it is copied before the next one is written to the vault.
	cpOwed []byte
	// danglingAfter is where Open's recovery looks for intents left
	// without an outcome: every intent at or before it has one.
	danglingAfter uint64

	mu       sync.Mutex
	inflight map[uint64]struct{} // intents committed, outcome not yet
	failed   error               // sticky: set after a failed write or fsync
	stalled  error               // set while a checkpoint finds no room; cleared when one is written

	maint sync.Mutex // serializes Verify and Prune
}

// link is a position in the chain: a seq and the hex MAC of its entry.
type link struct {
	Seq uint64 `json:"seq"`
	MAC string `json:"mac"`
}

// Open opens (creating if needed) the audit log at opts.Path, migrating
// opts.Legacy first when only that exists. A writable Open checks the head
// against the checkpoint, verifies the entries after it, records every
// dangling intent as interrupted and writes a new checkpoint before it
// returns.
func Open(opts Options) (*Log, error) {
	switch opts.Arguments {
	case "":
		opts.Arguments = ArgsFull
	case ArgsFull, ArgsHashed, ArgsNone:
	default:
		return nil, fmt.Errorf("audit: arguments mode %q: want %q, %q or %q", opts.Arguments, ArgsFull, ArgsHashed, ArgsNone)
	}
	if len(opts.Key) != 32 {
		return nil, fmt.Errorf("audit: key is %d bytes, want 32", len(opts.Key))
	}
	if opts.Path == "" && opts.Postgres == nil {
		return nil, errors.New("audit: no path")
	}
	if opts.Postgres != nil && opts.Replica == "" {
		return nil, errors.New("audit: no replica name for the log in PostgreSQL")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	l := &Log{
		keyed:    newMACKey(opts.Key),
		cp:       opts.Checkpoint,
		args:     opts.Arguments,
		now:      opts.Now,
		delay:    opts.MaxBatchDelay,
		readOnly: opts.ReadOnly,
		alive:    opts.WriterAlive,
		queue:    make(chan *op, 1024),
		done:     make(chan struct{}),
		inflight: make(map[uint64]struct{}),
		cpName:   CheckpointName,
		replica:  opts.Replica,
	}
	if opts.Postgres != nil {
		l.cpName = CheckpointName + "." + opts.Replica
	}
	var err error
	if opts.ReadOnly {
		err = l.openReadOnly(opts)
	} else {
		err = l.openWritable(opts)
	}
	if err != nil {
		l.release()
		return nil, err
	}
	if opts.ReadOnly {
		close(l.done)
		return l, nil
	}
	go l.writer()
	if err := l.recover(); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

func (l *Log) openReadOnly(opts Options) error {
	if opts.Postgres != nil {
		st, err := openPostgres(opts, true)
		if err != nil {
			return err
		}
		l.st = st
		if l.alive == nil {
			l.alive = st.leaseAlive
		}
		if _, err := l.loadHead(); err != nil && !errors.Is(err, ErrTampered) {
			return err
		}
		return nil
	}
	path := opts.Path
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) && opts.Legacy != "" {
		if _, lerr := os.Stat(opts.Legacy); lerr == nil {
			copyPath, cleanup, err := l.privateCopy(opts.Legacy)
			if err != nil {
				return err
			}
			l.cleanup, path = cleanup, copyPath
		}
	}
	st, err := openSQLite(path, true)
	if err != nil {
		return err
	}
	l.st = st
	// A tampered file still opens: reading and verifying it is the point.
	if _, err := l.loadHead(); err != nil && !errors.Is(err, ErrTampered) {
		return err
	}
	return nil
}

func (l *Log) openWritable(opts Options) error {
	if opts.Legacy != "" {
		if err := l.migrateIfNeeded(opts.Path, opts.Legacy); err != nil {
			return err
		}
	}
	var st store
	var err error
	if opts.Postgres != nil {
		st, err = openPostgres(opts, false)
	} else {
		var s *sqliteStore
		if s, err = openSQLite(opts.Path, false); err == nil {
			if err = s.startJournal(); err != nil {
				s.close()
			}
			st = s
		}
	}
	if err != nil {
		return err
	}
	l.st = st
	if err := l.checkStart(); err != nil {
		return err
	}
	if opts.Mirror != "" {
		if l.mirror, err = os.OpenFile(opts.Mirror, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600); err != nil {
			return fmt.Errorf("audit: open mirror %s: %w", opts.Mirror, err)
		}
	}
	if opts.Anchor != "" {
		if l.anchor, err = os.OpenFile(opts.Anchor, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600); err != nil {
			return fmt.Errorf("audit: open anchor %s: %w", opts.Anchor, err)
		}
	}
	return nil
}

// release closes whatever a failed Open opened.
func (l *Log) release() {
	if l.st != nil {
		l.st.close()
	}
	if l.mirror != nil {
		l.mirror.Close()
	}
	if l.anchor != nil {
		l.anchor.Close()
	}
	if l.cleanup != nil {
		l.cleanup()
	}
}

// Close commits and fsyncs every queued entry, writes the last checkpoint,
// then closes the file. A second Close returns ErrClosed.
func (l *Log) Close() error {
	l.closing.Lock()
	if l.closed {
		l.closing.Unlock()
		return ErrClosed
	}
	l.closed = true
	if !l.readOnly {
		close(l.queue)
	}
	l.closing.Unlock()
	<-l.done
	var errs []error
	if l.mirror != nil {
		if err := l.mirror.Close(); err != nil {
			errs = append(errs, fmt.Errorf("audit: close mirror: %w", err))
		}
	}
	if l.anchor != nil {
		if err := l.anchor.Sync(); err != nil {
			errs = append(errs, fmt.Errorf("audit: fsync anchor: %w", err))
		}
		if err := l.anchor.Close(); err != nil {
			errs = append(errs, fmt.Errorf("audit: close anchor: %w", err))
		}
	}
	if err := l.st.close(); err != nil {
		errs = append(errs, err)
	}
	if l.cleanup != nil {
		l.cleanup()
	}
	return errors.Join(errs...)
}

// isClosed reports whether Close has begun.
func (l *Log) isClosed() bool {
	l.closing.RLock()
	defer l.closing.RUnlock()
	return l.closed
}
