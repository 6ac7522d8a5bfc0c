// Package pgvault is keyhole's secret store in PostgreSQL, for several
// brokers sharing one store (`--store postgres://…`): the same envelope
// as the vault file (AES-256-GCM under the master key, the secret's name
// bound as associated data; see vault.Envelope), one row per secret, and
// a header row holding the key check and the sealed root key that every
// derived key (audit, sessions, access) comes from. Every broker gets the
// master key from KEYHOLE_MASTER_KEY or a key file.
//
// It is a sub-package of vault, not part of it, so that vault stays free
// of a database driver: it uses only what vault exports for this (the
// envelope, name rules, key resolution and Derive).
//
// A broker reads a secret on every call, so the sealed rows are cached in
// memory and the cache is emptied by LISTEN/NOTIFY: every write notifies
// keyhole_vault with the secret's name in its transaction. While the
// listening connection is down, nothing is cached. Plaintext is never
// cached here: each Get opens the sealed value.
package pgvault

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keyhole-dev/keyhole/vault"
)

// channel is the NOTIFY channel of writes.
const channel = "keyhole_vault"

// ErrNoVault says the store holds no vault yet.
var ErrNoVault = errors.New("pgvault: the store holds no vault: run `keyhole store migrate --store URL`")

// maxStatus caps a secret's status text, as the vault file does.
const maxStatus = 256

// Vault is the secret store in PostgreSQL. Safe for concurrent use.
type Vault struct {
	db   *pgxpool.Pool
	env  *vault.Envelope
	root []byte

	mu        sync.Mutex
	cache     map[string]row // sealed rows by name; used only while listening
	listening bool
	gen       uint64 // bumped on every invalidation: a read that raced one does not cache
	stop      context.CancelFunc
	done      chan struct{}
}

// row is a secret as stored.
type row struct {
	version int
	sealed  string
	meta    string
}

// header is the plaintext of the sealed root: the root key and the names
// of every record ever stored, so a removed record is told from one never
// stored.
type header struct {
	Records []string `json:"records,omitempty"`
}

// Create makes a new vault in the store (its header) with a fresh random
// root key, or with root when it is given (a migration keeps the root
// of the vault file, so derived keys and the audit chain stay valid). It
// refuses a store that has one (vault.ErrExists).
func Create(ctx context.Context, db *pgxpool.Pool, ks vault.KeySource, root []byte) error {
	key, _, err := ks.MasterKey()
	if err != nil {
		return err
	}
	defer clear(key)
	env, err := vault.NewEnvelope(key)
	if err != nil {
		return err
	}
	if root == nil {
		root = make([]byte, vault.KeySize)
		if _, err := rand.Read(root); err != nil {
			return fmt.Errorf("pgvault: random root: %w", err)
		}
	}
	if len(root) != vault.KeySize {
		return fmt.Errorf("pgvault: root key is %d bytes, want %d", len(root), vault.KeySize)
	}
	plain := append(append([]byte(nil), root...), mustJSON(header{})...)
	defer clear(plain)
	tag, err := db.Exec(ctx, `INSERT INTO keyhole_vault(id, key_check, root) VALUES (1, $1, $2) ON CONFLICT (id) DO NOTHING`,
		env.Seal(vault.CheckAAD, []byte(vault.CheckPlaintext)), env.Seal(vault.RootAAD, plain))
	if err != nil {
		return fmt.Errorf("pgvault: create: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%w: the store already holds a vault", vault.ErrExists)
	}
	return nil
}

// Exists reports whether the store holds a vault.
func Exists(ctx context.Context, db *pgxpool.Pool) (bool, error) {
	var n int
	if err := db.QueryRow(ctx, `SELECT count(*) FROM keyhole_vault`).Scan(&n); err != nil {
		return false, fmt.Errorf("pgvault: %w", err)
	}
	return n > 0, nil
}

