package access

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keyhole-dev/keyhole/server/servertest"
)

func TestMain(m *testing.M) { os.Exit(servertest.MainWithPostgres(m)) }

// pgEnv is a test env whose requests live in PostgreSQL under replica b1.
func pgEnv(t *testing.T) (*testEnv, *pgxpool.Pool) {
	t.Helper()
	db := servertest.MigratedPostgres(t)
	return newTestEnv(t, func(o *Options) { o.Postgres, o.Replica, o.Path = db, "b1", "" }), db
}

// A broker of a shared store keeps its requests in the store: an approval
// survives its restart without any file, and an edited record is dropped.
func TestPostgresApprovalSurvivesARestart(t *testing.T) {
	e, db := pgEnv(t)
	a := e.m.Ask(context.Background(), ask(noWait))
	e.m.Approve(a.ID, "os:alice", "ok", false, e.ss)
	e.clock.Advance(time.Minute)
	e.restart()
	if ans := e.m.Ask(context.Background(), ask(noWait)); !ans.Approved || ans.ID != a.ID {
		t.Fatalf("the approved request repeated after a restart = %+v", ans)
	}
	b := e.m.Ask(context.Background(), ask(noWait, func(a *Ask) { a.Call.Path = "/other" }))
	var n int
	if err := db.QueryRow(context.Background(), `SELECT count(*) FROM keyhole_access WHERE replica = 'b1'`).Scan(&n); err != nil || n != 2 {
		t.Fatalf("records in the store = %d, %v; want 2", n, err)
	}
	if _, err := db.Exec(context.Background(), `UPDATE keyhole_access SET record = replace(record, '/other', '/admin') WHERE id = $1`, b.ID); err != nil {
		t.Fatal(err)
	}
	e.restart()
	if r, err := e.m.Show(b.ID); err == nil && r.Call.Path == "/admin" {
		t.Fatalf("an edited record was restored: %+v", r)
	}
}

// store migrate --from moves a data dir's access.db: an approval given
// there is usable by the broker that goes on under that replica.
func TestCopyToPostgresMovesApprovals(t *testing.T) {
	file := newTestEnv(t, nil)
	a := file.m.Ask(context.Background(), ask(noWait))
	file.m.Approve(a.ID, "os:alice", "", false, file.ss)
	file.m.Close()
	_, db := pgEnv(t)
	n, err := CopyToPostgres(file.opts.Path, db, "moved")
	if err != nil || n != 1 {
		t.Fatalf("CopyToPostgres = %d, %v; want 1", n, err)
	}
	file.opts.Path, file.opts.Postgres, file.opts.Replica = "", db, "moved"
	file.open()
	if ans := file.m.Ask(context.Background(), ask(noWait)); !ans.Approved || ans.ID != a.ID {
		t.Fatalf("the moved approval, repeated = %+v", ans)
	}
}
