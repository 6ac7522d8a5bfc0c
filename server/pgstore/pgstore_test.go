package pgstore_test

import (
	"context"
	"errors"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/keyhole-dev/keyhole/server/pgstore"
	"github.com/keyhole-dev/keyhole/server/servertest"
)

func TestMain(m *testing.M) { os.Exit(servertest.MainWithPostgres(m)) }

func TestMigrateCreatesTheSchemaOnceAndCheckPasses(t *testing.T) {
	ctx := context.Background()
	db, err := pgstore.Open(ctx, servertest.PostgresURL(t))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer db.Close()
	if err := pgstore.Check(ctx, db); !errors.Is(err, pgstore.ErrNotMigrated) {
		t.Fatalf("Check(empty database) = %v, want ErrNotMigrated", err)
	}
	applied, err := pgstore.Migrate(ctx, db)
	if err != nil || len(applied) != pgstore.Latest() {
		t.Fatalf("Migrate = %v, %v; want every version up to %d", applied, err, pgstore.Latest())
	}
	if err := pgstore.Check(ctx, db); err != nil {
		t.Fatalf("Check after Migrate: %v", err)
	}
	again, err := pgstore.Migrate(ctx, db)
	if err != nil || len(again) != 0 {
		t.Fatalf("second Migrate = %v, %v; want nothing applied", again, err)
	}
	if _, err := db.Exec(ctx, `INSERT INTO keyhole_schema(version, name) VALUES (999, 'future')`); err != nil {
		t.Fatal(err)
	}
	if err := pgstore.Check(ctx, db); !errors.Is(err, pgstore.ErrNewer) {
		t.Fatalf("Check(newer schema) = %v, want ErrNewer", err)
	}
}

func TestOpenRefusesWhatIsNotAPostgresURL(t *testing.T) {
	if _, err := pgstore.Open(context.Background(), "mysql://x@y/z"); err == nil {
		t.Fatal("Open(mysql://…) succeeded")
	}
	if got := pgstore.Redact("postgres://u:hunter2@db/k"); got != "postgres://u:xxxxx@db/k" {
		t.Fatalf("Redact = %q", got)
	}
}

// A statement sent alone is one round trip; a pipelined batch is one,
// however many statements it holds.
func TestRoundTripsCountsStatementsAndBatches(t *testing.T) {
	ctx := context.Background()
	db, err := pgstore.Open(ctx, servertest.PostgresURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	before := pgstore.RoundTrips(db)
	if _, err := db.Exec(ctx, `SELECT 1`); err != nil {
		t.Fatal(err)
	}
	b := &pgx.Batch{}
	for range 5 {
		b.Queue(`SELECT 1`)
	}
	if err := db.SendBatch(ctx, b).Close(); err != nil {
		t.Fatal(err)
	}
	if got := pgstore.RoundTrips(db) - before; got != 2 {
		t.Fatalf("RoundTrips after one statement and one batch of five = %d, want 2", got)
	}
}

// The stores rely on a pipelined batch being one implicit transaction in
// which SET LOCAL holds (commits that need no WAL flush), and on
// connections committing synchronously otherwise.
func TestABatchIsOneTransactionForSetLocal(t *testing.T) {
	ctx := context.Background()
	db, err := pgstore.Open(ctx, servertest.PostgresURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	b := &pgx.Batch{}
	b.Queue(`SET LOCAL synchronous_commit TO OFF`)
	var inBatch, after string
	b.Queue(`SHOW synchronous_commit`).QueryRow(func(r pgx.Row) error { return r.Scan(&inBatch) })
	if err := db.SendBatch(ctx, b).Close(); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRow(ctx, `SHOW synchronous_commit`).Scan(&after); err != nil {
		t.Fatal(err)
	}
	if inBatch != "off" || after != "on" {
		t.Fatalf("synchronous_commit in the batch = %q, after it = %q; want off, then on", inBatch, after)
	}
}