// Open opens the vault of the store with the master key of ks, proving
// it against the key check: a wrong key is vault.ErrWrongKey. The pool
// stays the caller's.
func Open(ctx context.Context, db *pgxpool.Pool, ks vault.KeySource) (*Vault, error) {
	key, source, err := ks.MasterKey()
	if err != nil {
		return nil, err
	}
	defer clear(key)
	env, err := vault.NewEnvelope(key)
	if err != nil {
		return nil, err
	}
	var check, root string
	err = db.QueryRow(ctx, `SELECT key_check, root FROM keyhole_vault WHERE id = 1`).Scan(&check, &root)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNoVault
	}
	if err != nil {
		return nil, fmt.Errorf("pgvault: open: %w", err)
	}
	plain, err := env.Open(vault.CheckAAD, check)
	if err != nil {
		return nil, fmt.Errorf("%w (key from %s)", vault.ErrWrongKey, source)
	}
	if string(plain) != vault.CheckPlaintext {
		return nil, fmt.Errorf("%w: the store's key-check record is malformed", vault.ErrCorrupt)
	}
	r, err := env.Open(vault.RootAAD, root)
	if err != nil || len(r) < vault.KeySize {
		return nil, fmt.Errorf("%w: the store's root key record is damaged", vault.ErrCorrupt)
	}
	v := &Vault{db: db, env: env, root: r[:vault.KeySize:vault.KeySize], cache: map[string]row{}, done: make(chan struct{})}
	lctx, cancel := context.WithCancel(context.Background())
	v.stop = cancel
	go v.listen(lctx)
	return v, nil
}

// Close stops listening; the pool stays open.
func (v *Vault) Close() error {
	v.stop()
	<-v.done
	v.mu.Lock()
	clear(v.root)
	v.cache = nil
	v.mu.Unlock()
	return nil
}

