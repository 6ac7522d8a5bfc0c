package vault

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/buntdb"
)

// The vault file is a snapshot: a record written many times is in it once,
// and no earlier value (an old audit checkpoint to replay, an old
// ciphertext) survives any write.
func TestFileKeepsNoHistory(t *testing.T) {
	v, path := newVault(t, randomKey(t))
	mustSet(t, v, "alpha", testValue)
	var sealed []string
	for i := range 20 {
		if err := v.PutRecord("audit.checkpoint", []byte(fmt.Sprintf("seq=%d", i))); err != nil {
			t.Fatalf("PutRecord(%d) = %v", i, err)
		}
		var s string
		v.view(func(tx *buntdb.Tx) error { s, _ = tx.Get(prefixRecord + "audit.checkpoint"); return nil })
		sealed = append(sealed, s)
		if err := v.Touch("alpha", time.Now().Add(time.Duration(i)*time.Minute)); err != nil {
			t.Fatalf("Touch = %v", err)
		}
	}
	old := base64.StdEncoding.EncodeToString(sealedOf(t, v, "alpha"))
	if _, err := v.Rotate("alpha", []byte("rotated-value")); err != nil {
		t.Fatalf("Rotate = %v", err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(data, []byte("record:audit.checkpoint\r\n")); n != 1 {
		t.Fatalf("the file holds record:audit.checkpoint %d times after 20 writes, want once", n)
	}
	if n := bytes.Count(data, []byte("secret:alpha\r\n")); n != 1 {
		t.Fatalf("the file holds secret:alpha %d times after 20 touches and a rotation, want once", n)
	}
	for i, s := range sealed[:len(sealed)-1] {
		if bytes.Contains(data, []byte(s)) {
			t.Fatalf("the file still holds checkpoint write %d of %d", i, len(sealed))
		}
	}
	if !bytes.Contains(data, []byte(sealed[len(sealed)-1])) {
		t.Fatalf("the file does not hold the last checkpoint; the test checks nothing")
	}
	if bytes.Contains(data, []byte(old)) {
		t.Fatalf("the file still holds the ciphertext of alpha's value before the rotation")
	}
	if _, err := os.Stat(path + ".tmp"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a temporary file was left behind: %v", err)
	}
}

// Nothing in the file dates anything: descriptions and times are sealed.
func TestMetadataIsSealed(t *testing.T) {
	v, path := newVault(t, randomKey(t))
	if err := v.Set("alpha", []byte(testValue), "acme-bot-description"); err != nil {
		t.Fatal(err)
	}
	used := time.Date(2031, 7, 9, 10, 11, 12, 0, time.UTC)
	if err := v.Touch("alpha", used); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	for _, plain := range []string{"acme-bot-description", "last_used", "created", "updated", "2031", strings.TrimSuffix(time.Now().UTC().Format(time.RFC3339), "Z")[:13]} {
		if bytes.Contains(data, []byte(plain)) {
			t.Errorf("the vault file holds %q in plaintext", plain)
		}
	}
	if m, err := v.Meta("alpha"); err != nil || m.Description != "acme-bot-description" || !m.LastUsed.Equal(used) || m.Created.IsZero() {
		t.Fatalf("Meta(alpha) = %+v, %v; want the sealed metadata back", m, err)
	}
}

// A record that was stored and removed from the file is not "never stored":
// the audit log reads a removed checkpoint as tampering.
func TestRemovedRecordIsNotNotFound(t *testing.T) {
	ks := randomKey(t)
	v, path := newVault(t, ks)
	if err := v.PutRecord("audit.checkpoint", []byte("seq=9")); err != nil {
		t.Fatal(err)
	}
	if _, err := v.GetRecord("never.stored"); !errors.Is(err, ErrNotFound) || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("GetRecord(never stored) = %v, want ErrNotFound and fs.ErrNotExist", err)
	}
	editDB(t, v, path, func(tx *buntdb.Tx) error {
		_, err := tx.Delete(prefixRecord + "audit.checkpoint")
		return err
	})
	for _, open := range []func(string, KeySource) (*Vault, error){Open, OpenReadOnly} {
		v, err := open(path, ks)
		if err != nil {
			t.Fatal(err)
		}
		_, err = v.GetRecord("audit.checkpoint")
		if !errors.Is(err, ErrRecordRemoved) || errors.Is(err, fs.ErrNotExist) || errors.Is(err, ErrNotFound) {
			t.Fatalf("GetRecord(removed) = %v, want ErrRecordRemoved, not a not-found error", err)
		}
		v.Close()
	}
}

// A vault written before metadata was sealed and record names kept is
// rewritten in the current form by the first Open, which then protects it.
func TestOpenUpgradesEarlierVault(t *testing.T) {
	ks := randomKey(t)
	v, path := newVault(t, ks)
	mustSet(t, v, "alpha", testValue)
	if err := v.PutRecord("audit.checkpoint", []byte("seq=3")); err != nil {
		t.Fatal(err)
	}
	aead, root := v.aead, append([]byte(nil), v.root...)
	created := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	var valueSealed string
	v.view(func(tx *buntdb.Tx) error {
		rec, err := decodeRecord(tx, "alpha")
		valueSealed = rec.Sealed
		return err
	})
	editDB(t, v, path, func(tx *buntdb.Tx) error {
		// The earlier form: plain metadata, and a root record of the key alone.
		old := fmt.Sprintf(`{"version":1,"description":"old-desc","created":%q,"updated":%q,"last_used":%q,"sealed":%q}`,
			created.Format(time.RFC3339), created.Format(time.RFC3339), created.Add(time.Hour).Format(time.RFC3339), valueSealed)
		if _, _, err := tx.Set(prefixSecret+"alpha", old, nil); err != nil {
			return err
		}
		_, _, err := tx.Set(keyRoot, sealString(aead, keyRoot, root), nil)
		return err
	})
	before, _ := os.ReadFile(path)
	if !bytes.Contains(before, []byte("old-desc")) {
		t.Fatalf("the earlier-form file was not written; the test checks nothing")
	}
	ro, err := OpenReadOnly(path, ks)
	if err != nil {
		t.Fatal(err)
	}
	if m, err := ro.Meta("alpha"); err != nil || m.Description != "old-desc" || !m.Created.Equal(created) {
		t.Fatalf("read-only Meta(alpha) of an earlier vault = %+v, %v", m, err)
	}
	ro.Close()
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Fatalf("OpenReadOnly rewrote the file")
	}
	v, err = Open(path, ks)
	if err != nil {
		t.Fatalf("Open(earlier vault) = %v", err)
	}
	mustGet(t, v, "alpha", testValue)
	if m, err := v.Meta("alpha"); err != nil || m.Description != "old-desc" || !m.LastUsed.Equal(created.Add(time.Hour)) {
		t.Fatalf("Meta(alpha) after the upgrade = %+v, %v", m, err)
	}
	data, _ := os.ReadFile(path)
	if bytes.Contains(data, []byte("old-desc")) || bytes.Contains(data, []byte("2025-01-02")) {
		t.Fatalf("the upgraded file still holds plain metadata")
	}
	editDB(t, v, path, func(tx *buntdb.Tx) error {
		_, err := tx.Delete(prefixRecord + "audit.checkpoint")
		return err
	})
	v, err = Open(path, ks)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if _, err := v.GetRecord("audit.checkpoint"); !errors.Is(err, ErrRecordRemoved) {
		t.Fatalf("GetRecord after removal from an upgraded vault = %v, want ErrRecordRemoved", err)
	}
}

