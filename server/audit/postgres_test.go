package audit

import (
	"context"
	"errors"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keyhole-dev/keyhole/server/servertest"
)

func TestMain(m *testing.M) { os.Exit(servertest.MainWithPostgres(m)) }

// pgFixture is a migrated database and the options of one replica's chain.
type pgFixture struct {
	t  *testing.T
	db *pgxpool.Pool
	cp *memCheckpoint
}

func newPGFixture(t *testing.T) *pgFixture {
	t.Helper()
	db := servertest.MigratedPostgres(t)
	return &pgFixture{t: t, db: db, cp: newMemCheckpoint()}
}

func (f *pgFixture) opts(replica, holder string) Options {
	return Options{Postgres: f.db, Replica: replica, Holder: holder, Key: testKey, Checkpoint: f.cp}
}

func (f *pgFixture) open(replica, holder string) *Log {
	f.t.Helper()
	l, err := Open(f.opts(replica, holder))
	if err != nil {
		f.t.Fatalf("Open(replica %s) = %v", replica, err)
	}
	return l
}

// Two brokers' chains share one table; each verifies on its own, and every
// record names its replica.
func TestPostgresChainsPerReplicaInOneTable(t *testing.T) {
	f := newPGFixture(t)
	a, b := f.open("a", "host-a"), f.open("b", "host-b")
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := a
			if i%2 == 1 {
				l = b
			}
			if _, err := l.Write(context.Background(), denied("ses_1", "github")); err != nil {
				t.Errorf("Write = %v", err)
			}
			p, err := l.Begin(context.Background(), allowed("ses_1", "github"))
			if err != nil {
				t.Errorf("Begin = %v", err)
				return
			}
			if err := p.Finish(context.Background(), Record{Decision: Allow, Status: 200}); err != nil {
				t.Errorf("Finish = %v", err)
			}
		}()
	}
	wg.Wait()
	for _, l := range []*Log{a, b} {
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range []string{"a", "b"} {
		o := f.opts(r, "reader")
		o.ReadOnly = true
		l, err := Open(o)
		if err != nil {
			t.Fatal(err)
		}
		rep := mustVerify(t, l)
		if !rep.OK || rep.Entries != 30 {
			t.Fatalf("Verify(replica %s) = %+v, want 30 entries, ok", r, rep)
		}
		recs := mustQuery(t, l, Filter{Session: "ses_1"})
		if len(recs) != 20 {
			t.Fatalf("Query(replica %s) = %d records, want 20", r, len(recs))
		}
		for _, rec := range recs {
			if rec.Replica != r {
				t.Fatalf("record %d of chain %s names replica %q", rec.Seq, r, rec.Replica)
			}
		}
		if got := mustQuery(t, l, Filter{Decision: Allow}); len(got) != 10 {
			t.Fatalf("Query(allow, replica %s) = %d records, want 10", r, len(got))
		}
		l.Close()
	}
	reps, err := Replicas(context.Background(), f.db)
	if err != nil || strings.Join(reps, ",") != "a,b" {
		t.Fatalf("Replicas = %v, %v", reps, err)
	}
}

// A broker given another's replica name cannot write that chain while its
// lease lives; the same holder (a restart on the same host and data dir)
// takes it back at once.
func TestPostgresLeaseKeepsOneWriterPerChain(t *testing.T) {
	f := newPGFixture(t)
	a := f.open("a", "host-a")
	mustWrite(t, a, denied("ses_1", "github"))
	if _, err := Open(f.opts("a", "host-x")); !errors.Is(err, ErrInUse) {
		t.Fatalf("Open(replica a, another holder) = %v, want ErrInUse", err)
	}
	// The lease stolen under a live writer: its next batch fails and rolls back.
	if _, err := f.db.Exec(context.Background(), `UPDATE keyhole_audit_replicas SET holder = 'thief'`); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Write(context.Background(), denied("ses_1", "github")); !errors.Is(err, ErrLeaseHeld) {
		t.Fatalf("Write after the lease was taken = %v, want ErrLeaseHeld", err)
	}
	a.Close()
	if _, err := f.db.Exec(context.Background(), `UPDATE keyhole_audit_replicas SET holder = 'host-a', lease_until = now() + interval '1 hour'`); err != nil {
		t.Fatal(err)
	}
	again := f.open("a", "host-a") // same holder: no wait
	defer again.Close()
	if rep := mustVerify(t, again); !rep.OK || rep.Entries != 1 {
		t.Fatalf("Verify = %+v, want the one entry written, ok", rep)
	}
}