// listen keeps a connection LISTENing on the channel of writes: each
// notification drops the named secret from the cache. While it cannot
// listen the cache is off.
func (v *Vault) listen(ctx context.Context) {
	defer close(v.done)
	for ctx.Err() == nil {
		v.listenOnce(ctx)
		v.setListening(false)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (v *Vault) listenOnce(ctx context.Context) {
	conn, err := v.db.Acquire(ctx)
	if err != nil {
		return
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "LISTEN "+channel); err != nil {
		return
	}
	// The connection goes back to the pool listening: unlisten on the way.
	defer conn.Exec(context.Background(), "UNLISTEN *")
	v.setListening(true)
	for {
		n, err := conn.Conn().WaitForNotification(ctx)
		if err != nil {
			if ctx.Err() == nil {
				conn.Conn().Close(context.Background()) // a broken connection is not reused
			}
			return
		}
		v.invalidate(n.Payload)
	}
}

func (v *Vault) setListening(on bool) {
	v.mu.Lock()
	v.listening = on
	v.gen++
	clear(v.cache)
	v.mu.Unlock()
}

func (v *Vault) invalidate(name string) {
	v.mu.Lock()
	v.gen++
	delete(v.cache, name)
	v.mu.Unlock()
}

// read returns the sealed row of a secret, from the cache when it holds
// it.
func (v *Vault) read(ctx context.Context, name string) (row, error) {
	v.mu.Lock()
	r, ok := v.cache[name]
	gen, listening := v.gen, v.listening
	v.mu.Unlock()
	if ok {
		return r, nil
	}
	err := v.db.QueryRow(ctx, `SELECT version, sealed, meta FROM keyhole_secrets WHERE name = $1`, name).Scan(&r.version, &r.sealed, &r.meta)
	if errors.Is(err, pgx.ErrNoRows) {
		return row{}, fmt.Errorf("%w: %s", vault.ErrNotFound, name)
	}
	if err != nil {
		return row{}, fmt.Errorf("pgvault: read %s: %w", name, err)
	}
	if listening {
		v.mu.Lock()
		if v.gen == gen && v.cache != nil {
			v.cache[name] = r
		}
		v.mu.Unlock()
	}
	return r, nil
}

func (v *Vault) openMeta(name string, r row) (vault.SecretMetadata, error) {
	var m vault.SecretMetadata
	plain, err := v.env.Open(vault.MetaAAD(name), r.meta)
	if err != nil {
		return m, fmt.Errorf("%w: secret %s has metadata that cannot be decrypted (altered, moved or damaged record)", vault.ErrCorrupt, name)
	}
	if err := json.Unmarshal(plain, &m); err != nil {
		return m, fmt.Errorf("%w: secret %s has malformed metadata", vault.ErrCorrupt, name)
	}
	return m, nil
}

// Get decrypts the secret stored under name: vault.ErrNotFound, or an
// error wrapping vault.ErrCorrupt if its row was altered or moved.
func (v *Vault) Get(name string) (vault.Secret, error) {
	if err := vault.CheckName(name); err != nil {
		return vault.Secret{}, err
	}
	r, err := v.read(context.Background(), name)
	if err != nil {
		return vault.Secret{}, err
	}
	plain, err := v.env.Open(vault.SecretAAD(name), r.sealed)
	if err != nil {
		return vault.Secret{}, fmt.Errorf("%w: secret %s cannot be decrypted (altered, moved or damaged record)", vault.ErrCorrupt, name)
	}
	return vault.NewSecret(plain), nil
}

// Read decrypts the secret stored under name and returns it with the
// metadata of its version, both from one row. Errors are those of Get.
func (v *Vault) Read(name string) (vault.Secret, vault.Meta, error) {
	if err := vault.CheckName(name); err != nil {
		return vault.Secret{}, vault.Meta{}, err
	}
	r, err := v.read(context.Background(), name)
	if err != nil {
		return vault.Secret{}, vault.Meta{}, err
	}
	m, err := v.openMeta(name, r)
	if err != nil {
		return vault.Secret{}, vault.Meta{}, err
	}
	plain, err := v.env.Open(vault.SecretAAD(name), r.sealed)
	if err != nil {
		return vault.Secret{}, vault.Meta{}, fmt.Errorf("%w: secret %s cannot be decrypted (altered, moved or damaged record)", vault.ErrCorrupt, name)
	}
	return vault.NewSecret(plain), vault.MetaOf(m, name, r.version), nil
}

// Meta returns the metadata of secret name, or vault.ErrNotFound.
func (v *Vault) Meta(name string) (vault.Meta, error) {
	if err := vault.CheckName(name); err != nil {
		return vault.Meta{}, err
	}
	r, err := v.read(context.Background(), name)
	if err != nil {
		return vault.Meta{}, err
	}
	m, err := v.openMeta(name, r)
	if err != nil {
		return vault.Meta{}, err
	}
	return vault.MetaOf(m, name, r.version), nil
}

// List returns the metadata of every secret, sorted by name.
func (v *Vault) List() ([]vault.Meta, error) {
	ctx := context.Background()
	rows, err := v.db.Query(ctx, `SELECT name, version, sealed, meta FROM keyhole_secrets ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("pgvault: list: %w", err)
	}
	defer rows.Close()
	var out []vault.Meta
	for rows.Next() {
		var name string
		var r row
		if err := rows.Scan(&name, &r.version, &r.sealed, &r.meta); err != nil {
			return nil, fmt.Errorf("pgvault: list: %w", err)
		}
		m, err := v.openMeta(name, r)
		if err != nil {
			return nil, err
		}
		out = append(out, vault.MetaOf(m, name, r.version))
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("pgvault: list: %w", err)
	}
	return out, nil
}

// update runs fn on the row of secret name, locked, and stores what it
// returns (ok false: nothing to store), notifying the other brokers.
func (v *Vault) update(name string, fn func(r row, m vault.SecretMetadata) (row, vault.SecretMetadata, bool, error)) error {
	ctx := context.Background()
	err := pgx.BeginFunc(ctx, v.db, func(tx pgx.Tx) error {
		var r row
		err := tx.QueryRow(ctx, `SELECT version, sealed, meta FROM keyhole_secrets WHERE name = $1 FOR UPDATE`, name).Scan(&r.version, &r.sealed, &r.meta)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w: %s", vault.ErrNotFound, name)
		}
		if err != nil {
			return err
		}
		m, err := v.openMeta(name, r)
		if err != nil {
			return err
		}
		r, m, ok, err := fn(r, m)
		if err != nil || !ok {
			return err
		}
		r.meta = v.env.Seal(vault.MetaAAD(name), mustJSON(m))
		if _, err := tx.Exec(ctx, `UPDATE keyhole_secrets SET version = $2, sealed = $3, meta = $4 WHERE name = $1`, name, r.version, r.sealed, r.meta); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `SELECT pg_notify($1, $2)`, channel, name)
		return err
	})
	v.invalidate(name)
	return wrap(err)
}

// wrap prefixes a database error; vault's sentinels pass as they are.
func wrap(err error) error {
	if err == nil {
		return nil
	}
	for _, s := range []error{vault.ErrNotFound, vault.ErrExists, vault.ErrCorrupt, vault.ErrChanged, vault.ErrBadName, vault.ErrEmptyValue} {
		if errors.Is(err, s) {
			return err
		}
	}
	return fmt.Errorf("pgvault: store: %w", err)
}

// Set stores a new secret under name with version 1: vault.ErrExists if
// the name is taken.
func (v *Vault) Set(name string, value []byte, description string) error {
	if err := vault.CheckName(name); err != nil {
		return err
	}
	if len(value) == 0 {
		return fmt.Errorf("%w for %s", vault.ErrEmptyValue, name)
	}
	now := time.Now().UTC()
	return v.insert(name, 1, value, vault.SecretMetadata{Description: description, Created: now, Updated: now})
}

// Import stores a secret with the version and metadata it had elsewhere
// (a migration from a vault file).
func (v *Vault) Import(name string, version int, value []byte, m vault.SecretMetadata) error {
	if err := vault.CheckName(name); err != nil {
		return err
	}
	return v.insert(name, version, value, m)
}

func (v *Vault) insert(name string, version int, value []byte, m vault.SecretMetadata) error {
	ctx := context.Background()
	err := pgx.BeginFunc(ctx, v.db, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO keyhole_secrets(name, version, sealed, meta) VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING`,
			name, version, v.env.Seal(vault.SecretAAD(name), value), v.env.Seal(vault.MetaAAD(name), mustJSON(m)))
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("%w: %s (use rotate to replace its value)", vault.ErrExists, name)
		}
		_, err = tx.Exec(ctx, `SELECT pg_notify($1, $2)`, channel, name)
		return err
	})
	v.invalidate(name)
	return wrap(err)
}

