package server

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keyhole-dev/keyhole/policy"
	"github.com/keyhole-dev/keyhole/server/audit"
	"github.com/keyhole-dev/keyhole/server/config"
	"github.com/keyhole-dev/keyhole/server/pgstore"
	"github.com/keyhole-dev/keyhole/server/report"
	"github.com/keyhole-dev/keyhole/server/sessions"
	"github.com/keyhole-dev/keyhole/vault/pgvault"
)

// ErrAmbiguousSeq is returned by the Get of a report log over several
// chains that was not told which chain to read: a seq names a record in
// every chain.
var ErrAmbiguousSeq = errors.New("keyhole: a seq names a record in each audit chain; name the record as REPLICA:SEQ")

// ReportSources returns what reports read in the store: the chains a
// opened, merged (chainsLog), the metadata of the store's secrets (never
// a value) and its session records, with cfg as the config and now as the
// report's time. getReplica names the chain whose records the log's Get
// reads (the incident's); "" is the only chain when one is open.
func (a *SharedAudit) ReportSources(cfg *config.Loaded, now time.Time, getReplica string) (*report.Sources, error) {
	if getReplica != "" && !slices.Contains(a.names, getReplica) {
		return nil, fmt.Errorf("keyhole: the store has no audit chain of replica %q (it has: %s)", getReplica, strings.Join(a.names, ", "))
	}
	if getReplica == "" && len(a.names) == 1 {
		getReplica = a.names[0]
	}
	return storeSources(a.db, a.vault, &chainsLog{a: a, get: getReplica}, cfg, now)
}

// StoreReportSourcesWithoutLog is ReportSources for a store in which no
// call was ever recorded: the secrets' metadata and the session records,
// and a log without calls.
func StoreReportSourcesWithoutLog(ctx context.Context, url string, keys KeySource, cfg *config.Loaded, now time.Time) (*report.Sources, error) {
	db, err := pgstore.Open(ctx, url)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	if err := pgstore.Check(ctx, db); err != nil {
		return nil, err
	}
	v, err := pgvault.Open(ctx, db, keys)
	if err != nil {
		return nil, err
	}
	defer v.Close()
	return storeSources(db, v, report.NoCalls, cfg, now)
}

func storeSources(db *pgxpool.Pool, v *pgvault.Vault, log report.Log, cfg *config.Loaded, now time.Time) (*report.Sources, error) {
	metas, err := v.List()
	if err != nil {
		return nil, err
	}
	src := &report.Sources{Log: log, Config: cfg, Secrets: metas, Now: now}
	st, err := sessions.OpenPostgres(db, v.DeriveKey(sessions.KeyLabel))
	if err != nil {
		return nil, err
	}
	recs, err := st.List()
	if err != nil {
		src.SessionsNote = fmt.Sprintf("the store's sessions could not be read: %v", err)
		return src, nil
	}
	src.Sessions, src.SessionsNote = trusted(recs)
	return src, nil
}

// trusted returns the records that pass their integrity check, and a note
// when some do not.
func trusted(recs []sessions.Record) ([]policy.SessionInfo, string) {
	var out []policy.SessionInfo
	tampered := 0
	for _, rec := range recs {
		if rec.Tampered {
			tampered++ // what it says cannot be trusted: the audit says the rest
			continue
		}
		out = append(out, rec.SessionInfo)
	}
	if tampered > 0 {
		return out, fmt.Sprintf("%d session records fail their integrity check and are left out", tampered)
	}
	return out, ""
}

// chainsLog is report.Log over the chains of a SharedAudit. One session's
// calls may be in several chains (its token works on every broker), so
// each read is merged: Stream and Calls give every chain's results by
// time, a tie going to the chain first by name (each chain's own order
// is kept); Usage adds up the groups every chain has for one key. Get
// reads one chain, get: a seq alone does not name a record of a store.
type chainsLog struct {
	a   *SharedAudit
	get string
}

var _ report.Log = (*chainsLog)(nil)

