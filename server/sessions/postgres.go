package sessions

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keyhole-dev/keyhole/policy"
)

// PGStore keeps sessions in PostgreSQL, shared by every broker of one
// store (`--store postgres://…`): a token made on one broker opens its
// session on every other. Records are MAC'd as in the file store, and a
// record's state is in its MAC'd JSON; a state only moves from active to
// final, whatever a broker with an older view writes.
//
// Counters are columns beside the record, counted by the database: each
// call is one atomic UPDATE … RETURNING (CountCall), which also returns
// the record, so a revocation through any broker is seen by every other
// at its next call, and max_calls holds exactly across brokers. The
// counters are not MAC'd (an atomic increment cannot recompute a MAC):
// someone who can write the database can lower them, not widen a scope
// or revive a session.
type PGStore struct {
	db *pgxpool.Pool
	k  *Store // seals and opens records with the store's key; its db is unused
}

// OpenPostgres returns the session store of a migrated PostgreSQL store,
// whose records are MAC'd with key (32 bytes). The pool stays the
// caller's.
func OpenPostgres(db *pgxpool.Pool, key []byte) (*PGStore, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("sessions: key is %d bytes, want 32", len(key))
	}
	return &PGStore{db: db, k: &Store{key: append([]byte(nil), key...)}}, nil
}

// Close releases nothing: the pool is the caller's.
func (p *PGStore) Close() error { return nil }

func dbErr(what string, err error) error { return fmt.Errorf("sessions: %s: %w", what, err) }

// Create stores a new session and returns its token.
func (p *PGStore) Create(rec Record) (string, error) {
	tok, err := NewToken()
	if err != nil {
		return "", err
	}
	rec.TokenHash = Hash(tok)
	raw, err := p.k.seal(rec)
	if err != nil {
		return "", err
	}
	tag, err := p.db.Exec(context.Background(), `INSERT INTO keyhole_sessions(id, token_hash, record, state, calls, denials, created)
		VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING`,
		rec.ID, rec.TokenHash, raw, string(rec.State), rec.Calls, rec.Denials, rec.Created)
	if err != nil {
		return "", dbErr("create", err)
	}
	if tag.RowsAffected() == 0 {
		return "", fmt.Errorf("sessions: create: session %s exists", rec.ID)
	}
	return tok, nil
}

// counted is a stored row: the MAC'd record and the counters beside it.
type counted struct {
	id       string
	raw      string
	calls    int
	denials  int
	lastCall *time.Time
}

// record opens a row: its MAC checked, under its id, with the counters
// (which only add to the record's).
func (p *PGStore) record(c counted) (Record, error) {
	rec, err := p.k.open(c.raw)
	if err != nil {
		return Record{Tampered: true, SessionInfo: policy.SessionInfo{ID: c.id}}, nil
	}
	rec = underKey(rec, c.id)
	rec.Calls, rec.Denials = max(rec.Calls, c.calls), max(rec.Denials, c.denials)
	if c.lastCall != nil && c.lastCall.After(rec.LastCall) {
		rec.LastCall = *c.lastCall
	}
	return rec, nil
}

const rowColumns = `id, record, calls, denials, last_call`

func scanCounted(row pgx.Row) (counted, error) {
	var c counted
	err := row.Scan(&c.id, &c.raw, &c.calls, &c.denials, &c.lastCall)
	return c, err
}

// Lookup returns the session a token names, or ErrUnknownToken.
func (p *PGStore) Lookup(tok string) (Record, error) {
	if !WellFormed(tok) {
		return Record{}, ErrUnknownToken
	}
	h := Hash(tok)
	c, err := scanCounted(p.db.QueryRow(context.Background(), `SELECT `+rowColumns+` FROM keyhole_sessions WHERE token_hash = $1`, h))
	if errors.Is(err, pgx.ErrNoRows) {
		return Record{}, ErrUnknownToken
	}
	if err != nil {
		return Record{}, dbErr("lookup", err)
	}
	rec, _ := p.record(c)
	if subtle.ConstantTimeCompare([]byte(rec.TokenHash), []byte(h)) != 1 && !rec.Tampered {
		return Record{}, ErrUnknownToken
	}
	if rec.Tampered {
		return rec, fmt.Errorf("%w: session %s", ErrTampered, rec.ID)
	}
	return rec, nil
}

