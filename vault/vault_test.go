package vault

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tidwall/buntdb"
)

// randomKey returns a KeySource with a fresh random environment key.
func randomKey(t testing.TB) KeySource {
	t.Helper()
	k := make([]byte, keySize)
	_, _ = rand.Read(k)
	return KeySource{EnvKey: base64.StdEncoding.EncodeToString(k)}
}

// newVault creates a vault in a temporary directory and closes it at cleanup.
func newVault(t testing.TB, ks KeySource) (*Vault, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "vault.db")
	v, err := Create(path, ks)
	if err != nil {
		t.Fatalf("Create(%s) = %v", path, err)
	}
	t.Cleanup(func() { _ = v.Close() })
	return v, path
}

func mustSet(t testing.TB, v *Vault, name, value string) {
	t.Helper()
	if err := v.Set(name, []byte(value), "test "+name); err != nil {
		t.Fatalf("Set(%s) = %v", name, err)
	}
}

func mustGet(t testing.TB, v *Vault, name, want string) {
	t.Helper()
	s, err := v.Get(name)
	if err != nil {
		t.Fatalf("Get(%s) = %v, want the value", name, err)
	}
	if got := string(s.Bytes()); got != want {
		t.Fatalf("Get(%s) = %q, want %q", name, got, want)
	}
}

// editDB closes v and runs fn on the raw buntdb file at path.
func editDB(t *testing.T, v *Vault, path string, fn func(tx *buntdb.Tx) error) {
	t.Helper()
	if err := v.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	db, err := buntdb.Open(path)
	if err != nil {
		t.Fatalf("buntdb.Open(%s) = %v", path, err)
	}
	if err := db.Update(fn); err != nil {
		t.Fatalf("edit %s: %v", path, err)
	}
	if err := db.Close(); err != nil {
		t.Fatalf("buntdb Close: %v", err)
	}
}

func TestRoundTrip(t *testing.T) {
	ks := randomKey(t)
	v, path := newVault(t, ks)
	before := time.Now().UTC()
	if err := v.Set("github_token", []byte(testValue), "acme bot"); err != nil {
		t.Fatalf("Set = %v", err)
	}
	mustSet(t, v, "aws.archive-ro", "AKIA-second")
	mustGet(t, v, "github_token", testValue)

	m, err := v.Meta("github_token")
	if err != nil {
		t.Fatalf("Meta = %v", err)
	}
	if m.Name != "github_token" || m.Version != 1 || m.Description != "acme bot" || m.Created.Before(before) || !m.Updated.Equal(m.Created) || !m.LastUsed.IsZero() {
		t.Fatalf("Meta(github_token) = %+v, want version 1, description, created now, no last use", m)
	}

	rotated, err := v.Rotate("github_token", []byte("ghp_rotated"))
	if err != nil {
		t.Fatalf("Rotate = %v", err)
	}
	if rotated.Version != 2 || rotated.Updated.Before(m.Updated) || !rotated.Created.Equal(m.Created) {
		t.Fatalf("Rotate = %+v, want version 2, same created, later updated (was %+v)", rotated, m)
	}
	mustGet(t, v, "github_token", "ghp_rotated")

	used := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	if err := v.Touch("github_token", used); err != nil {
		t.Fatalf("Touch = %v", err)
	}
	if err := v.Touch("github_token", used.Add(-time.Hour)); err != nil {
		t.Fatalf("Touch(earlier) = %v", err)
	}
	if m, _ := v.Meta("github_token"); !m.LastUsed.Equal(used) || m.Version != 2 {
		t.Fatalf("Meta after Touch = %+v, want LastUsed %v, version 2", m, used)
	}
	mustGet(t, v, "github_token", "ghp_rotated")

	list, err := v.List()
	if err != nil {
		t.Fatalf("List = %v", err)
	}
	if len(list) != 2 || list[0].Name != "aws.archive-ro" || list[1].Name != "github_token" || list[1].Version != 2 {
		t.Fatalf("List = %+v, want aws.archive-ro then github_token v2", list)
	}

	if err := v.Delete("aws.archive-ro"); err != nil {
		t.Fatalf("Delete = %v", err)
	}
	if _, err := v.Get("aws.archive-ro"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get(deleted) = %v, want ErrNotFound", err)
	}

	// Everything survives a reopen.
	if err := v.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	v2, err := Open(path, ks)
	if err != nil {
		t.Fatalf("Open = %v", err)
	}
	defer v2.Close()
	mustGet(t, v2, "github_token", "ghp_rotated")
	if m, _ := v2.Meta("github_token"); !m.LastUsed.Equal(used) || m.Version != 2 || m.Description != "acme bot" {
		t.Fatalf("Meta after reopen = %+v", m)
	}
	if list, _ := v2.List(); len(list) != 1 {
		t.Fatalf("List after reopen = %+v, want one secret", list)
	}
}