// Stream calls fn with every chain's records that match f, merged by
// time; each names its replica.
func (c *chainsLog) Stream(ctx context.Context, f audit.Filter, fn func(audit.Record) error) error {
	if f.Limit > 0 {
		recs, err := c.a.Query(f)
		if err != nil {
			return err
		}
		for _, r := range recs {
			if err := fn(r); err != nil {
				return err
			}
		}
		return nil
	}
	return mergeChains(ctx, c.a.names, func(ctx context.Context, replica string, emit func(audit.Record) error) error {
		return c.a.chains[replica].Stream(ctx, f, func(r audit.Record) error {
			return emit(named(replica, []audit.Record{r})[0])
		})
	}, func(r audit.Record) time.Time { return r.Time }, fn)
}

// Calls calls fn with every chain's calls that match f, merged by time.
func (c *chainsLog) Calls(ctx context.Context, f audit.CallFilter, fn func(audit.Call) error) error {
	return mergeChains(ctx, c.a.names, func(ctx context.Context, replica string, emit func(audit.Call) error) error {
		return c.a.chains[replica].Calls(ctx, f, emit)
	}, func(c audit.Call) time.Time { return c.Time }, fn)
}

// Usage calls fn with the groups of every chain, one per key (credential,
// scope, session, grant) in the order of the keys: the calls of a key's
// groups added up, First the earliest and Last the latest; Seq, Client
// and Config are those of the group with the earliest call (Seq is a seq
// of its own chain).
func (c *chainsLog) Usage(ctx context.Context, f audit.UsageFilter, fn func(audit.Usage) error) error {
	type key struct{ credential, scope, session, grant string }
	groups := map[key]*audit.Usage{}
	for _, r := range c.a.names {
		err := c.a.chains[r].Usage(ctx, f, func(u audit.Usage) error {
			k := key{u.Credential, u.Scope, u.Session, u.Grant}
			g, ok := groups[k]
			if !ok {
				groups[k] = &u
				return nil
			}
			calls, last := g.Calls+u.Calls, g.Last
			if u.Last.After(last) {
				last = u.Last
			}
			if u.First.Before(g.First) {
				*g = u
			}
			g.Calls, g.Last = calls, last
			return nil
		})
		if err != nil {
			return fmt.Errorf("keyhole: the audit chain of replica %s: %w", r, err)
		}
	}
	keys := make([]key, 0, len(groups))
	for k := range groups {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(x, y key) int {
		return cmp.Or(strings.Compare(x.credential, y.credential), strings.Compare(x.scope, y.scope),
			strings.Compare(x.session, y.session), strings.Compare(x.grant, y.grant))
	})
	for _, k := range keys {
		if err := fn(*groups[k]); err != nil {
			return err
		}
	}
	return nil
}

// Get returns the record seq of the chain the log was given, or
// ErrAmbiguousSeq when it was given none.
func (c *chainsLog) Get(seq uint64) (audit.Record, error) {
	if c.get == "" {
		return audit.Record{}, fmt.Errorf("%w (replicas: %s)", ErrAmbiguousSeq, strings.Join(c.a.names, ", "))
	}
	return c.a.Get(fmt.Sprintf("%s:%d", c.get, seq))
}

// mergeChains calls fn with what read gives of each chain, merged by at:
// the earliest head of the chains first, a tie going to the chain first
// in names. Each chain is read by its own goroutine, a little ahead, so
// memory stays flat however long the chains.
func mergeChains[T any](ctx context.Context, names []string, read func(context.Context, string, func(T) error) error, at func(T) time.Time, fn func(T) error) error {
	if len(names) == 1 {
		return read(ctx, names[0], fn)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	chans := make([]chan T, len(names))
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		chans[i] = make(chan T, 64)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(chans[i])
			errs[i] = read(ctx, name, func(v T) error {
				select {
				case chans[i] <- v:
					return nil
				case <-ctx.Done():
					return ctx.Err()
				}
			})
		}()
	}
	stop := func(err error) error {
		cancel()
		for _, ch := range chans {
			for range ch {
			}
		}
		wg.Wait()
		return err
	}
	heads := make([]T, len(names))
	live := make([]bool, len(names))
	for i, ch := range chans {
		heads[i], live[i] = <-ch
	}
	for {
		next := -1
		for i := range heads {
			if live[i] && (next < 0 || at(heads[i]).Before(at(heads[next]))) {
				next = i
			}
		}
		if next < 0 {
			break
		}
		if err := fn(heads[next]); err != nil {
			return stop(err)
		}
		heads[next], live[next] = <-chans[next]
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			return fmt.Errorf("keyhole: the audit chain of replica %s: %w", names[i], err)
		}
	}
	return nil
}
