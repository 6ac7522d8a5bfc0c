package access

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Brokers of a shared store hold their own requests (a held call waits in
// the broker that took it), but a person may answer through any of them:
// the answering broker finds the holder (HolderOf), posts the answer
// (PostAnswer) and waits for its result (AwaitAnswer); the holder takes
// its pending answers (TakeAnswers), applies them as if they came through
// its own socket, and writes the result back (FinishAnswer). Any broker
// lists every broker's requests (ReadShared).

// AnswerChannel is the NOTIFY channel of posted answers; the payload is
// the holder's replica name.
const AnswerChannel = "keyhole_access_answers"

// RemoteAnswer is a person's answer to a request another broker holds.
type RemoteAnswer struct {
	ID         string
	Replica    string // the holder
	Request    string // acr_…
	Approve    bool
	ForSession bool
	By, Note   string
}

// HolderOf returns the broker (replica) that holds request id, or "".
func HolderOf(ctx context.Context, db *pgxpool.Pool, id string) (string, error) {
	var r string
	err := db.QueryRow(ctx, `SELECT replica FROM keyhole_access WHERE id = $1 ORDER BY replica LIMIT 1`, id).Scan(&r)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("access: find the broker of %s: %w", id, err)
	}
	return r, nil
}

// PostAnswer stores an answer for its holder and notifies it; it returns
// the answer's id.
func PostAnswer(ctx context.Context, db *pgxpool.Pool, a RemoteAnswer) (string, error) {
	var b [12]byte
	rand.Read(b[:])
	a.ID = "ans_" + hex.EncodeToString(b[:])
	err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO keyhole_access_answers(id, replica, request, approve, for_session, by_whom, note) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
			a.ID, a.Replica, a.Request, a.Approve, a.ForSession, a.By, a.Note); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, AnswerChannel, a.Replica)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("access: post the answer to %s: %w", a.Request, err)
	}
	return a.ID, nil
}

// ErrNoAnswer says the holding broker did not apply an answer in time
// (it is down, or cannot reach the store).
var ErrNoAnswer = errors.New("access: the broker that holds the request did not take the answer")

// AwaitAnswer waits until the holder has applied answer id, and returns
// the request as answered or the holder's error.
func AwaitAnswer(ctx context.Context, db *pgxpool.Pool, id string, timeout time.Duration) (Request, error) {
	deadline := time.Now().Add(timeout)
	for {
		var done bool
		var result, errText *string
		if err := db.QueryRow(ctx, `SELECT done, result, error FROM keyhole_access_answers WHERE id = $1`, id).Scan(&done, &result, &errText); err != nil {
			return Request{}, fmt.Errorf("access: read the answer %s: %w", id, err)
		}
		if done {
			db.Exec(context.WithoutCancel(ctx), `DELETE FROM keyhole_access_answers WHERE id = $1`, id)
			if errText != nil && *errText != "" {
				return Request{}, errors.New(*errText)
			}
			var r Request
			if result == nil || json.Unmarshal([]byte(*result), &r) != nil {
				return Request{}, fmt.Errorf("access: the answer %s came back without a request", id)
			}
			return r, nil
		}
		if time.Now().After(deadline) {
			// Withdrawn, unless the holder takes it at this very moment.
			db.Exec(context.WithoutCancel(ctx), `DELETE FROM keyhole_access_answers WHERE id = $1 AND NOT done`, id)
			return Request{}, ErrNoAnswer
		}
		select {
		case <-ctx.Done():
			return Request{}, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// TakeAnswers returns the answers pending for replica, oldest first.
func TakeAnswers(ctx context.Context, db *pgxpool.Pool, replica string) ([]RemoteAnswer, error) {
	rows, err := db.Query(ctx, `SELECT id, replica, request, approve, for_session, by_whom, note FROM keyhole_access_answers WHERE replica = $1 AND NOT done ORDER BY asked`, replica)
	if err != nil {
		return nil, fmt.Errorf("access: read answers: %w", err)
	}
	defer rows.Close()
	var out []RemoteAnswer
	for rows.Next() {
		var a RemoteAnswer
		if err := rows.Scan(&a.ID, &a.Replica, &a.Request, &a.Approve, &a.ForSession, &a.By, &a.Note); err != nil {
			return nil, fmt.Errorf("access: read answers: %w", err)
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// FinishAnswer writes what applying answer id gave. It reports false when
// the answer was withdrawn meanwhile (its asker gave up).
func FinishAnswer(ctx context.Context, db *pgxpool.Pool, id string, r Request, applyErr error) (bool, error) {
	var result, errText *string
	if applyErr != nil {
		s := applyErr.Error()
		errText = &s
	} else {
		b, err := json.Marshal(r)
		if err != nil {
			return false, err
		}
		s := string(b)
		result = &s
	}
	tag, err := db.Exec(ctx, `UPDATE keyhole_access_answers SET done = true, result = $2, error = $3 WHERE id = $1 AND NOT done`, id, result, errText)
	if err != nil {
		return false, fmt.Errorf("access: write the result of %s: %w", id, err)
	}
	return tag.RowsAffected() == 1, nil
}

// ReadShared returns the requests every broker but except holds, each
// checked against its MAC (keyed from key, as Options.Key) and naming its
// replica; a record that fails its MAC is left out.
func ReadShared(ctx context.Context, db *pgxpool.Pool, key []byte, except string) ([]Request, error) {
	k, err := deriveKeys(key)
	if err != nil {
		return nil, err
	}
	rows, err := db.Query(ctx, `SELECT replica, id, record FROM keyhole_access WHERE replica <> $1 ORDER BY replica, id`, except)
	if err != nil {
		return nil, fmt.Errorf("access: read the brokers' requests: %w", err)
	}
	defer rows.Close()
	var out []Request
	for rows.Next() {
		var replica, id, v string
		if err := rows.Scan(&replica, &id, &v); err != nil {
			return nil, fmt.Errorf("access: read the brokers' requests: %w", err)
		}
		var env envelope
		var rec stored
		if json.Unmarshal([]byte(v), &env) != nil || !hmacEqualHex(k.recordMAC(env.Record), env.MAC) ||
			json.Unmarshal(env.Record, &rec) != nil || rec.ID != id {
			continue
		}
		rec.Request.Replica = replica
		out = append(out, rec.Request)
	}
	return out, rows.Err()
}
