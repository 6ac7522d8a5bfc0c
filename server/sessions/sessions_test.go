package sessions

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/buntdb"

	"github.com/keyhole-dev/keyhole/policy"
)

func TestTokenShape(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 200; i++ {
		tok, err := NewToken()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(tok, TokenPrefix) || len(tok) != len(TokenPrefix)+payloadChars+checksumLen {
			t.Fatalf("token %q has the wrong shape", tok)
		}
		if !WellFormed(tok) {
			t.Fatalf("WellFormed(%q) = false for a fresh token", tok)
		}
		if seen[tok] {
			t.Fatal("NewToken repeated a token")
		}
		seen[tok] = true
		// Any single changed character breaks the checksum.
		b := []byte(tok)
		pos := len(TokenPrefix) + i%(payloadChars+checksumLen)
		if b[pos] == 'a' {
			b[pos] = 'b'
		} else {
			b[pos] = 'a'
		}
		if WellFormed(string(b)) {
			t.Fatalf("WellFormed accepted %q, a token with character %d changed", b, pos)
		}
	}
	for _, bad := range []string{"", "khs_", "ghp_" + strings.Repeat("a", 49), "khs_" + strings.Repeat("!", 49)} {
		if WellFormed(bad) {
			t.Errorf("WellFormed(%q) = true", bad)
		}
	}
}

var testKey = bytes.Repeat([]byte{7}, 32)

func TestStoreKeepsOnlyTheHash(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sessions.db")
	s, err := Open(path, testKey)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)
	info := policy.SessionInfo{ID: "ses_a", Scope: "triage", Created: now, Expires: now.Add(time.Hour), State: policy.StateActive}
	tok, err := s.Create(Record{SessionInfo: info})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := s.Lookup(tok)
	if err != nil || rec.ID != "ses_a" || rec.TokenHash != Hash(tok) {
		t.Fatalf("Lookup = %+v, %v", rec, err)
	}
	other, _ := NewToken()
	if _, err := s.Lookup(other); !errors.Is(err, ErrUnknownToken) {
		t.Fatalf("Lookup(unknown) = %v, want ErrUnknownToken", err)
	}
	info.Calls, info.State = 7, policy.StateRevoked
	if err := s.Save(info); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Get("ses_a"); got.Calls != 7 || got.State != policy.StateRevoked {
		t.Fatalf("after Save, Get = %+v", got)
	}
	if list, _ := s.List(); len(list) != 1 {
		t.Fatalf("List = %d sessions, want 1", len(list))
	}
	s.Close()
	raw, _ := os.ReadFile(path)
	if bytes.Contains(raw, []byte(tok)) || bytes.Contains(raw, []byte(tok[len(TokenPrefix):])) {
		t.Fatal("the session store holds the token itself")
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("session store mode %v, want 0600", fi.Mode().Perm())
	}
}

// editRecord rewrites the stored JSON of session id in the file at path
// (buntdb's append log: the last SET of a key wins) through fn, as someone
// with write access to the data dir and no key would.
func editRecord(t *testing.T, path, key string, fn func(map[string]any)) {
	t.Helper()
	s, err := Open(path, testKey)
	if err != nil {
		t.Fatal(err)
	}
	var raw string
	s.db.View(func(tx *buntdb.Tx) error { raw, err = tx.Get(key); return err })
	s.Close()
	if err != nil {
		t.Fatalf("no %s in the store: %v", key, err)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(raw), &m); err != nil {
		t.Fatal(err)
	}
	fn(m)
	out, _ := json.Marshal(m)
	line := fmt.Sprintf("*3\r\n$3\r\nset\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", len(key), key, len(out), out)
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(line)
	f.Close()
}

// TestASessionRecordEditedOnDiskIsRefused (issue 14 item 6): a record
// with a later expiry, another scope, another config or a copied MAC
// reads as tampered; its token opens nothing and Save will not re-seal it.
func TestASessionRecordEditedOnDiskIsRefused(t *testing.T) {
	now := time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)
	edits := map[string]func(map[string]any){
		"a later expiry":     func(m map[string]any) { m["expires"] = now.Add(48 * time.Hour).Format(time.RFC3339) },
		"another scope":      func(m map[string]any) { m["scope"] = "admin" },
		"another config":     func(m map[string]any) { m["config_sha256"] = strings.Repeat("0", 64) },
		"revived":            func(m map[string]any) { m["state"] = "active"; delete(m, "end_reason") },
		"no MAC":             func(m map[string]any) { delete(m, "mac") },
		"a reset counter":    func(m map[string]any) { m["calls"] = 0 },
		"an unrelayed stdio": func(m map[string]any) { delete(m, "relay") },
	}
	for name, edit := range edits {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "sessions.db")
			s, err := Open(path, testKey)
			if err != nil {
				t.Fatal(err)
			}
			info := policy.SessionInfo{ID: "ses_a", Scope: "narrow", Created: now, Expires: now.Add(time.Hour), State: policy.StateActive, Calls: 3}
			tok, err := s.Create(Record{SessionInfo: info, ConfigSHA256: strings.Repeat("a", 64), Relay: true})
			if err != nil {
				t.Fatal(err)
			}
			if name == "revived" {
				info.State, info.EndReason = policy.StateRevoked, "revoked by operator"
				if err := s.Save(info); err != nil {
					t.Fatal(err)
				}
			}
			s.Close()
			editRecord(t, path, "session:ses_a", edit)

			s, err = Open(path, testKey)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if _, err := s.Lookup(tok); !errors.Is(err, ErrTampered) {
				t.Fatalf("Lookup after %s = %v, want ErrTampered", name, err)
			}
			if rec, err := s.Get("ses_a"); err != nil || !rec.Tampered {
				t.Fatalf("Get after %s = %+v, %v; want Tampered", name, rec, err)
			}
			if err := s.Save(info); !errors.Is(err, ErrTampered) {
				t.Fatalf("Save over a record edited by %s = %v, want ErrTampered", name, err)
			}
			if err := s.Quarantine("ses_a", "edited"); err != nil {
				t.Fatal(err)
			}
			rec, err := s.Get("ses_a")
			if err != nil || rec.Tampered || rec.State != policy.StateEnded || rec.EndReason != "edited" {
				t.Fatalf("after Quarantine, Get = %+v, %v; want an intact, ended record", rec, err)
			}
		})
	}
}

