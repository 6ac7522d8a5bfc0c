package vault

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tidwall/buntdb"
)

func TestGenerateKeyFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "config", "keyhole")
	path := filepath.Join(dir, "master.key")
	if err := GenerateKeyFile(path, false); err != nil {
		t.Fatalf("GenerateKeyFile = %v", err)
	}
	first, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(first))); err != nil || len(key) != 32 {
		t.Fatalf("key file holds %q: want base64 of 32 bytes (%v)", first, err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode = %#o, want 0600", fi.Mode().Perm())
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Fatalf("key dir mode = %#o, want 0700", fi.Mode().Perm())
	}

	if err := GenerateKeyFile(path, false); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("GenerateKeyFile(existing) = %v, want fs.ErrExist", err)
	}
	if again, _ := os.ReadFile(path); !bytes.Equal(again, first) {
		t.Fatalf("GenerateKeyFile(existing) changed the key")
	}

	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatalf("chmod: %v", err)
	}
	if err := GenerateKeyFile(path, true); err != nil {
		t.Fatalf("GenerateKeyFile(force) = %v", err)
	}
	forced, _ := os.ReadFile(path)
	if bytes.Equal(forced, first) {
		t.Fatalf("GenerateKeyFile(force) kept the old key")
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("forced key file mode = %#o, want 0600", fi.Mode().Perm())
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("key dir holds %d entries, want only master.key", len(entries))
	}

	// The generated file is a working KeySource.
	if _, err := Create(filepath.Join(t.TempDir(), "vault.db"), KeySource{KeyFile: path}); err != nil {
		t.Fatalf("Create with generated key file = %v", err)
	}
}

func TestKeyFileMode(t *testing.T) {
	cases := map[string]struct {
		mode os.FileMode
		ok   bool
	}{
		"0600": {0o600, true},
		"0400": {0o400, true},
		"0644": {0o644, false},
		"0640": {0o640, false},
		"0604": {0o604, false},
		"0660": {0o660, false},
		"0602": {0o602, false},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "master.key")
			if err := GenerateKeyFile(path, false); err != nil {
				t.Fatalf("GenerateKeyFile = %v", err)
			}
			if err := os.Chmod(path, tc.mode); err != nil {
				t.Fatalf("chmod: %v", err)
			}
			v, err := Create(filepath.Join(t.TempDir(), "vault.db"), KeySource{KeyFile: path})
			if tc.ok {
				if err != nil {
					t.Fatalf("Create with key file mode %s = %v, want success", name, err)
				}
				_ = v.Close()
				return
			}
			if !errors.Is(err, ErrKeyFileMode) {
				t.Fatalf("Create with key file mode %s = %v, want ErrKeyFileMode", name, err)
			}
			if msg := err.Error(); !strings.Contains(msg, path) || !strings.Contains(msg, "chmod 600") {
				t.Fatalf("error %q should name %s and the fix chmod 600", msg, path)
			}
		})
	}
}

func writeFile(t *testing.T, data string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "master.key")
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatalf("write: %v", err)
	}
	return path
}

func TestKeySourceErrors(t *testing.T) {
	const badEnv = "not-base64-SENSITIVE!"
	short := base64.StdEncoding.EncodeToString(make([]byte, 16))
	missing := filepath.Join(t.TempDir(), "missing.key")
	cases := map[string]struct {
		ks       KeySource
		want     error  // sentinel, or nil for "any error"
		contains string // required in the message
	}{
		"nothing":                   {KeySource{}, ErrNoKey, "keyhole init"},
		"env not base64":            {KeySource{EnvKey: badEnv}, nil, EnvMasterKey},
		"env 16 bytes":              {KeySource{EnvKey: short}, nil, EnvMasterKey},
		"key file missing":          {KeySource{KeyFile: missing}, ErrNoKey, missing},
		"key file garbage":          {KeySource{KeyFile: writeFile(t, "hello\n")}, nil, "base64 of 32 bytes"},
		"key file too short":        {KeySource{KeyFile: writeFile(t, short)}, nil, "base64 of 32 bytes"},
		"key file is a directory":   {KeySource{KeyFile: t.TempDir()}, nil, "not a regular file"},
		"empty passphrase":          {KeySource{Passphrase: func() ([]byte, error) { return nil, nil }}, ErrNoKey, "empty"},
		"passphrase reader fails":   {KeySource{Passphrase: func() ([]byte, error) { return nil, errors.New("no terminal") }}, nil, "no terminal"},
		"missing file, passphrase ": {KeySource{KeyFile: missing, Passphrase: func() ([]byte, error) { return nil, errors.New("prompted") }}, nil, "prompted"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "vault.db")
			_, err := Create(path, tc.ks)
			if err == nil {
				t.Fatalf("Create = nil, want an error")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("Create = %v, want %v", err, tc.want)
			}
			if errors.Is(err, ErrWrongKey) {
				t.Fatalf("Create = %v: a bad key source is not a wrong key", err)
			}
			if !strings.Contains(err.Error(), tc.contains) {
				t.Fatalf("Create = %q, want it to mention %q", err, tc.contains)
			}
			if strings.Contains(err.Error(), badEnv) {
				t.Fatalf("Create = %q echoes the environment key", err)
			}
		})
	}
}