func TestBadInput(t *testing.T) {
	v, _ := newVault(t, randomKey(t))
	mustSet(t, v, "present", "value")
	long := "a" + strings.Repeat("b", 63)
	cases := map[string]struct {
		call func() error
		want error
	}{
		"empty name":        {func() error { return v.Set("", []byte("x"), "") }, ErrBadName},
		"name with space":   {func() error { return v.Set("my token", []byte("x"), "") }, ErrBadName},
		"name with slash":   {func() error { return v.Set("a/b", []byte("x"), "") }, ErrBadName},
		"upper case":        {func() error { return v.Set("GitHub", []byte("x"), "") }, ErrBadName},
		"leading digit":     {func() error { return v.Set("1token", []byte("x"), "") }, ErrBadName},
		"65 characters":     {func() error { return v.Set(long+"c", []byte("x"), "") }, ErrBadName},
		"newline":           {func() error { return v.Set("a\n", []byte("x"), "") }, ErrBadName},
		"non-ascii":         {func() error { return v.Set("tökén", []byte("x"), "") }, ErrBadName},
		"colon":             {func() error { return v.Set("a:b", []byte("x"), "") }, ErrBadName},
		"get bad name":      {func() error { _, err := v.Get("../x"); return err }, ErrBadName},
		"empty value":       {func() error { return v.Set("ok", nil, "") }, ErrEmptyValue},
		"rotate empty":      {func() error { _, err := v.Rotate("present", []byte{}); return err }, ErrEmptyValue},
		"set existing":      {func() error { return v.Set("present", []byte("y"), "") }, ErrExists},
		"get missing":       {func() error { _, err := v.Get("missing"); return err }, ErrNotFound},
		"meta missing":      {func() error { _, err := v.Meta("missing"); return err }, ErrNotFound},
		"rotate missing":    {func() error { _, err := v.Rotate("missing", []byte("x")); return err }, ErrNotFound},
		"delete missing":    {func() error { return v.Delete("missing") }, ErrNotFound},
		"touch missing":     {func() error { return v.Touch("missing", time.Now()) }, ErrNotFound},
		"record missing":    {func() error { _, err := v.GetRecord("missing"); return err }, ErrNotFound},
		"record name space": {func() error { return v.PutRecord("a b", []byte("x")) }, ErrBadName},
		"valid long name":   {func() error { return v.Set(long, []byte("x"), "") }, nil},
		"valid punctuation": {func() error { return v.Set("aws.archive-ro_2", []byte("x"), "") }, nil},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			err := tc.call()
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	if err := v.Set("Bad Name", []byte("x"), ""); err == nil || !strings.Contains(err.Error(), "a-z") {
		t.Fatalf("Set(Bad Name) = %v, want the naming rule in the message", err)
	}
	mustGet(t, v, "present", "value")
}

func TestFileNeverHoldsPlaintext(t *testing.T) {
	ks := randomKey(t)
	v, path := newVault(t, ks)
	mustSet(t, v, "github_token", testValue)
	mustSet(t, v, "other", testValue) // the same value twice
	if _, err := v.Rotate("other", []byte(testValue+"-2")); err != nil {
		t.Fatalf("Rotate = %v", err)
	}
	if err := v.Touch("github_token", time.Now()); err != nil {
		t.Fatalf("Touch = %v", err)
	}
	if err := v.PutRecord("audit.head", []byte(testValue)); err != nil {
		t.Fatalf("PutRecord = %v", err)
	}
	check := func(stage string) {
		t.Helper()
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("read %s: %v", path, err)
		}
		if !bytes.Contains(data, []byte("secret:github_token")) {
			t.Fatalf("%s: vault file does not hold the secret's record; the test checks nothing", stage)
		}
		for _, value := range []string{testValue, testValue + "-2"} {
			if found := leaks(data, value); len(found) > 0 {
				t.Fatalf("%s: vault file holds the value as %v", stage, found)
			}
		}
		if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: vault file mode = %#o, want 0600", stage, fi.Mode().Perm())
		}
	}
	check("after writes")
	if err := v.Rekey(randomKey(t)); err != nil {
		t.Fatalf("Rekey = %v", err)
	}
	check("after rekey")
}