// A broker that restarts while a peer holds its chain to record its dead
// calls waits for the peer to let the chain go (LeaseWait), instead of
// refusing to start; against a live writer that keeps its lease it still
// refuses once the wait is over.
func TestPostgresOpenWaitsForAPeerToLetTheChainGo(t *testing.T) {
	f := newPGFixture(t)
	peer := f.open("a", "host-b") // a peer recovering chain a holds it
	released := make(chan struct{})
	go func() {
		time.Sleep(300 * time.Millisecond)
		peer.Close() // lets the lease go with an empty holder
		close(released)
	}()
	o := f.opts("a", "host-a")
	o.LeaseWait = time.Minute
	l, err := Open(o)
	if err != nil {
		t.Fatalf("Open(replica a) while a peer holds it briefly = %v, want the chain once the peer lets it go", err)
	}
	<-released
	mustWrite(t, l, denied("ses_1", "github"))
	o.Holder, o.LeaseWait = "host-x", 300*time.Millisecond
	if _, err := Open(o); !errors.Is(err, ErrLeaseHeld) {
		t.Fatalf("Open(replica a) beside its live writer, after the wait = %v, want ErrLeaseHeld", err)
	}
	l.Close()
}

// An intent left by a broker that died gets an interrupted outcome from
// another broker once the dead one's lease has expired.
func TestPostgresRecoverExpiredMarksInterrupted(t *testing.T) {
	f := newPGFixture(t)
	a := f.open("a", "host-a")
	if _, err := a.Begin(context.Background(), allowed("ses_1", "github")); err != nil {
		t.Fatal(err)
	}
	mustCall(t, a, allowed("ses_1", "github"), 200)
	a.Close()
	// As a crash leaves it: an intent without an outcome, the lease held
	// by the dead broker and expired.
	if _, err := f.db.Exec(context.Background(), `UPDATE keyhole_audit_replicas SET holder = 'host-a', lease_until = now() - interval '1 second'`); err != nil {
		t.Fatal(err)
	}
	done, err := RecoverExpired(context.Background(), f.opts("", "host-b"))
	if err != nil || strings.Join(done, ",") != "a" {
		t.Fatalf("RecoverExpired = %v, %v; want [a]", done, err)
	}
	if done, err := RecoverExpired(context.Background(), f.opts("", "host-b")); err != nil || len(done) != 0 {
		t.Fatalf("second RecoverExpired = %v, %v; want nothing", done, err)
	}
	o := f.opts("a", "reader")
	o.ReadOnly = true
	l, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	recs := mustQuery(t, l, Filter{})
	if len(recs) != 2 || recs[0].Decision != Interrupted || recs[1].Decision != Allow {
		t.Fatalf("records after recovery = %+v, want interrupted then allow", recs)
	}
	if rep := mustVerify(t, l); !rep.OK {
		t.Fatalf("Verify after recovery = %+v", rep)
	}
}