func TestKeyPrecedence(t *testing.T) {
	envKey := randomKey(t)
	fileKey := KeySource{KeyFile: filepath.Join(t.TempDir(), "master.key")}
	if err := GenerateKeyFile(fileKey.KeyFile, false); err != nil {
		t.Fatalf("GenerateKeyFile = %v", err)
	}
	_, path := newVault(t, envKey)
	both := KeySource{EnvKey: envKey.EnvKey, KeyFile: fileKey.KeyFile}
	v, err := Open(path, both)
	if err != nil {
		t.Fatalf("Open(env and key file) = %v, want the environment key to win", err)
	}
	_ = v.Close()
	if _, err := Open(path, fileKey); !errors.Is(err, ErrWrongKey) || !strings.Contains(err.Error(), fileKey.KeyFile) {
		t.Fatalf("Open(other key file) = %v, want ErrWrongKey naming the key file", err)
	}
}

func passphrase(p string) func() ([]byte, error) {
	return func() ([]byte, error) { return []byte(p), nil }
}

func TestPassphrase(t *testing.T) {
	const pass = "correct horse battery staple"
	missingFile := filepath.Join(t.TempDir(), "master.key")
	v, path := newVault(t, KeySource{Passphrase: passphrase(pass)})
	mustSet(t, v, "alpha", testValue)
	if err := v.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	data, _ := os.ReadFile(path)
	if !bytes.Contains(data, []byte(`"alg":"argon2id"`)) || bytes.Contains(data, []byte(pass)) {
		t.Fatalf("vault file should hold the Argon2id parameters and never the passphrase")
	}

	cases := map[string]struct {
		ks   KeySource
		want error
	}{
		"same passphrase":              {KeySource{Passphrase: passphrase(pass)}, nil},
		"missing key file, passphrase": {KeySource{KeyFile: missingFile, Passphrase: passphrase(pass)}, nil},
		"wrong passphrase":             {KeySource{Passphrase: passphrase("wrong")}, ErrWrongKey},
		"no passphrase":                {KeySource{}, ErrNoKey},
		"env key instead":              {randomKey(t), ErrWrongKey},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			v, err := Open(path, tc.ks)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Open = %v", err)
				}
				mustGet(t, v, "alpha", testValue)
				_ = v.Close()
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("Open = %v, want %v", err, tc.want)
			}
		})
	}

	// A key-file vault cannot be opened with a passphrase, and says why.
	_, keyPath := newVault(t, randomKey(t))
	if _, err := Open(keyPath, KeySource{Passphrase: passphrase(pass)}); !errors.Is(err, ErrNoKey) {
		t.Fatalf("Open(key vault, passphrase) = %v, want ErrNoKey", err)
	}
}

func TestRekeyPassphrase(t *testing.T) {
	envKey := randomKey(t)
	v, path := newVault(t, envKey)
	mustSet(t, v, "alpha", testValue)
	toPass := KeySource{Passphrase: passphrase("new passphrase")}
	if err := v.Rekey(toPass); err != nil {
		t.Fatalf("Rekey(to passphrase) = %v", err)
	}
	if err := v.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	v, err := Open(path, toPass)
	if err != nil {
		t.Fatalf("Open(passphrase) after Rekey = %v", err)
	}
	mustGet(t, v, "alpha", testValue)
	if err := v.Rekey(envKey); err != nil {
		t.Fatalf("Rekey(back to env key) = %v", err)
	}
	if err := v.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	if data, _ := os.ReadFile(path); bytes.Contains(data, []byte("argon2id")) {
		t.Fatalf("passphrase parameters left behind after rekeying to an env key")
	}
	if _, err := Open(path, toPass); !errors.Is(err, ErrNoKey) {
		t.Fatalf("Open(passphrase) after rekeying away = %v, want ErrNoKey", err)
	}
	v, err = Open(path, envKey)
	if err != nil {
		t.Fatalf("Open(env key) = %v", err)
	}
	defer v.Close()
	mustGet(t, v, "alpha", testValue)
}

func TestTamperedKDFParams(t *testing.T) {
	ks := KeySource{Passphrase: passphrase("pass")}
	cases := map[string]string{
		"huge memory":   `{"alg":"argon2id","time":3,"memory_kib":4294967295,"threads":4,"salt":"AAAAAAAAAAAAAAAAAAAAAA=="}`,
		"other alg":     `{"alg":"scrypt","time":3,"memory_kib":65536,"threads":4,"salt":"AAAAAAAAAAAAAAAAAAAAAA=="}`,
		"short salt":    `{"alg":"argon2id","time":3,"memory_kib":65536,"threads":4,"salt":"AAAA"}`,
		"not json":      `argon2id`,
		"zero time":     `{"alg":"argon2id","time":0,"memory_kib":65536,"threads":4,"salt":"AAAAAAAAAAAAAAAAAAAAAA=="}`,
		"zero threads":  `{"alg":"argon2id","time":3,"memory_kib":65536,"threads":0,"salt":"AAAAAAAAAAAAAAAAAAAAAA=="}`,
		"tiny memory":   `{"alg":"argon2id","time":3,"memory_kib":8,"threads":4,"salt":"AAAAAAAAAAAAAAAAAAAAAA=="}`,
		"other salt ok": `{"alg":"argon2id","time":1,"memory_kib":8192,"threads":1,"salt":"AAAAAAAAAAAAAAAAAAAAAA=="}`,
	}
	for name, params := range cases {
		t.Run(name, func(t *testing.T) {
			v, path := newVault(t, ks)
			editDB(t, v, path, func(tx *buntdb.Tx) error {
				_, _, err := tx.Set(keyKDF, params, nil)
				return err
			})
			_, err := Open(path, ks)
			want := ErrCorrupt
			if name == "other salt ok" {
				want = ErrWrongKey // valid parameters derive another key, which the key check catches
			}
			if !errors.Is(err, want) {
				t.Fatalf("Open with kdf %s = %v, want %v", params, err, want)
			}
		})
	}
}
