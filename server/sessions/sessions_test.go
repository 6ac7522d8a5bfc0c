package sessions

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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

func TestStoreKeepsOnlyTheHash(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sessions.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)
	info := policy.SessionInfo{ID: "ses_a", Scope: "triage", Created: now, Expires: now.Add(time.Hour), State: policy.StateActive}
	tok, err := s.Create(info)
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

// TestSnapshotReadsBesideAnOpenStore: Snapshot reads what an open store
// wrote without opening the file with buntdb, a torn tail included.
func TestSnapshotReadsBesideAnOpenStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sessions.db")
	if _, err := Snapshot(path); !errors.Is(err, ErrNoStore) {
		t.Fatalf("Snapshot of no file = %v, want ErrNoStore", err)
	}
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for i, label := range []string{"nightly", "release"} {
		if _, err := s.Create(policy.SessionInfo{ID: "ses_" + label, Scope: "triage", Label: label, Created: now.Add(time.Duration(i) * time.Minute), State: policy.StateActive}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Save(policy.SessionInfo{ID: "ses_nightly", Scope: "triage", Label: "nightly", Created: now, State: policy.StateRevoked, EndReason: "revoked by operator"}); err != nil {
		t.Fatal(err)
	}
	got, err := Snapshot(path)
	if err != nil || len(got) != 2 || got[0].ID != "ses_nightly" || got[0].State != policy.StateRevoked || got[1].Label != "release" {
		t.Fatalf("Snapshot = %+v, %v; want nightly (revoked) and release", got, err)
	}
	// A record half written as the snapshot reads the file.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("*3\r\n$3\r\nset\r\n$11\r\nsession:ses")
	f.Close()
	if got, err := Snapshot(path); err != nil || len(got) != 2 {
		t.Fatalf("Snapshot with a torn tail = %d sessions, %v; want the 2 committed", len(got), err)
	}
}
