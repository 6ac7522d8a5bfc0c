package audit

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"

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
