package server

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/keyhole-dev/keyhole/policy"
	"github.com/keyhole-dev/keyhole/server/audit"
	"github.com/keyhole-dev/keyhole/server/pgstore"
	"github.com/keyhole-dev/keyhole/server/servertest"
	"github.com/keyhole-dev/keyhole/server/sessions"
)

func TestMain(m *testing.M) { os.Exit(servertest.MainWithPostgres(m)) }

// BenchmarkPostgresCallPieces is what one allowed call costs a broker of
// a PostgreSQL store, piece by piece, at concurrency 1: the count of the
// call (one round trip, no WAL flush), the intent (one round trip and a
// WAL flush) and the outcome (one round trip). The package's cluster runs
// with fsync off; keyhole-bench store measures with it on.
func BenchmarkPostgresCallPieces(b *testing.B) {
	ctx := context.Background()
	db, err := pgstore.Open(ctx, servertest.PostgresURL(b))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	if _, err := pgstore.Migrate(ctx, db); err != nil {
		b.Fatal(err)
	}
	key := make([]byte, 32)
	ss, _ := sessions.OpenPostgres(db, key)
	now := time.Now()
	if _, err := ss.Create(sessions.Record{SessionInfo: policy.SessionInfo{ID: "ses_b", Scope: "s", Created: now, Expires: now.Add(time.Hour), State: policy.StateActive}}); err != nil {
		b.Fatal(err)
	}
	l, err := audit.Open(audit.Options{Postgres: db, Replica: "bench", Key: key})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	b.Run("count", func(b *testing.B) {
		for b.Loop() {
			if _, err := ss.CountCall("ses_b", now); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("intent+outcome", func(b *testing.B) {
		for b.Loop() {
			p, err := l.Begin(ctx, audit.Record{Session: "ses_b", Tool: "github", Decision: audit.Allow})
			if err != nil {
				b.Fatal(err)
			}
			if err := p.Finish(ctx, audit.Record{Decision: audit.Allow, Status: 200}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