// An entry edited in the table, or a trigger added to it, is found.
func TestPostgresVerifyFindsAnEditAndATrigger(t *testing.T) {
	f := newPGFixture(t)
	a := f.open("a", "host-a")
	for range 3 {
		mustWrite(t, a, denied("ses_1", "github"))
	}
	a.Close()
	ctx := context.Background()
	if _, err := f.db.Exec(ctx, `UPDATE keyhole_audit SET entry = replace(entry, 'DELETE', 'GET') WHERE seq = 2`); err != nil {
		t.Fatal(err)
	}
	if _, err := f.db.Exec(ctx, `CREATE FUNCTION nop() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
		CREATE TRIGGER hide BEFORE INSERT ON keyhole_audit FOR EACH ROW EXECUTE FUNCTION nop()`); err != nil {
		t.Fatal(err)
	}
	o := f.opts("a", "reader")
	o.ReadOnly = true
	l, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	rep := mustVerify(t, l)
	kinds := map[string]bool{}
	for _, p := range rep.Problems {
		kinds[p.Kind] = true
	}
	if rep.OK || !kinds[ProblemEdited] || !kinds[ProblemSchema] {
		t.Fatalf("Verify = %+v, want edited and schema problems", rep)
	}
	if _, err := Open(f.opts("a", "host-a")); !errors.Is(err, ErrTampered) {
		t.Fatalf("writable Open of an edited chain = %v, want ErrTampered", err)
	}
}

// A chain in PostgreSQL answers Usage and Calls (what reports read) as a
// file does: the same groups, counts and calls for the same records.
func TestPostgresUsageAndCallsAsSQLite(t *testing.T) {
	f := newPGFixture(t)
	file := newFixture(t)
	opts := f.opts("usage-a", "host-a")
	opts.Now = file.clock.Now
	pg, err := Open(opts)
	if err != nil {
		t.Fatalf("Open(replica usage-a) = %v", err)
	}
	defer pg.Close()
	sq := file.open()
	defer sq.Close()
	other := allowed("ses_2", "github")
	other.Scope, other.Grant = "deploy", "deploy[1]"
	for _, l := range []*Log{sq, pg} {
		for i := range 3 {
			mustCall(t, l, allowed("ses_1", "github"), 200)
			mustWrite(t, l, denied("ses_1", "github"))
			if i < 2 {
				mustCall(t, l, other, 200)
			}
			file.clock.Add(-time.Minute) // as on both logs: a clock that went back
		}
		file.clock.Add(3 * time.Minute)
	}
	ctx := context.Background()
	usage := func(l *Log, uf UsageFilter) []Usage {
		var out []Usage
		if err := l.Usage(ctx, uf, func(u Usage) error { out = append(out, u); return nil }); err != nil {
			t.Fatalf("Usage(%+v) = %v", uf, err)
		}
		return out
	}
	calls := func(l *Log, cf CallFilter) []Call {
		var out []Call
		if err := l.Calls(ctx, cf, func(c Call) error { out = append(out, c); return nil }); err != nil {
			t.Fatalf("Calls(%+v) = %v", cf, err)
		}
		return out
	}
	for name, uf := range map[string]UsageFilter{
		"all":         {},
		"credential":  {Credentials: []string{"github_token"}},
		"scope":       {Scope: "deploy"},
		"since":       {Since: t0.Add(-90 * time.Second)},
		"nothing yet": {Until: t0.Add(-time.Hour)},
	} {
		want, got := usage(sq, uf), usage(pg, uf)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: Usage in PostgreSQL = %+v, want as in SQLite %+v", name, got, want)
		}
	}
	if n := len(usage(pg, UsageFilter{})); n != 3 {
		t.Errorf("Usage groups = %d, want 3 (ses_1 allowed, ses_1 denied, ses_2)", n)
	}
	defer func(p int) { callsPage = p }(callsPage)
	callsPage = 2
	for name, cf := range map[string]CallFilter{
		"all":     {},
		"session": {Session: "ses_2"},
		"window":  {Since: t0.Add(-90 * time.Second), Until: t0.Add(time.Second)},
		"allowed": {Allowed: true, Scope: "triage"},
	} {
		want, got := calls(sq, cf), calls(pg, cf)
		if !reflect.DeepEqual(got, want) || len(got) == 0 {
			t.Errorf("%s: Calls in PostgreSQL = %+v, want as in SQLite %+v (and some)", name, got, want)
		}
	}
}
