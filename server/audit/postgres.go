package audit

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The log in PostgreSQL (`--store postgres://…`), for several brokers on
// one database: one table, keyhole_audit, holds every broker's chain,
// each entry under (replica, seq) and naming its replica in its MAC'd
// JSON. A pgStore is the store of one chain: the Log above it seals,
// chains, merges and verifies exactly as it does for a file.
//
// Durability: a batch that holds an intent commits synchronously
// (pgstore.Open sets synchronous_commit on for every connection), so the
// intent is durable when Begin returns and sync has nothing left to do;
// a batch of outcomes and denials commits without waiting for its WAL
// flush, as the file store writes them before their fsync: they are in
// the database (a killed broker loses nothing), flushed by PostgreSQL's
// WAL writer within moments and, the WAL being flushed in order, before
// any later intent's commit returns. One round trip commits a
// batch: the inserts, the meta values and the renewal of the chain's
// lease are sent as one pipelined batch, which PostgreSQL runs as one
// implicit transaction.
//
// Leases: a broker writing its chain holds the chain's row in
// keyhole_audit_replicas (holder, lease_until) and renews it with every
// batch and every LeaseTTL/3 while idle. A batch whose renewal finds
// another holder fails and rolls back, so two brokers given the same
// replica name cannot both write one chain. A holder whose lease
// expired (its broker died) may be replaced: by the same replica's next
// start, or by another broker (RecoverExpired), which records the dead
// broker's open intents as interrupted in the dead broker's chain.

// DefaultLeaseTTL is how long a lease lasts without renewal.
const DefaultLeaseTTL = 15 * time.Second

// ErrLeaseHeld is returned by a writable Open of a chain another live
// broker holds.
var ErrLeaseHeld = errors.New("audit: the chain is held by another broker")

var replicaName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)

// CheckReplica refuses a replica name that cannot name a chain: 1 to 63
// letters, digits, '_', '.' and '-', starting with a letter or digit.
func CheckReplica(name string) error {
	if !replicaName.MatchString(name) {
		return fmt.Errorf("audit: replica name %q: want 1 to 63 letters, digits, '_', '.' or '-', starting with a letter or digit", name)
	}
	return nil
}

// pgStore is one replica's chain in PostgreSQL.
type pgStore struct {
	db       *pgxpool.Pool
	replica  string
	holder   string
	ttl      time.Duration
	readOnly bool

	stop context.CancelFunc
	done chan struct{}
	wmu  sync.Mutex
}

var _ store = (*pgStore)(nil)