// Get returns one session by id; Tampered is set when it fails its MAC.
func (p *PGStore) Get(id string) (Record, error) {
	c, err := scanCounted(p.db.QueryRow(context.Background(), `SELECT `+rowColumns+` FROM keyhole_sessions WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return Record{}, ErrNotFound
	}
	if err != nil {
		return Record{}, dbErr("read", err)
	}
	return p.record(c)
}

// List returns every stored session, oldest first.
func (p *PGStore) List() ([]Record, error) {
	rows, err := p.db.Query(context.Background(), `SELECT `+rowColumns+` FROM keyhole_sessions ORDER BY created, id`)
	if err != nil {
		return nil, dbErr("list", err)
	}
	defer rows.Close()
	var out []Record
	for rows.Next() {
		c, err := scanCounted(rows)
		if err != nil {
			return nil, dbErr("list", err)
		}
		rec, _ := p.record(c)
		out = append(out, rec)
	}
	if err := rows.Err(); err != nil {
		return nil, dbErr("list", err)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, nil
}

// Save stores sessions' state and counters in one transaction. A final
// state already stored stays (a broker that has not seen a revocation
// yet cannot undo it); counters only grow.
func (p *PGStore) Save(infos ...policy.SessionInfo) error {
	ctx := context.Background()
	err := pgx.BeginFunc(ctx, p.db, func(tx pgx.Tx) error {
		for _, info := range infos {
			c, err := scanCounted(tx.QueryRow(ctx, `SELECT `+rowColumns+` FROM keyhole_sessions WHERE id = $1 FOR UPDATE`, info.ID))
			if errors.Is(err, pgx.ErrNoRows) {
				return fmt.Errorf("%w: %s", ErrNotFound, info.ID)
			}
			if err != nil {
				return err
			}
			rec, _ := p.record(c)
			if rec.Tampered {
				return fmt.Errorf("%w: session %s", ErrTampered, info.ID)
			}
			if rec.State != policy.StateActive && rec.State != "" {
				info.State, info.EndReason = rec.State, rec.EndReason
			}
			info.Calls, info.Denials = max(info.Calls, rec.Calls), max(info.Denials, rec.Denials)
			rec.SessionInfo = info
			raw, err := p.k.seal(rec)
			if err != nil {
				return err
			}
			var last *time.Time
			if !info.LastCall.IsZero() {
				last = &info.LastCall
			}
			if _, err := tx.Exec(ctx, `UPDATE keyhole_sessions SET record = $2, state = $3, calls = greatest(calls, $4), denials = greatest(denials, $5),
				last_call = greatest(last_call, $6) WHERE id = $1`, info.ID, raw, string(info.State), info.Calls, info.Denials, last); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrTampered) {
		return dbErr("save", err)
	}
	return err
}

// Quarantine ends a session whose record failed its MAC, for good.
func (p *PGStore) Quarantine(id, reason string) error {
	rec := Record{SessionInfo: policy.SessionInfo{ID: id, State: policy.StateEnded, EndReason: reason}}
	raw, err := p.k.seal(rec)
	if err != nil {
		return err
	}
	tag, err := p.db.Exec(context.Background(), `UPDATE keyhole_sessions SET record = $2, state = $3 WHERE id = $1`, id, raw, string(policy.StateEnded))
	if err != nil {
		return dbErr("quarantine", err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return nil
}

// CountCall counts a call of session id in the store, if it is active
// there, and returns the session as the store holds it: its state (from
// its MAC'd record) and its counters, this call included. One round trip.
func (p *PGStore) CountCall(id string, now time.Time) (policy.Shared, error) {
	return p.count(`UPDATE keyhole_sessions SET calls = calls + (state = 'active')::int, last_call = greatest(last_call, $2)
		WHERE id = $1 RETURNING `+rowColumns, id, now)
}

// CountDenial counts a denial of session id toward its tripwire and
// returns the session as the store holds it.
func (p *PGStore) CountDenial(id string) (policy.Shared, error) {
	return p.count(`UPDATE keyhole_sessions SET denials = denials + (state = 'active')::int WHERE id = $1 RETURNING `+rowColumns, id)
}

func (p *PGStore) count(sql string, args ...any) (policy.Shared, error) {
	// One round trip, without waiting for a WAL flush: the call's audit
	// record (an intent, or a denial followed by later intents) is
	// committed after it, and the WAL is flushed in order; after a crash
	// counters come back from the audit log anyway.
	b := &pgx.Batch{}
	b.Queue(`SET LOCAL synchronous_commit TO OFF`)
	var c counted
	var err error
	b.Queue(sql, args...).QueryRow(func(row pgx.Row) error {
		c, err = scanCounted(row)
		return nil
	})
	if berr := p.db.SendBatch(context.Background(), b).Close(); berr != nil && err == nil {
		err = berr
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return policy.Shared{}, fmt.Errorf("%w: %s", ErrNotFound, args[0])
	}
	if err != nil {
		return policy.Shared{}, dbErr("count", err)
	}
	rec, _ := p.record(c)
	if rec.Tampered {
		return policy.Shared{}, fmt.Errorf("%w: session %s", ErrTampered, rec.ID)
	}
	return policy.Shared{State: rec.State, EndReason: rec.EndReason, Calls: c.calls, Denials: c.denials}, nil
}

// PutConfig keeps a snapshot of a config file's bytes under their hex
// SHA-256; storing the same bytes again is a no-op.
func (p *PGStore) PutConfig(sha string, body []byte) error {
	if configHash(body) != sha {
		return fmt.Errorf("sessions: config snapshot %s does not match its bytes", sha)
	}
	if _, err := p.db.Exec(context.Background(), `INSERT INTO keyhole_session_configs(sha256, body) VALUES ($1, $2) ON CONFLICT DO NOTHING`, sha, body); err != nil {
		return dbErr("store a config snapshot", err)
	}
	return nil
}

// Config returns the snapshot stored under sha.
func (p *PGStore) Config(sha string) ([]byte, error) {
	var body []byte
	err := p.db.QueryRow(context.Background(), `SELECT body FROM keyhole_session_configs WHERE sha256 = $1`, sha).Scan(&body)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("%w: no config snapshot %s", ErrNotFound, sha)
	}
	if err != nil {
		return nil, dbErr("read a config snapshot", err)
	}
	if configHash(body) != sha {
		return nil, fmt.Errorf("%w: config snapshot %s", ErrTampered, sha)
	}
	return body, nil
}

// Import stores a session moved from another store (a data dir's
// sessions.db) as it was: its token hash, state and counters. A record
// that failed its MAC there is not moved.
func (p *PGStore) Import(rec Record) error {
	if rec.Tampered {
		return fmt.Errorf("%w: session %s", ErrTampered, rec.ID)
	}
	raw, err := p.k.seal(rec)
	if err != nil {
		return err
	}
	var last *time.Time
	if !rec.LastCall.IsZero() {
		last = &rec.LastCall
	}
	tag, err := p.db.Exec(context.Background(), `INSERT INTO keyhole_sessions(id, token_hash, record, state, calls, denials, last_call, created)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING`,
		rec.ID, rec.TokenHash, raw, string(rec.State), rec.Calls, rec.Denials, last, rec.Created)
	if err != nil {
		return dbErr("import", err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("sessions: import: session %s, or its token, is already in the store", rec.ID)
	}
	return nil
}
