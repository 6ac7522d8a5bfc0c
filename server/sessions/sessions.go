// Package sessions keeps the sessions a broker serves to remote agents and
// their phantom tokens: opaque bearer tokens ("khs_…") that name a session,
// are useless outside keyhole, and are stored only as SHA-256 hashes.
//
// A session's lifetime is decided by policy.Session with the broker's
// clock; this store only persists what policy decided. Records never expire
// through buntdb TTLs.
package sessions

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"math/big"
	"os"
	"sort"
	"strings"

	"github.com/tidwall/buntdb"

	"github.com/keyhole-dev/keyhole/policy"
)

// Errors.
var (
	ErrUnknownToken = errors.New("sessions: unknown or malformed token")
	ErrNotFound     = errors.New("sessions: session not found")
)

// TokenPrefix starts every phantom token, so secret scanners can find a
// leaked one.
const TokenPrefix = "khs_"

const (
	tokenBytes   = 32
	payloadChars = 43 // base62 of 32 bytes, zero-padded
	checksumLen  = 6
	base62       = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)

// NewToken returns a fresh phantom token: "khs_" + 32 random bytes in
// base62 + a 6-character base62 CRC32 checksum of that payload.
func NewToken() (string, error) {
	var b [tokenBytes]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("sessions: random token: %w", err)
	}
	payload := encode62(new(big.Int).SetBytes(b[:]), payloadChars)
	return TokenPrefix + payload + checksum(payload), nil
}

// WellFormed reports whether tok has the shape and checksum of a phantom
// token. It says nothing about whether the token names a live session.
func WellFormed(tok string) bool {
	rest, ok := strings.CutPrefix(tok, TokenPrefix)
	if !ok || len(rest) != payloadChars+checksumLen {
		return false
	}
	for i := 0; i < len(rest); i++ {
		if strings.IndexByte(base62, rest[i]) < 0 {
			return false
		}
	}
	payload, sum := rest[:payloadChars], rest[payloadChars:]
	return subtle.ConstantTimeCompare([]byte(checksum(payload)), []byte(sum)) == 1
}

// Hash returns the hex SHA-256 of a token: the only form stored.
func Hash(tok string) string {
	h := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(h[:])
}

func checksum(payload string) string {
	return encode62(new(big.Int).SetUint64(uint64(crc32.ChecksumIEEE([]byte(payload)))), checksumLen)
}

func encode62(n *big.Int, width int) string {
	out := make([]byte, width)
	base := big.NewInt(62)
	mod := new(big.Int)
	for i := width - 1; i >= 0; i-- {
		n.DivMod(n, base, mod)
		out[i] = base62[mod.Int64()]
	}
	return string(out)
}

// Record is a stored session: its state and its token's hash.
type Record struct {
	policy.SessionInfo
	TokenHash string `json:"token_hash"`
}

// Store is the session store, on buntdb. Safe for concurrent use.
type Store struct {
	db *buntdb.DB
}

// Open opens (or creates, 0600) the session store at path.
func Open(path string) (*Store, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("sessions: open %s: %w", path, err)
	}
	f.Close()
	db, err := buntdb.Open(path)
	if err != nil {
		return nil, fmt.Errorf("sessions: open %s: %w", path, err)
	}
	var cfg buntdb.Config
	if err := db.ReadConfig(&cfg); err != nil {
		db.Close()
		return nil, fmt.Errorf("sessions: open %s: %w", path, err)
	}
	cfg.SyncPolicy = buntdb.EverySecond
	cfg.AutoShrinkDisabled = true // a shrink would recreate the file with a looser mode
	if err := db.SetConfig(cfg); err != nil {
		db.Close()
		return nil, fmt.Errorf("sessions: open %s: %w", path, err)
	}
	if err := db.CreateIndex("token", "token:*", buntdb.IndexString); err != nil && !errors.Is(err, buntdb.ErrIndexExists) {
		db.Close()
		return nil, fmt.Errorf("sessions: index: %w", err)
	}
	return &Store{db: db}, nil
}

// Close closes the store.
func (s *Store) Close() error { return s.db.Close() }

// Create stores a new session and returns its token, which is never
// stored or shown again.
func (s *Store) Create(info policy.SessionInfo) (string, error) {
	tok, err := NewToken()
	if err != nil {
		return "", err
	}
	rec := Record{SessionInfo: info, TokenHash: Hash(tok)}
	raw, err := json.Marshal(rec)
	if err != nil {
		return "", err
	}
	err = s.db.Update(func(tx *buntdb.Tx) error {
		if _, err := tx.Get("session:" + info.ID); err == nil {
			return fmt.Errorf("sessions: session %s exists", info.ID)
		}
		if _, _, err := tx.Set("session:"+info.ID, string(raw), nil); err != nil {
			return err
		}
		_, _, err := tx.Set("token:"+rec.TokenHash, info.ID, nil)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("sessions: create: %w", err)
	}
	return tok, nil
}

// Lookup returns the session a token names, or ErrUnknownToken. The
// token's hash is compared in constant time with the stored one.
func (s *Store) Lookup(tok string) (Record, error) {
	if !WellFormed(tok) {
		return Record{}, ErrUnknownToken
	}
	h := Hash(tok)
	var rec Record
	err := s.db.View(func(tx *buntdb.Tx) error {
		id, err := tx.Get("token:" + h)
		if err != nil {
			return ErrUnknownToken
		}
		raw, err := tx.Get("session:" + id)
		if err != nil {
			return ErrUnknownToken
		}
		return json.Unmarshal([]byte(raw), &rec)
	})
	if err != nil {
		return Record{}, err
	}
	if subtle.ConstantTimeCompare([]byte(rec.TokenHash), []byte(h)) != 1 {
		return Record{}, ErrUnknownToken
	}
	return rec, nil
}

// Save stores a session's current state and counters.
func (s *Store) Save(info policy.SessionInfo) error {
	return s.db.Update(func(tx *buntdb.Tx) error {
		raw, err := tx.Get("session:" + info.ID)
		if err != nil {
			return ErrNotFound
		}
		var rec Record
		if err := json.Unmarshal([]byte(raw), &rec); err != nil {
			return fmt.Errorf("sessions: corrupt record %s: %w", info.ID, err)
		}
		rec.SessionInfo = info
		out, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		_, _, err = tx.Set("session:"+info.ID, string(out), nil)
		return err
	})
}

// Get returns one session by id.
func (s *Store) Get(id string) (Record, error) {
	var rec Record
	err := s.db.View(func(tx *buntdb.Tx) error {
		raw, err := tx.Get("session:" + id)
		if err != nil {
			return ErrNotFound
		}
		return json.Unmarshal([]byte(raw), &rec)
	})
	return rec, err
}

// List returns every stored session, oldest first.
func (s *Store) List() ([]Record, error) {
	var out []Record
	err := s.db.View(func(tx *buntdb.Tx) error {
		return tx.AscendKeys("session:*", func(_, v string) bool {
			var rec Record
			if json.Unmarshal([]byte(v), &rec) == nil {
				out = append(out, rec)
			}
			return true
		})
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, err
}
