package sessions

import (
	"context"
	"errors"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyhole-dev/keyhole/policy"
	"github.com/keyhole-dev/keyhole/server/servertest"
)

func TestMain(m *testing.M) { os.Exit(servertest.MainWithPostgres(m)) }

// twoBrokers returns two stores on one database, as two brokers hold.
func twoBrokers(t *testing.T) (*PGStore, *PGStore) {
	t.Helper()
	db := servertest.MigratedPostgres(t)
	a, _ := OpenPostgres(db, testKey)
	b, _ := OpenPostgres(db, testKey)
	return a, b
}

var pt0 = time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)

func newRecord(id string) Record {
	return Record{SessionInfo: policy.SessionInfo{ID: id, Scope: "triage", Created: pt0, Expires: pt0.Add(time.Hour), State: policy.StateActive}, ConfigSHA256: "abc"}
}

func TestPostgresTokenMadeOnOneBrokerWorksOnAnother(t *testing.T) {
	a, b := twoBrokers(t)
	tok, err := a.Create(newRecord("ses_1"))
	if err != nil {
		t.Fatal(err)
	}
	rec, err := b.Lookup(tok)
	if err != nil || rec.ID != "ses_1" || rec.Scope != "triage" {
		t.Fatalf("b.Lookup = %+v, %v", rec, err)
	}
	forged := tok[:len(tok)-1] + "x"
	if tok[len(tok)-1] == 'x' {
		forged = tok[:len(tok)-1] + "y"
	}
	if _, err := b.Lookup(forged); !errors.Is(err, ErrUnknownToken) {
		t.Fatalf("Lookup(forged) = %v, want ErrUnknownToken", err)
	}
	var stored string
	if err := a.db.QueryRow(context.Background(), `SELECT string_agg(id || token_hash || record, ' ') FROM keyhole_sessions`).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(stored, tok) {
		t.Fatal("the token is stored; only its hash may be")
	}
}

// max_calls across brokers: every call is counted by one atomic UPDATE,
// so concurrent calls through two brokers get the numbers 1..n once each.
func TestPostgresCountCallIsExactUnderConcurrency(t *testing.T) {
	a, b := twoBrokers(t)
	if _, err := a.Create(newRecord("ses_1")); err != nil {
		t.Fatal(err)
	}
	const n = 60
	got := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := a
			if i%2 == 1 {
				s = b
			}
			sh, err := s.CountCall("ses_1", pt0)
			if err != nil {
				t.Errorf("CountCall = %v", err)
				return
			}
			got[i] = sh.Calls
		}()
	}
	wg.Wait()
	sort.Ints(got)
	for i, c := range got {
		if c != i+1 {
			t.Fatalf("call numbers = %v, want 1..%d once each", got, n)
		}
	}
	rec, err := b.Get("ses_1")
	if err != nil || rec.Calls != n {
		t.Fatalf("Get = calls %d, %v; want %d", rec.Calls, err, n)
	}
}

// A revocation saved by one broker is what the other's next count sees,
// and a save from a broker that has not seen it yet does not undo it.
func TestPostgresRevocationIsFinalAcrossBrokers(t *testing.T) {
	a, b := twoBrokers(t)
	if _, err := a.Create(newRecord("ses_1")); err != nil {
		t.Fatal(err)
	}
	stale, _ := b.Get("ses_1")
	revoked := newRecord("ses_1").SessionInfo
	revoked.State, revoked.EndReason = policy.StateRevoked, "by ops"
	if err := a.Save(revoked); err != nil {
		t.Fatal(err)
	}
	sh, err := b.CountCall("ses_1", pt0)
	if err != nil || sh.State != policy.StateRevoked || sh.EndReason != "by ops" || sh.Calls != 0 {
		t.Fatalf("b.CountCall after revoke = %+v, %v; want revoked, no call counted", sh, err)
	}
	stale.Calls = 3
	if err := b.Save(stale.SessionInfo); err != nil {
		t.Fatal(err)
	}
	rec, _ := a.Get("ses_1")
	if rec.State != policy.StateRevoked || rec.Calls != 3 {
		t.Fatalf("after a stale save: %+v, want revoked with the counter kept", rec.SessionInfo)
	}
}

func TestPostgresEditedRecordIsRefused(t *testing.T) {
	a, _ := twoBrokers(t)
	tok, err := a.Create(newRecord("ses_1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.db.Exec(context.Background(), `UPDATE keyhole_sessions SET record = replace(record, '"triage"', '"admin"')`); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Lookup(tok); !errors.Is(err, ErrTampered) {
		t.Fatalf("Lookup(edited) = %v, want ErrTampered", err)
	}
	if _, err := a.CountCall("ses_1", pt0); !errors.Is(err, ErrTampered) {
		t.Fatalf("CountCall(edited) = %v, want ErrTampered", err)
	}
	if err := a.Quarantine("ses_1", "edited"); err != nil {
		t.Fatal(err)
	}
	if rec, err := a.Get("ses_1"); err != nil || rec.Tampered || rec.State != policy.StateEnded {
		t.Fatalf("Get after Quarantine = %+v, %v", rec, err)
	}
	if err := a.PutConfig(configHash([]byte("v: 1")), []byte("v: 1")); err != nil {
		t.Fatal(err)
	}
	if body, err := a.Config(configHash([]byte("v: 1"))); err != nil || string(body) != "v: 1" {
		t.Fatalf("Config = %q, %v", body, err)
	}
}