// sealedOf returns the decoded nonce||ciphertext stored for secret name.
func sealedOf(t *testing.T, v *Vault, name string) []byte {
	t.Helper()
	var rec secretRecord
	err := v.view(func(tx *buntdb.Tx) error {
		var err error
		rec, err = decodeRecord(tx, name)
		return err
	})
	if err != nil {
		t.Fatalf("read record %s: %v", name, err)
	}
	b, err := base64.StdEncoding.DecodeString(rec.Sealed)
	if err != nil {
		t.Fatalf("decode record %s: %v", name, err)
	}
	return b
}

func TestNoncesDiffer(t *testing.T) {
	v, _ := newVault(t, randomKey(t))
	var sealed [][]byte
	for i := range 3 {
		name := fmt.Sprintf("s%d", i)
		mustSet(t, v, name, testValue)
		sealed = append(sealed, sealedOf(t, v, name))
	}
	for range 3 {
		if _, err := v.Rotate("s0", []byte(testValue)); err != nil {
			t.Fatalf("Rotate = %v", err)
		}
		sealed = append(sealed, sealedOf(t, v, "s0"))
	}
	const nonceSize = 12
	seen := map[string]int{}
	for i, b := range sealed {
		if len(b) != nonceSize+len(testValue)+16 {
			t.Fatalf("write %d: sealed length %d, want nonce+value+tag = %d", i, len(b), nonceSize+len(testValue)+16)
		}
		nonce := string(b[:nonceSize])
		if j, ok := seen[nonce]; ok {
			t.Fatalf("writes %d and %d share nonce %x", j, i, nonce)
		}
		seen[nonce] = i
	}
}

func TestTamperedCiphertextFailsOnlyThatRead(t *testing.T) {
	ks := randomKey(t)
	v, path := newVault(t, ks)
	mustSet(t, v, "alpha", testValue)
	mustSet(t, v, "beta", "beta-value")
	if err := v.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}

	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	at := bytes.Index(data, []byte("secret:alpha\r\n"))
	if at < 0 {
		t.Fatalf("record secret:alpha not found in the file")
	}
	field := []byte(`"sealed":"`)
	start := at + bytes.Index(data[at:], field) + len(field)
	i := start + 20 // past the nonce (16 base64 characters), inside the ciphertext
	if data[i] == 'A' {
		data[i] = 'B'
	} else {
		data[i] = 'A'
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatalf("write: %v", err)
	}

	v, err = Open(path, ks)
	if err != nil {
		t.Fatalf("Open(tampered) = %v, want the vault to open", err)
	}
	defer v.Close()
	_, err = v.Get("alpha")
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "alpha") {
		t.Fatalf("Get(alpha) = %v, want ErrCorrupt naming alpha", err)
	}
	if found := leaks([]byte(err.Error()), testValue); len(found) > 0 {
		t.Fatalf("error %q leaks the value", err)
	}
	mustGet(t, v, "beta", "beta-value")
	if m, err := v.Meta("alpha"); err != nil || m.Version != 1 {
		t.Fatalf("Meta(alpha) = %+v, %v; metadata should still read", m, err)
	}
}