// openPostgres opens the chain of opts.Replica; a writable one takes its
// lease and keeps it renewed.
func openPostgres(opts Options, readOnly bool) (*pgStore, error) {
	if err := CheckReplica(opts.Replica); err != nil {
		return nil, err
	}
	s := &pgStore{db: opts.Postgres, replica: opts.Replica, holder: opts.Holder, ttl: opts.LeaseTTL, readOnly: readOnly}
	if s.ttl <= 0 {
		s.ttl = DefaultLeaseTTL
	}
	if s.holder == "" {
		s.holder = opts.Replica
	}
	if readOnly {
		return s, nil
	}
	for deadline := time.Now().Add(opts.LeaseWait); ; time.Sleep(100 * time.Millisecond) {
		err := s.takeLease(context.Background())
		if err == nil {
			break
		}
		if !errors.Is(err, ErrLeaseHeld) || time.Now().After(deadline) {
			return nil, err
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.stop, s.done = cancel, make(chan struct{})
	go s.renew(ctx)
	return s, nil
}

func (s *pgStore) interval() string { return fmt.Sprintf("%d milliseconds", s.ttl.Milliseconds()) }

// takeLease takes the chain's lease: free, expired, or already this
// holder's.
func (s *pgStore) takeLease(ctx context.Context) error {
	var holder string
	err := s.db.QueryRow(ctx, `INSERT INTO keyhole_audit_replicas(replica, holder, lease_until) VALUES ($1, $2, now() + $3::interval)
		ON CONFLICT (replica) DO UPDATE SET holder = excluded.holder, lease_until = excluded.lease_until
		WHERE keyhole_audit_replicas.lease_until < now() OR keyhole_audit_replicas.holder = excluded.holder
		RETURNING holder`, s.replica, s.holder, s.interval()).Scan(&holder)
	if errors.Is(err, pgx.ErrNoRows) {
		var other string
		var until time.Time
		s.db.QueryRow(ctx, `SELECT holder, lease_until FROM keyhole_audit_replicas WHERE replica = $1`, s.replica).Scan(&other, &until)
		return fmt.Errorf("%w: replica %s is written by %s until %s (give each broker its own --replica, or wait for that lease to expire): %w",
			ErrInUse, s.replica, other, until.UTC().Format(time.RFC3339), ErrLeaseHeld)
	}
	if err != nil {
		return s.dbError("take the lease of", err)
	}
	return nil
}

// renew keeps the lease while the log is idle (batches renew it too).
func (s *pgStore) renew(ctx context.Context) {
	defer close(s.done)
	t := time.NewTicker(s.ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.db.Exec(ctx, `UPDATE keyhole_audit_replicas SET lease_until = now() + $3::interval WHERE replica = $1 AND holder = $2`, s.replica, s.holder, s.interval())
		}
	}
}

// leaseAlive reports whether a broker holds the chain's lease now: its
// open intents are in flight, not interrupted.
func (s *pgStore) leaseAlive() bool {
	var alive bool
	err := s.db.QueryRow(context.Background(), `SELECT lease_until > now() FROM keyhole_audit_replicas WHERE replica = $1`, s.replica).Scan(&alive)
	return err == nil && alive
}

func (s *pgStore) dbError(what string, err error) error {
	return fmt.Errorf("audit: %s the chain of replica %s in PostgreSQL: %w", what, s.replica, err)
}

// leaseLost is the SQLSTATE keyhole_audit_renew raises.
const leaseLost = "KH001"

func (s *pgStore) appendBatch(entries []row, meta map[string]string) error {
	if s.readOnly {
		return ErrReadOnly
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	ctx := context.Background()
	b := &pgx.Batch{}
	if !slices.ContainsFunc(entries, func(r row) bool { return r.Durable }) {
		// Nobody waits on its fsync (outcomes, denials, checkpoints): it
		// is visible at once and flushed by PostgreSQL's WAL writer within
		// moments, and before any later synchronous commit (an intent)
		// returns, as the WAL is flushed in order.
		b.Queue(`SET LOCAL synchronous_commit TO OFF`)
	}
	b.Queue(`SELECT keyhole_audit_renew($1, $2, $3::interval)`, s.replica, s.holder, s.interval())
	if len(entries) > 0 {
		seqs := make([]int64, len(entries))
		vals := make([]string, len(entries))
		for i, e := range entries {
			seqs[i], vals[i] = int64(e.Seq), e.Value
		}
		b.Queue(`INSERT INTO keyhole_audit(replica, seq, entry) SELECT $1, s, e FROM unnest($2::bigint[], $3::text[]) AS t(s, e)`, s.replica, seqs, vals)
	}
	for name, value := range meta {
		b.Queue(`INSERT INTO keyhole_audit_meta(replica, name, value) VALUES ($1, $2, $3) ON CONFLICT (replica, name) DO UPDATE SET value = excluded.value`, s.replica, name, value)
	}
	// One implicit transaction: all of it commits, or none of it.
	if err := s.db.SendBatch(ctx, b).Close(); err != nil {
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == leaseLost {
			return fmt.Errorf("%w: %s", ErrLeaseHeld, pe.Message)
		}
		return s.dbError("write", err)
	}
	return nil
}

func (s *pgStore) sync() error { return nil }

func (s *pgStore) settle(uint64) error { return nil }

func (s *pgStore) scanRow(q string, args ...any) (row, bool, error) {
	var seq int64
	var v string
	err := s.db.QueryRow(context.Background(), q, args...).Scan(&seq, &v)
	if errors.Is(err, pgx.ErrNoRows) {
		return row{}, false, nil
	}
	if err != nil {
		return row{}, false, s.dbError("read", err)
	}
	return row{Seq: uint64(seq), Value: v}, true, nil
}

func (s *pgStore) get(seq uint64) (row, bool, error) {
	return s.scanRow(`SELECT seq, entry FROM keyhole_audit WHERE replica = $1 AND seq = $2`, s.replica, int64(seq))
}

func (s *pgStore) outcome(intent uint64) (row, bool, error) {
	return s.scanRow(`SELECT seq, entry FROM keyhole_audit WHERE replica = $1 AND "of" = $2 AND type = 'outcome' ORDER BY seq LIMIT 1`, s.replica, int64(intent))
}

func (s *pgStore) last() (row, bool, error) {
	return s.scanRow(`SELECT seq, entry FROM keyhole_audit WHERE replica = $1 ORDER BY seq DESC LIMIT 1`, s.replica)
}

func (s *pgStore) calls(q callQuery) ([]callRow, error) {
	var where []string
	args := []any{s.replica}
	add := func(cond string, a ...any) {
		for _, v := range a {
			args = append(args, v)
			cond = strings.Replace(cond, "?", fmt.Sprintf("$%d", len(args)), 1)
		}
		where = append(where, cond)
	}
	add(`c.replica = $1 AND c.type <> 'outcome'`)
	for _, f := range []struct{ col, v string }{
		{"c.session", q.Session}, {"(c.entry::jsonb ->> 'scope')", q.Scope}, {"c.tool", q.Tool}, {"c.credential", q.Credential},
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
	const outcomes = `keyhole_audit o WHERE o.replica = c.replica AND o."of" = c.seq AND o.type = 'outcome'`
	switch q.Decision {
	case "":
	case Running, Interrupted:
		add(`c.type = 'intent' AND NOT EXISTS (SELECT 1 FROM ` + outcomes + ` AND o.decision <> 'interrupted')`)
	default:
		add(`((c.type <> 'intent' AND c.decision = ?) OR (c.type = 'intent' AND EXISTS (SELECT 1 FROM `+outcomes+` AND o.decision = ?)))`, string(q.Decision), string(q.Decision))
	}
	order := "ASC"
	if q.Desc {
		order = "DESC"
	}
	args = append(args, q.Limit)
	query := `SELECT c.seq, c.entry, coalesce((SELECT o.entry FROM ` + outcomes + ` ORDER BY o.seq LIMIT 1), '') FROM keyhole_audit c WHERE ` +
		strings.Join(where, " AND ") + fmt.Sprintf(` ORDER BY c.seq %s LIMIT $%d`, order, len(args))
	rows, err := s.db.Query(context.Background(), query, args...)
	if err != nil {
		return nil, s.dbError("read", err)
	}
	defer rows.Close()
	var out []callRow
	for rows.Next() {
		var c callRow
		var seq int64
		if err := rows.Scan(&seq, &c.First.Value, &c.Outcome.Value); err != nil {
			return nil, s.dbError("read", err)
		}
		c.First.Seq = uint64(seq)
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, s.dbError("read", err)
	}
	return out, nil
}

func (s *pgStore) rows(q string, args ...any) ([]row, error) {
	rs, err := s.db.Query(context.Background(), q, args...)
	if err != nil {
		return nil, s.dbError("read", err)
	}
	defer rs.Close()
	var out []row
	for rs.Next() {
		var seq int64
		var v string
		if err := rs.Scan(&seq, &v); err != nil {
			return nil, s.dbError("read", err)
		}
		out = append(out, row{Seq: uint64(seq), Value: v})
	}
	if err := rs.Err(); err != nil {
		return nil, s.dbError("read", err)
	}
	return out, nil
}

func (s *pgStore) entries(after uint64, limit int) ([]row, error) {
	return s.rows(`SELECT seq, entry FROM keyhole_audit WHERE replica = $1 AND seq > $2 ORDER BY seq LIMIT $3`, s.replica, int64(after), limit)
}

func (s *pgStore) openIntents(after uint64, limit int) ([]row, error) {
	return s.rows(`SELECT i.seq, i.entry FROM keyhole_audit i WHERE i.replica = $1 AND i.seq > $2 AND i.type = 'intent'
		AND NOT EXISTS (SELECT 1 FROM keyhole_audit o WHERE o.replica = i.replica AND o."of" = i.seq AND o.type = 'outcome')
		ORDER BY i.seq LIMIT $3`, s.replica, int64(after), limit)
}

func (s *pgStore) deletePrefix(through uint64, meta map[string]string) (int, error) {
	if s.readOnly {
		return 0, ErrReadOnly
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	ctx := context.Background()
	var n int64
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT keyhole_audit_renew($1, $2, $3::interval)`, s.replica, s.holder, s.interval()); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `DELETE FROM keyhole_audit WHERE replica = $1 AND seq <= $2`, s.replica, int64(through))
		if err != nil {
			return err
		}
		n = tag.RowsAffected()
		for name, value := range meta {
			if _, err := tx.Exec(ctx, `INSERT INTO keyhole_audit_meta(replica, name, value) VALUES ($1, $2, $3) ON CONFLICT (replica, name) DO UPDATE SET value = excluded.value`, s.replica, name, value); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, s.dbError("prune", err)
	}
	return int(n), nil
}

func (s *pgStore) meta(name string) (string, bool, error) {
	var v string
	err := s.db.QueryRow(context.Background(), `SELECT value FROM keyhole_audit_meta WHERE replica = $1 AND name = $2`, s.replica, name).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, s.dbError("read", err)
	}
	return v, true, nil
}

func (s *pgStore) setMeta(name, value string) error {
	return s.appendBatch(nil, map[string]string{name: value})
}

// schemaProblems lists triggers and rules on the audit table (none is
// keyhole's: one could rewrite what is stored or read) and indexes or
// columns that are missing.
func (s *pgStore) schemaProblems() ([]string, error) {
	ctx := context.Background()
	var problems []string
	rows, err := s.db.Query(ctx, `SELECT 'trigger ' || tgname FROM pg_trigger WHERE tgrelid = 'keyhole_audit'::regclass AND NOT tgisinternal
		UNION ALL SELECT 'rule ' || rulename FROM pg_rules WHERE tablename = 'keyhole_audit'`)
	if err != nil {
		return nil, s.dbError("read the schema of", err)
	}
	for rows.Next() {
		var what string
		if err := rows.Scan(&what); err != nil {
			rows.Close()
			return nil, s.dbError("read the schema of", err)
		}
		problems = append(problems, what+" on keyhole_audit is not one keyhole creates")
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, s.dbError("read the schema of", err)
	}
	for _, idx := range []string{"keyhole_audit_pkey", "keyhole_audit_session", "keyhole_audit_tool", "keyhole_audit_time", "keyhole_audit_credential", "keyhole_audit_decision", "keyhole_audit_of"} {
		var ok bool
		if err := s.db.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, idx).Scan(&ok); err != nil {
			return nil, s.dbError("read the schema of", err)
		}
		if !ok {
			problems = append(problems, "index "+idx+" is missing")
		}
	}
	return problems, nil
}

// close stops renewing and lets the lease go, so another broker need not
// wait for it to expire; the empty holder says the chain was closed, not
// left by a broker that died (RecoverExpired passes it by).
func (s *pgStore) close() error {
	if s.stop == nil {
		return nil
	}
	s.stop()
	<-s.done
	_, err := s.db.Exec(context.Background(), `UPDATE keyhole_audit_replicas SET lease_until = now(), holder = '' WHERE replica = $1 AND holder = $2`, s.replica, s.holder)
	if err != nil {
		return s.dbError("release the lease of", err)
	}
	return nil
}

// Replicas returns the name of every chain in the store, in name order.
func Replicas(ctx context.Context, db *pgxpool.Pool) ([]string, error) {
	rows, err := db.Query(ctx, `SELECT replica FROM keyhole_audit_replicas UNION SELECT DISTINCT replica FROM keyhole_audit ORDER BY 1`)
	if err != nil {
		return nil, fmt.Errorf("audit: list the chains in PostgreSQL: %w", err)
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// RecoverExpired is what a running broker does for brokers that died:
// every chain whose lease expired without being let go (its broker did
// not close it) is opened for writing under opts.Holder (opts.Replica is
// ignored), which records its intents without an outcome as interrupted,
// checkpoints the chain and lets the lease go. It returns the replicas it
// recovered. A chain closed with intents still open (a shutdown that
// outlasted its timeout) is recovered by its own broker's next start.
func RecoverExpired(ctx context.Context, opts Options) ([]string, error) {
	rows, err := opts.Postgres.Query(ctx, `SELECT replica FROM keyhole_audit_replicas WHERE holder <> '' AND lease_until < now() ORDER BY 1`)
	if err != nil {
		return nil, fmt.Errorf("audit: find expired chains: %w", err)
	}
	dead, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("audit: find expired chains: %w", err)
	}
	var done []string
	var errs []error
	for _, r := range dead {
		o := opts
		o.Replica, o.LeaseWait = r, 0
		l, err := Open(o)
		if errors.Is(err, ErrInUse) {
			continue // its broker came back, or another took it first
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("audit: recover the chain of replica %s: %w", r, err))
			continue
		}
		if err := l.Close(); err != nil {
			errs = append(errs, err)
			continue
		}
		done = append(done, r)
	}
	return done, errors.Join(errs...)
}

// activity counts one chain's calls per minute from since on, as the
// SQLite store does, through the chain's time index.
func (s *pgStore) activity(since string) ([]Minute, error) {
	rs, err := s.db.Query(context.Background(), `SELECT substr(time, 1, 16) AS minute, count(*), count(*) FILTER (WHERE decision = 'deny')
FROM keyhole_audit WHERE replica = $1 AND type <> 'outcome' AND time >= $2 GROUP BY minute ORDER BY minute`, s.replica, since)
	if err != nil {
		return nil, s.dbError("read", err)
	}
	defer rs.Close()
	var out []Minute
	for rs.Next() {
		var minute string
		var calls, denied int64
		if err := rs.Scan(&minute, &calls, &denied); err != nil {
			return nil, s.dbError("read", err)
		}
		m := Minute{Calls: int(calls), Denied: int(denied)}
		if m.Start, err = time.Parse("2006-01-02T15:04", minute); err != nil {
			return nil, fmt.Errorf("read the audit of replica %s: a time of %q: %w", s.replica, minute, err)
		}
		out = append(out, m)
	}
	if err := rs.Err(); err != nil {
		return nil, s.dbError("read", err)
	}
	return out, nil
}

// timeSpan returns the lowest and highest seq of the chain's calls whose
// time is in [since, until), as the SQLite store does.
func (s *pgStore) timeSpan(since, until time.Time) (lo, hi uint64, ok bool, err error) {
	where := []string{`replica = $1`, `type <> 'outcome'`}
	args := []any{s.replica}
	if !since.IsZero() {
		args = append(args, formatTime(since))
		where = append(where, fmt.Sprintf(`time >= $%d`, len(args)))
	}
	if !until.IsZero() {
		args = append(args, formatTime(until))
		where = append(where, fmt.Sprintf(`time < $%d`, len(args)))
	}
	var l, h *int64
	q := `SELECT min(seq), max(seq) FROM keyhole_audit WHERE ` + strings.Join(where, " AND ")
	if err := s.db.QueryRow(context.Background(), q, args...).Scan(&l, &h); err != nil {
		return 0, 0, false, s.dbError("read", err)
	}
	if l == nil || h == nil {
		return 0, 0, false, nil
	}
	return uint64(*l), uint64(*h), true, nil
}