// Rotate replaces the value of secret name, increments its version and
// clears its status.
func (v *Vault) Rotate(name string, value []byte) (vault.Meta, error) {
	return v.replace(name, nil, value)
}

// Replace stores next as the value of secret name, as Rotate does, only
// if its current value is prev (vault.ErrChanged otherwise), in one
// transaction holding the row's lock.
func (v *Vault) Replace(name string, prev, next []byte) (vault.Meta, error) {
	if prev == nil {
		prev = []byte{}
	}
	return v.replace(name, prev, next)
}

func (v *Vault) replace(name string, prev, next []byte) (vault.Meta, error) {
	if err := vault.CheckName(name); err != nil {
		return vault.Meta{}, err
	}
	if len(next) == 0 {
		return vault.Meta{}, fmt.Errorf("%w for %s", vault.ErrEmptyValue, name)
	}
	var out vault.Meta
	err := v.update(name, func(r row, m vault.SecretMetadata) (row, vault.SecretMetadata, bool, error) {
		if prev != nil {
			cur, err := v.env.Open(vault.SecretAAD(name), r.sealed)
			if err != nil {
				return r, m, false, fmt.Errorf("%w: secret %s cannot be decrypted (altered, moved or damaged record)", vault.ErrCorrupt, name)
			}
			same := subtle.ConstantTimeCompare(cur, prev) == 1
			clear(cur)
			if !same {
				return r, m, false, fmt.Errorf("%w: %s", vault.ErrChanged, name)
			}
		}
		r.version++
		r.sealed = v.env.Seal(vault.SecretAAD(name), next)
		m.Updated, m.Status = time.Now().UTC(), ""
		out = vault.MetaOf(m, name, r.version)
		return r, m, true, nil
	})
	if err != nil {
		return vault.Meta{}, err
	}
	return out, nil
}

// SetStatus records what an operator must do about secret name; ""
// clears it. Control characters become spaces; the text is cut at 256
// bytes.
func (v *Vault) SetStatus(name, status string) error {
	if err := vault.CheckName(name); err != nil {
		return err
	}
	b := []byte(status)
	for i, c := range b {
		if c < 0x20 || c == 0x7f {
			b[i] = ' '
		}
	}
	if len(b) > maxStatus {
		b = []byte(string(b[:maxStatus]))
	}
	return v.update(name, func(r row, m vault.SecretMetadata) (row, vault.SecretMetadata, bool, error) {
		if m.Status == string(b) {
			return r, m, false, nil
		}
		m.Status = string(b)
		return r, m, true, nil
	})
}

// Touch records t as the secret's last use; an earlier t is ignored.
func (v *Vault) Touch(name string, t time.Time) error {
	if err := vault.CheckName(name); err != nil {
		return err
	}
	return v.update(name, func(r row, m vault.SecretMetadata) (row, vault.SecretMetadata, bool, error) {
		if !t.After(m.LastUsed) {
			return r, m, false, nil
		}
		m.LastUsed = t.UTC()
		return r, m, true, nil
	})
}