func TestMovedRecordFails(t *testing.T) {
	ks := randomKey(t)
	v, path := newVault(t, ks)
	mustSet(t, v, "alpha", testValue)
	mustSet(t, v, "beta", "beta-value")
	if err := v.PutRecord("one", []byte("checkpoint")); err != nil {
		t.Fatalf("PutRecord = %v", err)
	}
	editDB(t, v, path, func(tx *buntdb.Tx) error {
		moves := [][2]string{
			{"secret:alpha", "secret:beta"},  // a secret under another name
			{"secret:alpha", "secret:gamma"}, // under a new name
			{"record:one", "record:two"},     // a record under another name
		}
		for _, m := range moves {
			val, err := tx.Get(m[0])
			if err != nil {
				return err
			}
			if _, _, err := tx.Set(m[1], val, nil); err != nil {
				return err
			}
		}
		return nil
	})
	v, err := Open(path, ks)
	if err != nil {
		t.Fatalf("Open = %v", err)
	}
	defer v.Close()
	for _, name := range []string{"beta", "gamma"} {
		if _, err := v.Get(name); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("Get(%s) of a record moved from alpha = %v, want ErrCorrupt", name, err)
		}
	}
	if _, err := v.GetRecord("two"); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("GetRecord(two) of a record moved from one = %v, want ErrCorrupt", err)
	}
	mustGet(t, v, "alpha", testValue)
}

func TestWrongKey(t *testing.T) {
	v, path := newVault(t, randomKey(t))
	mustSet(t, v, "alpha", testValue)
	if err := v.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	before, _ := os.ReadFile(path)
	_, err := Open(path, randomKey(t))
	if !errors.Is(err, ErrWrongKey) {
		t.Fatalf("Open(wrong key) = %v, want ErrWrongKey", err)
	}
	if !strings.Contains(err.Error(), "wrong master key") || !strings.Contains(err.Error(), EnvMasterKey) {
		t.Fatalf("Open(wrong key) = %q, want a message naming the key's source", err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Fatalf("Open(wrong key) changed the vault file")
	}
}

func TestRekey(t *testing.T) {
	oldKey := randomKey(t)
	v, path := newVault(t, oldKey)
	secrets := map[string]string{"alpha": testValue, "beta": "beta-value", "gamma": "gamma-value"}
	for name, val := range secrets {
		mustSet(t, v, name, val)
	}
	if _, err := v.Rotate("beta", []byte("beta-2")); err != nil {
		t.Fatalf("Rotate = %v", err)
	}
	secrets["beta"] = "beta-2"
	mustSet(t, v, "deleted", "gone")
	if err := v.Delete("deleted"); err != nil {
		t.Fatalf("Delete = %v", err)
	}
	if err := v.PutRecord("audit.head", []byte("seq=7")); err != nil {
		t.Fatalf("PutRecord = %v", err)
	}
	metaBefore, _ := v.List()
	derived := v.DeriveKey("keyhole audit v1")
	oldSealed := base64.StdEncoding.EncodeToString(sealedOf(t, v, "alpha"))

	newKey := randomKey(t)
	if err := v.Rekey(newKey); err != nil {
		t.Fatalf("Rekey = %v", err)
	}
	verify := func(v *Vault, stage string) {
		t.Helper()
		for name, val := range secrets {
			mustGet(t, v, name, val)
		}
		if got, err := v.GetRecord("audit.head"); err != nil || string(got) != "seq=7" {
			t.Fatalf("%s: GetRecord = %q, %v", stage, got, err)
		}
		if list, _ := v.List(); fmt.Sprint(list) != fmt.Sprint(metaBefore) {
			t.Fatalf("%s: List = %+v, want metadata unchanged %+v", stage, list, metaBefore)
		}
		if got := v.DeriveKey("keyhole audit v1"); !bytes.Equal(got, derived) {
			t.Fatalf("%s: DeriveKey changed across Rekey", stage)
		}
	}
	verify(v, "same handle")
	if err := v.Set("after", []byte("x"), ""); err != nil {
		t.Fatalf("Set after Rekey = %v", err)
	}
	secrets["after"] = "x"
	metaBefore, _ = v.List()
	if err := v.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}

	data, _ := os.ReadFile(path)
	if bytes.Contains(data, []byte(oldSealed)) {
		t.Fatalf("the vault file still holds a ciphertext sealed under the old key")
	}
	if _, err := os.Stat(path + ".rekey"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("temporary rekey file left behind: %v", err)
	}
	if _, err := Open(path, oldKey); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("Open(old key) after Rekey = %v, want ErrWrongKey", err)
	}
	v2, err := Open(path, newKey)
	if err != nil {
		t.Fatalf("Open(new key) = %v", err)
	}
	defer v2.Close()
	verify(v2, "reopened")
}

