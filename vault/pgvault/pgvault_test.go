package pgvault_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keyhole-dev/keyhole/server/servertest"
	"github.com/keyhole-dev/keyhole/vault"
	"github.com/keyhole-dev/keyhole/vault/pgvault"
)

func TestMain(m *testing.M) { os.Exit(servertest.MainWithPostgres(m)) }

func randomKey(t *testing.T) vault.KeySource {
	k := make([]byte, 32)
	rand.Read(k)
	return vault.KeySource{EnvKey: base64.StdEncoding.EncodeToString(k)}
}

func newStore(t *testing.T) *pgxpool.Pool {
	t.Helper()
	db := servertest.MigratedPostgres(t)
	return db
}

func open(t *testing.T, db *pgxpool.Pool, ks vault.KeySource) *pgvault.Vault {
	t.Helper()
	v, err := pgvault.Open(context.Background(), db, ks)
	if err != nil {
		t.Fatalf("Open = %v", err)
	}
	t.Cleanup(func() { v.Close() })
	return v
}

func TestSecretsRoundTripSealedWithTheirNames(t *testing.T) {
	ctx := context.Background()
	db := newStore(t)
	ks := randomKey(t)
	if _, err := pgvault.Open(ctx, db, ks); !errors.Is(err, pgvault.ErrNoVault) {
		t.Fatalf("Open(no vault) = %v, want ErrNoVault", err)
	}
	if err := pgvault.Create(ctx, db, ks, nil); err != nil {
		t.Fatal(err)
	}
	if err := pgvault.Create(ctx, db, ks, nil); !errors.Is(err, vault.ErrExists) {
		t.Fatalf("second Create = %v, want ErrExists", err)
	}
	if _, err := pgvault.Open(ctx, db, randomKey(t)); !errors.Is(err, vault.ErrWrongKey) {
		t.Fatalf("Open(wrong key) = %v, want ErrWrongKey", err)
	}
	v := open(t, db, ks)
	const value = "ghp_0123456789abcdefSECRETvalue"
	if err := v.Set("github_token", []byte(value), "GitHub"); err != nil {
		t.Fatal(err)
	}
	if err := v.Set("github_token", []byte("x"), ""); !errors.Is(err, vault.ErrExists) {
		t.Fatalf("Set(existing) = %v, want ErrExists", err)
	}
	s, err := v.Get("github_token")
	if err != nil || string(s.Bytes()) != value {
		t.Fatalf("Get = %v, %v", s, err)
	}
	if _, err := v.Get("nope"); !errors.Is(err, vault.ErrNotFound) {
		t.Fatalf("Get(nope) = %v, want ErrNotFound", err)
	}
	m, err := v.Rotate("github_token", []byte(value+"2"))
	if err != nil || m.Version != 2 {
		t.Fatalf("Rotate = %+v, %v; want version 2", m, err)
	}
	if _, err := v.Replace("github_token", []byte("stale"), []byte("next")); !errors.Is(err, vault.ErrChanged) {
		t.Fatalf("Replace(stale prev) = %v, want ErrChanged", err)
	}
	if m, err = v.Replace("github_token", []byte(value+"2"), []byte(value+"3")); err != nil || m.Version != 3 {
		t.Fatalf("Replace = %+v, %v", m, err)
	}
	used := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := v.Touch("github_token", used); err != nil {
		t.Fatal(err)
	}
	if err := v.SetStatus("github_token", "needs login\n"); err != nil {
		t.Fatal(err)
	}
	if m, err = v.Meta("github_token"); err != nil || !m.LastUsed.Equal(used) || m.Status != "needs login " || m.Description != "GitHub" {
		t.Fatalf("Meta = %+v, %v", m, err)
	}
	// Invariant 1: no form of the value is in the database.
	var dump string
	if err := db.QueryRow(ctx, `SELECT string_agg(name || version || sealed || meta, ' ') FROM keyhole_secrets`).Scan(&dump); err != nil {
		t.Fatal(err)
	}
	for _, form := range []string{value, base64.StdEncoding.EncodeToString([]byte(value + "3")), "GitHub"} {
		if strings.Contains(dump, form) {
			t.Fatalf("the secrets table holds %q in clear", form)
		}
	}
	// A sealed value copied under another name does not open.
	if err := v.Set("other", []byte("other-value"), ""); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(ctx, `UPDATE keyhole_secrets SET sealed = (SELECT sealed FROM keyhole_secrets WHERE name = 'github_token') WHERE name = 'other'`); err != nil {
		t.Fatal(err)
	}
	v2 := open(t, db, ks) // a fresh cache
	if _, err := v2.Get("other"); !errors.Is(err, vault.ErrCorrupt) {
		t.Fatalf("Get(moved value) = %v, want ErrCorrupt", err)
	}
	list, err := v.List()
	if err != nil || len(list) != 2 || list[0].Name != "github_token" {
		t.Fatalf("List = %+v, %v", list, err)
	}
	if err := v.Delete("other"); err != nil {
		t.Fatal(err)
	}
	if err := v.Delete("other"); !errors.Is(err, vault.ErrNotFound) {
		t.Fatalf("Delete twice = %v, want ErrNotFound", err)
	}
}