// TestARecordMovedUnderAnotherIDIsRefused: a valid record copied under
// another session's key does not pass for that session.
func TestARecordMovedUnderAnotherIDIsRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sessions.db")
	s, err := Open(path, testKey)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)
	for _, id := range []string{"ses_wide", "ses_narrow"} {
		if _, err := s.Create(Record{SessionInfo: policy.SessionInfo{ID: id, Scope: id, Created: now, Expires: now.Add(time.Hour)}}); err != nil {
			t.Fatal(err)
		}
	}
	var wide string
	s.db.View(func(tx *buntdb.Tx) error { wide, err = tx.Get("session:ses_wide"); return err })
	s.db.Update(func(tx *buntdb.Tx) error { _, _, err := tx.Set("session:ses_narrow", wide, nil); return err })
	if rec, err := s.Get("ses_narrow"); err != nil || !rec.Tampered || rec.ID != "ses_narrow" {
		t.Fatalf("Get(ses_narrow) holding ses_wide's record = %+v, %v; want Tampered", rec, err)
	}
	s.Close()
}

func TestConfigSnapshots(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sessions.db")
	s, err := Open(path, testKey)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	body := []byte("version: 1\n")
	sha := configHash(body)
	if err := s.PutConfig(sha, body); err != nil {
		t.Fatal(err)
	}
	if err := s.PutConfig(sha, []byte("version: 2\n")); err == nil {
		t.Fatal("PutConfig accepted bytes that do not hash to the name")
	}
	if got, err := s.Config(sha); err != nil || string(got) != string(body) {
		t.Fatalf("Config(%s) = %q, %v", sha, got, err)
	}
	if _, err := s.Config(strings.Repeat("b", 64)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Config(unknown) = %v, want ErrNotFound", err)
	}
	s.db.Update(func(tx *buntdb.Tx) error {
		_, _, err := tx.Set("config:"+sha, "version: 1\nscopes: {}\n", nil)
		return err
	})
	if _, err := s.Config(sha); !errors.Is(err, ErrTampered) {
		t.Fatalf("Config of an edited snapshot = %v, want ErrTampered", err)
	}
}

func TestOpenWantsA32ByteKey(t *testing.T) {
	if _, err := Open(filepath.Join(t.TempDir(), "s.db"), []byte("short")); err == nil {
		t.Fatal("Open with a 5-byte key succeeded")
	}
}

// TestSnapshotReadsBesideAnOpenStore: Snapshot reads what an open store
// wrote without opening the file with buntdb, a torn tail included, and
// checks each record's MAC.
func TestSnapshotReadsBesideAnOpenStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sessions.db")
	if _, err := Snapshot(path, testKey); !errors.Is(err, ErrNoStore) {
		t.Fatalf("Snapshot of no file = %v, want ErrNoStore", err)
	}
	s, err := Open(path, testKey)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for i, label := range []string{"nightly", "release"} {
		if _, err := s.Create(Record{SessionInfo: policy.SessionInfo{ID: "ses_" + label, Scope: "triage", Label: label, Created: now.Add(time.Duration(i) * time.Minute), State: policy.StateActive}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Save(policy.SessionInfo{ID: "ses_nightly", Scope: "triage", Label: "nightly", Created: now, State: policy.StateRevoked, EndReason: "revoked by operator"}); err != nil {
		t.Fatal(err)
	}
	got, err := Snapshot(path, testKey)
	if err != nil || len(got) != 2 || got[0].ID != "ses_nightly" || got[0].State != policy.StateRevoked || got[1].Label != "release" || got[0].Tampered || got[1].Tampered {
		t.Fatalf("Snapshot = %+v, %v; want nightly (revoked) and release", got, err)
	}
	if got, err := Snapshot(path, bytes.Repeat([]byte{1}, 32)); err != nil || len(got) != 2 || !got[0].Tampered {
		t.Fatalf("Snapshot with another key = %+v, %v; want both records, tampered", got, err)
	}
	// A record half written as the snapshot reads the file.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("*3\r\n$3\r\nset\r\n$11\r\nsession:ses")
	f.Close()
	if got, err := Snapshot(path, testKey); err != nil || len(got) != 2 {
		t.Fatalf("Snapshot with a torn tail = %d sessions, %v; want the 2 committed", len(got), err)
	}
}