func TestRekeyRefusesCorruptSecret(t *testing.T) {
	ks := randomKey(t)
	v, path := newVault(t, ks)
	mustSet(t, v, "alpha", testValue)
	mustSet(t, v, "beta", "beta-value")
	editDB(t, v, path, func(tx *buntdb.Tx) error {
		val, err := tx.Get("secret:alpha")
		if err != nil {
			return err
		}
		_, _, err = tx.Set("secret:beta", val, nil)
		return err
	})
	v, err := Open(path, ks)
	if err != nil {
		t.Fatalf("Open = %v", err)
	}
	defer v.Close()
	if err := v.Rekey(randomKey(t)); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "beta") {
		t.Fatalf("Rekey over a corrupt secret = %v, want ErrCorrupt naming beta", err)
	}
	mustGet(t, v, "alpha", testValue) // still readable under the old key
	if err := v.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	if _, err := Open(path, ks); err != nil {
		t.Fatalf("Open(old key) after a refused Rekey = %v", err)
	}
}

func TestOpenBadFiles(t *testing.T) {
	ks := randomKey(t)
	good, goodPath := newVault(t, ks)
	mustSet(t, good, "alpha", testValue)
	mustSet(t, good, "beta", "beta-value")
	if err := good.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	valid, err := os.ReadFile(goodPath)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	headerEnd := bytes.Index(valid, []byte("secret:")) // inside the first secret's command

	noCheck := filepath.Join(t.TempDir(), "nocheck.db")
	db, err := buntdb.Open(noCheck)
	if err != nil {
		t.Fatalf("buntdb.Open: %v", err)
	}
	_ = db.Update(func(tx *buntdb.Tx) error { _, _, err := tx.Set("secret:a", "{}", nil); return err })
	_ = db.Close()
	noCheckData, _ := os.ReadFile(noCheck)

	cases := map[string]struct {
		data []byte // nil: no file
		mode os.FileMode
		want error
	}{
		"missing":              {nil, 0o600, fs.ErrNotExist},
		"empty":                {[]byte{}, 0o600, ErrCorrupt},
		"truncated mid header": {valid[:len(valid)/8], 0o600, ErrCorrupt},
		"truncated in secret":  {valid[:headerEnd+3], 0o600, ErrCorrupt},
		"truncated by 1 byte":  {valid[:len(valid)-1], 0o600, ErrCorrupt},
		"garbage":              {[]byte("this is not a vault\n"), 0o600, ErrCorrupt},
		"nul bytes":            {make([]byte, 64), 0o600, ErrCorrupt},
		"no key-check record":  {noCheckData, 0o600, ErrCorrupt},
		"readable by others":   {valid, 0o644, ErrVaultFileMode},
		"readable by group":    {valid, 0o640, ErrVaultFileMode},
		"valid":                {valid, 0o600, nil},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "vault.db")
			if tc.data != nil {
				if err := os.WriteFile(path, tc.data, tc.mode); err != nil {
					t.Fatalf("write: %v", err)
				}
				if err := os.Chmod(path, tc.mode); err != nil {
					t.Fatalf("chmod: %v", err)
				}
			}
			v, err := Open(path, ks)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Open = %v, want success", err)
				}
				mustGet(t, v, "alpha", testValue)
				_ = v.Close()
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("Open = %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), path) {
				t.Fatalf("Open = %q, want the path in the message", err)
			}
			after, statErr := os.ReadFile(path)
			if tc.data == nil {
				if !errors.Is(statErr, fs.ErrNotExist) {
					t.Fatalf("Open created %s", path)
				}
				if !strings.Contains(err.Error(), "keyhole init") {
					t.Fatalf("Open(missing) = %q, want it to say: run keyhole init", err)
				}
				return
			}
			if !bytes.Equal(after, tc.data) {
				t.Fatalf("Open changed the refused file (%d bytes, was %d)", len(after), len(tc.data))
			}
		})
	}
}

