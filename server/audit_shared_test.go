package server

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"sync"
	"testing"
	"time"

	"github.com/keyhole-dev/keyhole/server/audit"
	"github.com/keyhole-dev/keyhole/server/pgstore"
	"github.com/keyhole-dev/keyhole/server/servertest"
	"github.com/keyhole-dev/keyhole/vault"
	"github.com/keyhole-dev/keyhole/vault/pgvault"
)

// The audit of a store reads every broker's chain: merged, verified one
// by one, and followed as each grows.
func TestSharedAuditMergesVerifiesAndFollowsEveryChain(t *testing.T) {
	ctx := context.Background()
	url, keys, chains := sharedChains(t, "a", "b")
	write := func(r, tool string) {
		if _, err := chains[r].Write(ctx, audit.Record{Session: "ses_1", Tool: tool, Decision: audit.Deny}); err != nil {
			t.Fatal(err)
		}
	}
	write("a", "first")
	write("b", "second")

	s, err := OpenSharedAudit(ctx, url, keys, "")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	recs, err := s.Query(audit.Filter{})
	if err != nil || len(recs) != 2 || recs[0].Tool != "first" || recs[0].Replica != "a" || recs[1].Replica != "b" {
		t.Fatalf("Query = %+v, %v; want a's record then b's", recs, err)
	}
	if r, err := s.Get("b:1"); err != nil || r.Tool != "second" {
		t.Fatalf("Get(b:1) = %+v, %v", r, err)
	}
	reps, err := s.Verify(ctx, audit.VerifyOptions{})
	if err != nil || len(reps) != 2 || !reps[0].OK || !reps[1].OK {
		t.Fatalf("Verify = %+v, %v", reps, err)
	}

	fctx, cancel := context.WithCancel(ctx)
	var mu sync.Mutex
	seen := map[string]bool{}
	done := make(chan error, 1)
	go func() {
		done <- s.Follow(fctx, audit.Filter{}, func(rs []audit.Record) error {
			mu.Lock()
			defer mu.Unlock()
			for _, r := range rs {
				seen[r.Replica+"/"+r.Tool] = true
			}
			return nil
		})
	}()
	write("a", "third")
	write("b", "fourth")
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
		mu.Lock()
		ok := seen["a/first"] && seen["b/second"] && seen["a/third"] && seen["b/fourth"]
		mu.Unlock()
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Follow saw %v in a minute; want the first two and both chains' new records", seen)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Follow = %v", err)
	}
}

// sharedChains migrates a store and opens a writable chain of each
// replica.
func sharedChains(t *testing.T, replicas ...string) (string, vault.KeySource, map[string]*audit.Log) {
	t.Helper()
	ctx := context.Background()
	url := servertest.PostgresURL(t)
	key := make([]byte, 32)
	rand.Read(key)
	keys := vault.KeySource{EnvKey: base64.StdEncoding.EncodeToString(key)}
	if _, err := MigrateStore(ctx, StoreMigrateOptions{Store: url, Keys: keys}); err != nil {
		t.Fatal(err)
	}
	db, err := pgstore.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	v, err := pgvault.Open(ctx, db, keys)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	chains := map[string]*audit.Log{}
	for _, r := range replicas {
		l, err := audit.Open(audit.Options{Postgres: db, Replica: r, Holder: r, Key: v.DeriveKey(auditKeyLabel), Checkpoint: v})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		chains[r] = l
	}
	return url, keys, chains
}
