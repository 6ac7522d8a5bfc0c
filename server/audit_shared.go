package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keyhole-dev/keyhole/server/audit"
	"github.com/keyhole-dev/keyhole/server/pgstore"
	"github.com/keyhole-dev/keyhole/vault/pgvault"
)

// SharedAudit is the audit of a PostgreSQL store opened read-only: one
// chain per broker (replica), each an audit.Log read with the checkpoint
// the store's vault holds for it. Readers merge the chains by time;
// Verify checks every one. Nothing is written.
type SharedAudit struct {
	db     *pgxpool.Pool
	vault  *pgvault.Vault
	chains map[string]*audit.Log
	names  []string
}

// OpenSharedAudit opens every chain of the store at url; only, when it is
// not "", names one replica.
func OpenSharedAudit(ctx context.Context, url string, keys KeySource, only string) (*SharedAudit, error) {
	db, err := pgstore.Open(ctx, url)
	if err != nil {
		return nil, err
	}
	a := &SharedAudit{db: db, chains: map[string]*audit.Log{}}
	if err := a.open(ctx, keys, only); err != nil {
		a.Close()
		return nil, err
	}
	return a, nil
}

func (a *SharedAudit) open(ctx context.Context, keys KeySource, only string) error {
	if err := pgstore.Check(ctx, a.db); err != nil {
		return err
	}
	v, err := pgvault.Open(ctx, a.db, keys)
	if err != nil {
		return err
	}
	a.vault = v
	names, err := audit.Replicas(ctx, a.db)
	if err != nil {
		return err
	}
	if only != "" {
		if !containsString(names, only) {
			return fmt.Errorf("keyhole: the store has no audit chain of replica %q (it has: %s)", only, strings.Join(names, ", "))
		}
		names = []string{only}
	}
	if len(names) == 0 {
		return fmt.Errorf("keyhole: %w in the store: it is written on the first call", ErrNoAuditLog)
	}
	key := v.DeriveKey(auditKeyLabel)
	for _, r := range names {
		l, err := audit.Open(audit.Options{Postgres: a.db, Replica: r, Key: key, Checkpoint: v, ReadOnly: true})
		if err != nil {
			return fmt.Errorf("keyhole: open the audit chain of replica %s: %w", r, err)
		}
		a.chains[r] = l
		a.names = append(a.names, r)
	}
	return nil
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Replicas names the chains, in order.
func (a *SharedAudit) Replicas() []string { return a.names }

// Chain returns the log of one replica.
func (a *SharedAudit) Chain(replica string) (*audit.Log, bool) {
	l, ok := a.chains[replica]
	return l, ok
}

// Query returns the records of every chain that match f, merged by time
// (then replica and seq); with a Limit, the last Limit of them.
func (a *SharedAudit) Query(f audit.Filter) ([]audit.Record, error) {
	var all []audit.Record
	for _, r := range a.names {
		recs, err := a.chains[r].Query(f)
		if err != nil {
			return nil, err
		}
		all = append(all, named(r, recs)...)
	}
	sort.SliceStable(all, func(i, j int) bool {
		if !all[i].Time.Equal(all[j].Time) {
			return all[i].Time.Before(all[j].Time)
		}
		if all[i].Replica != all[j].Replica {
			return all[i].Replica < all[j].Replica
		}
		return all[i].Seq < all[j].Seq
	})
	if f.Limit > 0 && len(all) > f.Limit {
		all = all[len(all)-f.Limit:]
	}
	return all, nil
}

// Get returns one record, named "REPLICA:SEQ" (or SEQ when the store has
// one chain).
func (a *SharedAudit) Get(name string) (audit.Record, error) {
	replica, num, ok := strings.Cut(name, ":")
	if !ok {
		if len(a.names) != 1 {
			return audit.Record{}, fmt.Errorf("keyhole: the store has %d audit chains; name the record as REPLICA:SEQ (replicas: %s)", len(a.names), strings.Join(a.names, ", "))
		}
		replica, num = a.names[0], name
	}
	seq, err := strconv.ParseUint(num, 10, 64)
	if err != nil {
		return audit.Record{}, fmt.Errorf("keyhole: %q is not a record number", num)
	}
	l, ok := a.chains[replica]
	if !ok {
		return audit.Record{}, fmt.Errorf("keyhole: the store has no audit chain of replica %q", replica)
	}
	rec, err := l.Get(seq)
	if err == nil {
		rec = named(replica, []audit.Record{rec})[0]
	}
	return rec, err
}

// named sets the replica of records read from its chain: entries a data
// dir's log wrote before it moved into the store name none.
func named(replica string, recs []audit.Record) []audit.Record {
	for i := range recs {
		if recs[i].Replica == "" {
			recs[i].Replica = replica
		}
	}
	return recs
}

// ChainReport is the verification of one chain.
type ChainReport struct {
	Replica string `json:"replica"`
	audit.Report
}

// Verify checks every chain against its checkpoint.
func (a *SharedAudit) Verify(ctx context.Context, o audit.VerifyOptions) ([]ChainReport, error) {
	var out []ChainReport
	for _, r := range a.names {
		rep, err := a.chains[r].VerifyWith(ctx, o)
		if err != nil {
			return out, fmt.Errorf("keyhole: verify the chain of replica %s: %w", r, err)
		}
		out = append(out, ChainReport{Replica: r, Report: rep})
	}
	return out, nil
}

// Export writes the matching records of every chain, chain after chain
// (each JSON record names its replica). CSV has no replica column, so it
// takes one chain: name it with --replica.
func (a *SharedAudit) Export(w io.Writer, format string, f audit.Filter) error {
	if format == "csv" && len(a.names) > 1 {
		return fmt.Errorf("keyhole: the store has %d audit chains and CSV rows do not name theirs: export one with --replica (%s), or use --format jsonl", len(a.names), strings.Join(a.names, ", "))
	}
	for _, r := range a.names {
		if err := a.chains[r].Export(w, format, f); err != nil {
			return err
		}
	}
	return nil
}

// Close releases the chains, the vault and the connections.
func (a *SharedAudit) Close() error {
	var errs []error
	for _, l := range a.chains {
		errs = append(errs, l.Close())
	}
	if a.vault != nil {
		errs = append(errs, a.vault.Close())
	}
	a.db.Close()
	return errors.Join(errs...)
}

// Follow is `audit tail -f` over every chain: fn gets the last f.Limit
// records of all chains merged by time, then the records each chain
// writes after that, as they come (chains interleaved in the order they
// are read; each record names its replica), until ctx ends. A call shown
// running in the first batch is not shown again when it completes; one
// written running later is.
func (a *SharedAudit) Follow(ctx context.Context, f audit.Filter, fn func([]audit.Record) error) error {
	// Each chain's last call first, then the first batch up to it: what is
	// written in between is followed, not lost or shown twice.
	heads := map[string]uint64{}
	for _, r := range a.names {
		last, err := a.chains[r].Query(audit.Filter{Limit: 1})
		if err != nil {
			return err
		}
		if len(last) > 0 {
			heads[r] = last[0].Seq
		}
	}
	all, err := a.Query(f)
	if err != nil {
		return err
	}
	var recs []audit.Record
	for _, r := range all {
		if r.Seq <= heads[r.Replica] {
			recs = append(recs, r)
		}
	}
	if len(recs) > 0 {
		if err := fn(recs); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var mu sync.Mutex
	errc := make(chan error, len(a.names))
	for _, r := range a.names {
		g := f
		g.Limit, g.AfterSeq = 0, heads[r]
		go func() {
			errc <- a.chains[r].Follow(ctx, g, func(recs []audit.Record) error {
				mu.Lock()
				defer mu.Unlock()
				return fn(named(r, recs))
			})
		}()
	}
	var first error
	for range a.names {
		if err := <-errc; err != nil && first == nil {
			first = err
			cancel()
		}
	}
	return first
}