func TestCreateRefusesExisting(t *testing.T) {
	ks := randomKey(t)
	v, path := newVault(t, ks)
	mustSet(t, v, "alpha", testValue)
	before, _ := os.ReadFile(path)
	_, err := Create(path, ks)
	if !errors.Is(err, ErrExists) || !errors.Is(err, fs.ErrExist) {
		t.Fatalf("Create(existing) = %v, want ErrExists and fs.ErrExist", err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Fatalf("Create(existing) changed the file")
	}

	fresh := filepath.Join(t.TempDir(), "vault.db")
	if _, err := Create(fresh, KeySource{}); !errors.Is(err, ErrNoKey) {
		t.Fatalf("Create without a key = %v, want ErrNoKey", err)
	}
	if _, err := os.Stat(fresh); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Create without a key left a file behind: %v", err)
	}
}

func TestRecords(t *testing.T) {
	v, _ := newVault(t, randomKey(t))
	if err := v.PutRecord("audit.head", []byte("seq=1")); err != nil {
		t.Fatalf("PutRecord = %v", err)
	}
	if err := v.PutRecord("audit.head", []byte("seq=2")); err != nil {
		t.Fatalf("PutRecord(replace) = %v", err)
	}
	got, err := v.GetRecord("audit.head")
	if err != nil || string(got) != "seq=2" {
		t.Fatalf("GetRecord = %q, %v, want seq=2", got, err)
	}
	if list, _ := v.List(); len(list) != 0 {
		t.Fatalf("List = %+v, want records not listed as secrets", list)
	}
	if _, err := v.Get("audit.head"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get(record name) = %v, want ErrNotFound", err)
	}
}

func TestDeriveKey(t *testing.T) {
	ks := randomKey(t)
	v, path := newVault(t, ks)
	a1, a2, b := v.DeriveKey("keyhole audit v1"), v.DeriveKey("keyhole audit v1"), v.DeriveKey("keyhole other v1")
	if len(a1) != 32 || !bytes.Equal(a1, a2) || bytes.Equal(a1, b) {
		t.Fatalf("DeriveKey: len %d, same label equal %v, different labels equal %v", len(a1), bytes.Equal(a1, a2), bytes.Equal(a1, b))
	}
	other, _ := newVault(t, ks)
	if bytes.Equal(other.DeriveKey("keyhole audit v1"), a1) {
		t.Fatalf("two vaults under the same master key derive the same key")
	}
	if err := v.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	if got := v.DeriveKey("keyhole audit v1"); got != nil {
		t.Fatalf("DeriveKey after Close = %x, want nil", got)
	}
	v2, err := Open(path, ks)
	if err != nil {
		t.Fatalf("Open = %v", err)
	}
	defer v2.Close()
	if !bytes.Equal(v2.DeriveKey("keyhole audit v1"), a1) {
		t.Fatalf("DeriveKey differs after reopen")
	}
}