func TestRecordsAndTheirRemoval(t *testing.T) {
	ctx := context.Background()
	db := newStore(t)
	ks := randomKey(t)
	if err := pgvault.Create(ctx, db, ks, nil); err != nil {
		t.Fatal(err)
	}
	v := open(t, db, ks)
	if _, err := v.GetRecord("audit.checkpoint"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("GetRecord(never stored) = %v, want fs.ErrNotExist", err)
	}
	if err := v.PutRecord("audit.checkpoint", []byte("one")); err != nil {
		t.Fatal(err)
	}
	if err := v.PutRecord("audit.checkpoint", []byte("two")); err != nil {
		t.Fatal(err)
	}
	if got, err := v.GetRecord("audit.checkpoint"); err != nil || string(got) != "two" {
		t.Fatalf("GetRecord = %q, %v", got, err)
	}
	if _, err := db.Exec(ctx, `DELETE FROM keyhole_records`); err != nil {
		t.Fatal(err)
	}
	if _, err := v.GetRecord("audit.checkpoint"); !errors.Is(err, vault.ErrRecordRemoved) {
		t.Fatalf("GetRecord(removed) = %v, want ErrRecordRemoved", err)
	}
}

// A rotation through one broker reaches every other's next Get: the
// cache of sealed rows is emptied by NOTIFY.
func TestRotationReachesAnotherBrokersCache(t *testing.T) {
	ctx := context.Background()
	db := newStore(t)
	ks := randomKey(t)
	if err := pgvault.Create(ctx, db, ks, nil); err != nil {
		t.Fatal(err)
	}
	a, b := open(t, db, ks), open(t, db, ks)
	if err := a.Set("tok", []byte("first-value"), ""); err != nil {
		t.Fatal(err)
	}
	for range 3 { // b caches it
		if s, err := b.Get("tok"); err != nil || string(s.Bytes()) != "first-value" {
			t.Fatalf("b.Get = %v, %v", s, err)
		}
	}
	if _, err := a.Rotate("tok", []byte("second-value")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute) // a bound for a broken build, not a timing assertion
	for {
		s, err := b.Get("tok")
		if err != nil {
			t.Fatal(err)
		}
		if string(s.Bytes()) == "second-value" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("b still reads the rotated-away value a minute after the rotation")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A vault file's root key moves with it: derived keys stay the same.
func TestCreateWithTheRootOfAVaultFile(t *testing.T) {
	ctx := context.Background()
	db := newStore(t)
	ks := randomKey(t)
	fv, err := vault.Create(filepath.Join(t.TempDir(), "vault.db"), ks)
	if err != nil {
		t.Fatal(err)
	}
	defer fv.Close()
	d, err := fv.Dump()
	if err != nil {
		t.Fatal(err)
	}
	if err := pgvault.Create(ctx, db, ks, d.Root); err != nil {
		t.Fatal(err)
	}
	v := open(t, db, ks)
	if got, want := v.DeriveKey("keyhole audit v1"), fv.DeriveKey("keyhole audit v1"); string(got) != string(want) {
		t.Fatal("the derived audit key differs from the vault file's")
	}
}
