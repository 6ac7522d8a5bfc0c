package pgstore

import (
	"context"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// roundTrips counts the round trips a pool's connections make: every
// statement sent on its own (BEGIN and COMMIT included) and every
// pipelined batch, which is one round trip however many statements it
// holds. A statement's first preparation on a connection is not counted.
type roundTrips struct{ n atomic.Uint64 }

var (
	_ pgx.QueryTracer = (*roundTrips)(nil)
	_ pgx.BatchTracer = (*roundTrips)(nil)
)

func (r *roundTrips) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	r.n.Add(1)
	return ctx
}

func (r *roundTrips) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (r *roundTrips) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	r.n.Add(1)
	return ctx
}

func (r *roundTrips) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}
func (r *roundTrips) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData)     {}

// RoundTrips returns how many round trips the pool's connections have
// made to the database (see Open); 0 for a pool Open did not make.
func RoundTrips(db *pgxpool.Pool) uint64 {
	if r, ok := db.Config().ConnConfig.Tracer.(*roundTrips); ok {
		return r.n.Load()
	}
	return 0
}