// Delete removes secret name, or returns vault.ErrNotFound.
func (v *Vault) Delete(name string) error {
	if err := vault.CheckName(name); err != nil {
		return err
	}
	ctx := context.Background()
	err := pgx.BeginFunc(ctx, v.db, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM keyhole_secrets WHERE name = $1`, name)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("%w: %s", vault.ErrNotFound, name)
		}
		_, err = tx.Exec(ctx, `SELECT pg_notify($1, $2)`, channel, name)
		return err
	})
	v.invalidate(name)
	return wrap(err)
}

// DeriveKey returns the key derived from the store's root key with label,
// the same as vault.Vault.DeriveKey of the vault file it was migrated
// from.
func (v *Vault) DeriveKey(label string) []byte { return vault.Derive(v.root, label) }

// PutRecord stores data under name, sealed with "record:"+name. The first
// PutRecord of a name adds it, sealed, to the header, so that its removal
// is told from its absence.
func (v *Vault) PutRecord(name string, data []byte) error {
	if err := vault.CheckRecordName(name); err != nil {
		return err
	}
	ctx := context.Background()
	return wrap(pgx.BeginFunc(ctx, v.db, func(tx pgx.Tx) error {
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM keyhole_records WHERE name = $1)`, name).Scan(&exists); err != nil {
			return err
		}
		if !exists {
			if err := v.addName(ctx, tx, name); err != nil {
				return err
			}
		}
		_, err := tx.Exec(ctx, `INSERT INTO keyhole_records(name, data) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET data = excluded.data`,
			name, v.env.Seal(vault.RecordAAD(name), data))
		return err
	}))
}

// addName adds a record's name to the sealed header, under its row lock.
func (v *Vault) addName(ctx context.Context, tx pgx.Tx, name string) error {
	h, err := v.header(ctx, tx, true)
	if err != nil {
		return err
	}
	if slices.Contains(h.Records, name) {
		return nil
	}
	h.Records = append(h.Records, name)
	slices.Sort(h.Records)
	plain := append(append([]byte(nil), v.root...), mustJSON(h)...)
	defer clear(plain)
	_, err = tx.Exec(ctx, `UPDATE keyhole_vault SET root = $1 WHERE id = 1`, v.env.Seal(vault.RootAAD, plain))
	return err
}

type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func (v *Vault) header(ctx context.Context, q querier, lock bool) (header, error) {
	sql := `SELECT root FROM keyhole_vault WHERE id = 1`
	if lock {
		sql += ` FOR UPDATE`
	}
	var sealed string
	if err := q.QueryRow(ctx, sql).Scan(&sealed); err != nil {
		return header{}, err
	}
	plain, err := v.env.Open(vault.RootAAD, sealed)
	if err != nil || len(plain) < vault.KeySize {
		return header{}, fmt.Errorf("%w: the store's root key record is damaged", vault.ErrCorrupt)
	}
	defer clear(plain)
	var h header
	if len(plain) > vault.KeySize {
		if err := json.Unmarshal(plain[vault.KeySize:], &h); err != nil {
			return header{}, fmt.Errorf("%w: the store's root key record is damaged", vault.ErrCorrupt)
		}
	}
	return h, nil
}

// GetRecord returns what PutRecord stored under name; an error wrapping
// vault.ErrNotFound and fs.ErrNotExist if no record of that name was ever
// stored; vault.ErrRecordRemoved if one was and is gone; vault.ErrCorrupt
// if it was altered.
func (v *Vault) GetRecord(name string) ([]byte, error) {
	if err := vault.CheckRecordName(name); err != nil {
		return nil, err
	}
	ctx := context.Background()
	var sealed string
	err := v.db.QueryRow(ctx, `SELECT data FROM keyhole_records WHERE name = $1`, name).Scan(&sealed)
	if errors.Is(err, pgx.ErrNoRows) {
		h, herr := v.header(ctx, v.db, false)
		if herr != nil {
			return nil, herr
		}
		if slices.Contains(h.Records, name) {
			return nil, fmt.Errorf("%w: %s", vault.ErrRecordRemoved, name)
		}
		return nil, fmt.Errorf("%w: record %s (%w)", vault.ErrNotFound, name, fs.ErrNotExist)
	}
	if err != nil {
		return nil, fmt.Errorf("pgvault: read record %s: %w", name, err)
	}
	data, err := v.env.Open(vault.RecordAAD(name), sealed)
	if err != nil {
		return nil, fmt.Errorf("%w: record %s cannot be decrypted (altered, moved or damaged)", vault.ErrCorrupt, name)
	}
	return data, nil
}

func mustJSON(x any) []byte {
	b, err := json.Marshal(x)
	if err != nil {
		panic("pgvault: encode: " + err.Error())
	}
	return b
}