func TestOpenReadOnlyRefusesWrites(t *testing.T) {
	ks := randomKey(t)
	v, path := newVault(t, ks)
	mustSet(t, v, "alpha", testValue)
	v.Close()
	before, _ := os.ReadFile(path)
	ro, err := OpenReadOnly(path, ks)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	mustGet(t, ro, "alpha", testValue)
	checks := map[string]error{
		"Set":       ro.Set("beta", []byte("x"), ""),
		"Touch":     ro.Touch("alpha", time.Now()),
		"PutRecord": ro.PutRecord("r", []byte("x")),
		"Delete":    ro.Delete("alpha"),
		"Rekey":     ro.Rekey(randomKey(t)),
	}
	_, checks["Rotate"] = ro.Rotate("alpha", []byte("y"))
	for name, err := range checks {
		if !errors.Is(err, ErrReadOnly) {
			t.Errorf("%s on a read-only vault = %v, want ErrReadOnly", name, err)
		}
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Fatalf("a read-only vault changed its file")
	}
}

// A write whose snapshot cannot be written fails, and the vault in memory
// goes back to what the file holds.
func TestFailedWriteChangesNothing(t *testing.T) {
	v, path := newVault(t, randomKey(t))
	mustSet(t, v, "alpha", testValue)
	// A non-empty directory where the snapshot is written.
	if err := os.MkdirAll(filepath.Join(path+".tmp", "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := v.Set("beta", []byte("b"), ""); err == nil {
		t.Fatalf("Set with an unwritable snapshot = nil error, want one")
	}
	if _, err := v.Get("beta"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get(beta) after the failed Set = %v, want ErrNotFound", err)
	}
	if err := v.PutRecord("audit.checkpoint", []byte("x")); err == nil {
		t.Fatalf("PutRecord with an unwritable snapshot = nil error, want one")
	}
	if _, err := v.GetRecord("audit.checkpoint"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetRecord after the failed PutRecord = %v, want never stored", err)
	}
	mustGet(t, v, "alpha", testValue)
	os.RemoveAll(path + ".tmp")
	mustSet(t, v, "beta", "b")
}

// Meta is read on every call (for the credential's version): it is cached,
// and every write, a rotation above all, is seen at once.
func TestMetaSeesEveryWrite(t *testing.T) {
	v, _ := newVault(t, randomKey(t))
	mustSet(t, v, "alpha", testValue)
	for i := 2; i <= 4; i++ {
		if m, err := v.Meta("alpha"); err != nil || m.Version != i-1 {
			t.Fatalf("Meta before rotation %d = %+v, %v", i, m, err)
		}
		if _, err := v.Rotate("alpha", []byte(fmt.Sprintf("value-%d", i))); err != nil {
			t.Fatal(err)
		}
		if m, _ := v.Meta("alpha"); m.Version != i {
			t.Fatalf("Meta after rotation = version %d, want %d", m.Version, i)
		}
	}
	used := time.Now().Add(time.Hour).UTC()
	if err := v.Touch("alpha", used); err != nil {
		t.Fatal(err)
	}
	if m, _ := v.Meta("alpha"); !m.LastUsed.Equal(used) {
		t.Fatalf("Meta after Touch = %+v, want last used %v", m, used)
	}
	if err := v.Delete("alpha"); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Meta("alpha"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Meta after Delete = %v, want ErrNotFound", err)
	}
	v.Close()
	if _, err := v.Meta("alpha"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Meta after Close = %v, want ErrClosed", err)
	}
}

// A read-only vault beside a live writer sees what was written since it
// opened once it is refreshed (the audit reads the newest checkpoint this
// way), forgets nothing it knew of, and refuses a file now sealed with
// another key, keeping its snapshot.
func TestRefreshReadsTheWritersFileAgain(t *testing.T) {
	ks := randomKey(t)
	w, path := newVault(t, ks)
	if err := w.PutRecord("checkpoint", []byte("#1")); err != nil {
		t.Fatal(err)
	}
	ro, err := OpenReadOnly(path, ks)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if err := w.PutRecord("checkpoint", []byte("#2")); err != nil {
		t.Fatal(err)
	}
	mustSet(t, w, "alpha", testValue)
	if got, _ := ro.GetRecord("checkpoint"); string(got) != "#1" {
		t.Fatalf("GetRecord before Refresh = %q, want the snapshot's #1", got)
	}
	if err := ro.Refresh(); err != nil {
		t.Fatalf("Refresh() = %v", err)
	}
	if got, err := ro.GetRecord("checkpoint"); string(got) != "#2" {
		t.Fatalf("GetRecord after Refresh = %q, %v; want #2", got, err)
	}
	mustGet(t, ro, "alpha", testValue)
	if m, err := ro.Meta("alpha"); err != nil || m.Version != 1 {
		t.Fatalf("Meta after Refresh = %+v, %v", m, err)
	}

	if err := w.Rekey(randomKey(t)); err != nil {
		t.Fatal(err)
	}
	if err := ro.Refresh(); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("Refresh of a rekeyed file = %v, want ErrWrongKey", err)
	}
	if got, _ := ro.GetRecord("checkpoint"); string(got) != "#2" {
		t.Fatalf("GetRecord after a refused Refresh = %q, want the snapshot kept", got)
	}
	if err := w.Refresh(); err != nil {
		t.Fatalf("Refresh of a writable vault = %v, want nil (it is the file's only writer)", err)
	}
}