func TestClosed(t *testing.T) {
	v, _ := newVault(t, randomKey(t))
	mustSet(t, v, "alpha", testValue)
	if err := v.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	if err := v.Close(); err != nil {
		t.Fatalf("second Close = %v, want nil", err)
	}
	calls := map[string]error{
		"Get":       func() error { _, err := v.Get("alpha"); return err }(),
		"Set":       v.Set("beta", []byte("x"), ""),
		"List":      func() error { _, err := v.List(); return err }(),
		"PutRecord": v.PutRecord("r", []byte("x")),
		"Rekey":     v.Rekey(randomKey(t)),
	}
	for name, err := range calls {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close = %v, want ErrClosed", name, err)
		}
	}
}

func TestConcurrentUse(t *testing.T) {
	v, _ := newVault(t, randomKey(t))
	names := []string{"alpha", "beta", "gamma", "delta"}
	for _, n := range names {
		mustSet(t, v, n, n+"-value")
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for r := range 8 {
		wg.Go(func() {
			for i := range 200 {
				n := names[(r+i)%len(names)]
				s, err := v.Get(n)
				if err != nil {
					errs <- err
					return
				}
				if got := string(s.Bytes()); !strings.HasPrefix(got, n+"-") {
					errs <- fmt.Errorf("Get(%s) = %q", n, got)
					return
				}
				if _, err := v.Meta(n); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Go(func() {
		for i := range 20 {
			if err := v.Touch("alpha", time.Now()); err != nil {
				errs <- err
				return
			}
			if _, err := v.Rotate("beta", []byte(fmt.Sprintf("beta-%d", i))); err != nil {
				errs <- err
				return
			}
			if _, err := v.List(); err != nil {
				errs <- err
				return
			}
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if m, _ := v.Meta("beta"); m.Version != 21 {
		t.Fatalf("Meta(beta).Version = %d after 20 rotations, want 21", m.Version)
	}
}

func BenchmarkGet(b *testing.B) {
	v, _ := newVault(b, randomKey(b))
	mustSet(b, v, "github_token", testValue)
	for b.Loop() {
		if _, err := v.Get("github_token"); err != nil {
			b.Fatal(err)
		}
	}
}

// TestReadIsValueAndVersion: Read returns the value with the metadata of
// its version, through set, rotate, rm and a new set of the same name.
func TestReadIsValueAndVersion(t *testing.T) {
	v, _ := newVault(t, randomKey(t))
	read := func(name string) (string, Meta) {
		t.Helper()
		s, m, err := v.Read(name)
		if err != nil {
			t.Fatalf("Read(%s) = %v, want the value", name, err)
		}
		return string(s.Bytes()), m
	}
	mustSet(t, v, "tok", "first-value-1")
	got, m1 := read("tok")
	if got != "first-value-1" || m1.Version != 1 || m1.Name != "tok" {
		t.Fatalf("Read(tok) = %q, version %d, name %q; want first-value-1, 1, tok", got, m1.Version, m1.Name)
	}
	if meta, _ := v.Meta("tok"); meta != m1 {
		t.Fatalf("Read(tok) meta = %+v, Meta(tok) = %+v; want the same", m1, meta)
	}
	if _, err := v.Rotate("tok", []byte("second-value-2")); err != nil {
		t.Fatal(err)
	}
	if got, m := read("tok"); got != "second-value-2" || m.Version != 2 {
		t.Fatalf("Read(tok) after rotate = %q, version %d; want second-value-2, 2", got, m.Version)
	}
	if err := v.Delete("tok"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := v.Read("tok"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Read(tok) after rm = %v, want ErrNotFound", err)
	}
	time.Sleep(time.Microsecond) // Updated tells the new version 1 from the old
	mustSet(t, v, "tok", "third-value-3")
	got, m3 := read("tok")
	if got != "third-value-3" || m3.Version != 1 || m3.Updated.Equal(m1.Updated) {
		t.Fatalf("Read(tok) after rm and set = %q, version %d, updated %v (first %v); want third-value-3, 1, a new time", got, m3.Version, m3.Updated, m1.Updated)
	}
	if _, _, err := v.Read("Bad Name"); !errors.Is(err, ErrBadName) {
		t.Fatalf("Read(Bad Name) = %v, want ErrBadName", err)
	}
}
