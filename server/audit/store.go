package audit

import (
	"context"
	"time"
)

// store is where a Log keeps its entries: SQLite (sqlite.go) or
// PostgreSQL (postgres.go). It stores sealed entries as they are
// given and decides nothing: the Log seals, chains, merges and verifies.
// Every read returns at most one page, so no caller holds a whole log in
// memory and no read holds a snapshot for long.
type store interface {
	// appendBatch stores the entries and sets the named meta values in one
	// transaction: all of it, or none of it and an error.
	appendBatch(entries []row, meta map[string]string) error
	// sync makes everything appendBatch returned from durable.
	sync() error
	// settle makes every entry through seq readable and durable where
	// readers read it: what a checkpoint may name (SQLite's journal
	// moves entries later; PostgreSQL has them at once).
	settle(seq uint64) error
	// get returns the entry at seq; ok is false when there is none.
	get(seq uint64) (v row, ok bool, err error)
	// outcome returns the first outcome entry that names intent as the
	// call it completes; ok is false when there is none.
	outcome(intent uint64) (v row, ok bool, err error)
	// last returns the entry with the highest seq; ok is false when the
	// log holds none.
	last() (v row, ok bool, err error)
	// calls returns one page of calls (first entries, not outcomes) that
	// may match q, each with its outcome, in descending seq when q.desc.
	// It may return calls that do not match (the Log checks each against
	// the entry's MAC'd JSON), never leave out one that does.
	calls(q callQuery) ([]callRow, error)
	// timeSpan returns the lowest and highest seq of the calls whose time
	// is in [since, until) (zero: no bound); ok is false when none is.
	timeSpan(since, until time.Time) (lo, hi uint64, ok bool, err error)
	// usage groups the calls (first entries) that match f by credential,
	// scope, session and grant, ordered by those, and calls fn with each
	// group (Client and Config unset: the Log reads them from Seq's entry).
	usage(ctx context.Context, f UsageFilter, fn func(Usage) error) error
	// values returns the stored entries at seqs, by seq.
	values(seqs []int64) (map[uint64]string, error)
	// firstEntries returns up to limit first entries of calls (not
	// outcomes) with after < seq <= through (through < 0: no bound), of
	// session when it is not "", in ascending seq.
	firstEntries(ctx context.Context, session string, after, through int64, limit int) ([]row, error)
	// activity counts the calls (first entries) whose time is at or after
	// since, and the denied ones, per minute, oldest first.
	activity(since string) ([]Minute, error)
	// entries returns up to limit entries with seq > after, ascending.
	entries(after uint64, limit int) ([]row, error)
	// openIntents returns up to limit intents with seq > after, ascending,
	// that no outcome entry names.
	openIntents(after uint64, limit int) ([]row, error)
	// deletePrefix deletes every entry with seq <= through and sets the
	// named meta values, in one transaction.
	deletePrefix(through uint64, meta map[string]string) (int, error)
	// meta returns a value kept beside the entries (the prune anchor, the
	// copy of the last checkpoint); ok is false when it is not set.
	meta(name string) (v string, ok bool, err error)
	// setMeta sets a meta value in its own transaction.
	setMeta(name, value string) error
	// schemaProblems lists what differs from the schema this package
	// creates (tables, columns, indexes, views, triggers).
	schemaProblems() ([]string, error)
	close() error
}

// row is a sealed entry as stored: its seq and its value (canonical JSON
// with the MAC).
type row struct {
	Seq   uint64
	Value string
	// Durable marks an entry a caller waits to see durable (an intent):
	// a store that commits each batch durably or not (PostgreSQL) commits
	// a batch holding one synchronously.
	Durable bool
}

// callRow is the first entry of a call and its outcome (Value "" if none).
type callRow struct {
	First   row
	Outcome row
}

// callQuery selects candidate calls. Zero fields select everything.
type callQuery struct {
	Session, Scope, Tool, Credential string
	Decision                         Decision
	Since, Until                     time.Time
	// After and Before bound the seq, exclusive (0: no bound).
	After, Before uint64
	Desc          bool
	Limit         int
}

// Meta names.
const (
	metaAnchor     = "anchor"     // MAC'd seq and MAC of the last pruned entry
	metaCheckpoint = "checkpoint" // copy of the last checkpoint written to the vault
	metaMigration  = "migration"  // set while a migration is not complete
)
