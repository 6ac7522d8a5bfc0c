package sessions

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"

	"github.com/tidwall/buntdb"

	"github.com/keyhole-dev/keyhole/policy"
)

// Errors.
var (
	ErrUnknownToken = errors.New("sessions: unknown or malformed token")
	ErrNotFound     = errors.New("sessions: session not found")
	// ErrTampered: a record or config snapshot does not match its MAC or
	// hash; it was changed on disk (or written by a keyhole that did not
	// MAC its records).
	ErrTampered = errors.New("sessions: record fails its integrity check")
)

// KeyLabel is the label under which the broker derives the store's MAC
// key from the vault's root key.
const KeyLabel = "keyhole sessions v1"

// Record is a stored session: its state, its token's hash, the config its
// scope came from, and the MAC over all of them.
type Record struct {
	policy.SessionInfo
	TokenHash string `json:"token_hash"`
	// ConfigSHA256 names the snapshot of the config the session runs
	// (see Store.PutConfig); empty in records of older keyholes.
	ConfigSHA256 string `json:"config_sha256,omitempty"`
	// Relay marks the session of a stdio client relayed through the
	// broker: it lives only while that broker does.
	Relay bool   `json:"relay,omitempty"`
	MAC   string `json:"mac,omitempty"`
	// Tampered is set by the store on a record that fails its MAC.
	Tampered bool `json:"-"`
}

// Store is the session store, on buntdb. Safe for concurrent use. Every
// write is fsynced before it returns, so an end or a revocation survives
// a crash right after it.
type Store struct {
	db  *buntdb.DB
	key []byte
}

// Open opens (or creates, 0600) the session store at path, whose records
// are MAC'd with key (32 bytes).
func Open(path string, key []byte) (*Store, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("sessions: key is %d bytes, want 32", len(key))
	}
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
	cfg.SyncPolicy = buntdb.Always
	cfg.AutoShrinkDisabled = true // a shrink would recreate the file with a looser mode
	if err := db.SetConfig(cfg); err != nil {
		db.Close()
		return nil, fmt.Errorf("sessions: open %s: %w", path, err)
	}
	if err := db.CreateIndex("token", "token:*", buntdb.IndexString); err != nil && !errors.Is(err, buntdb.ErrIndexExists) {
		db.Close()
		return nil, fmt.Errorf("sessions: index: %w", err)
	}
	return &Store{db: db, key: append([]byte(nil), key...)}, nil
}

// Close closes the store.
func (s *Store) Close() error { return s.db.Close() }

// mac is the hex HMAC-SHA256 of a record's JSON without its MAC.
func (s *Store) mac(rec Record) (string, error) {
	rec.MAC = ""
	raw, err := json.Marshal(rec)
	if err != nil {
		return "", err
	}
	m := hmac.New(sha256.New, s.key)
	m.Write(raw)
	return hex.EncodeToString(m.Sum(nil)), nil
}

// seal MACs rec and encodes it for the store.
func (s *Store) seal(rec Record) (string, error) {
	mac, err := s.mac(rec)
	if err != nil {
		return "", err
	}
	rec.MAC = mac
	raw, err := json.Marshal(rec)
	return string(raw), err
}

// open decodes a stored record and checks its MAC; a record that fails
// comes back with Tampered set.
func (s *Store) open(raw string) (Record, error) {
	var rec Record
	if err := json.Unmarshal([]byte(raw), &rec); err != nil {
		return Record{}, fmt.Errorf("%w: %v", ErrTampered, err)
	}
	want, err := s.mac(rec)
	if err != nil {
		return Record{}, err
	}
	rec.Tampered = !hmac.Equal([]byte(want), []byte(rec.MAC))
	return rec, nil
}

// Create stores a new session and returns its token, which is never
// stored or shown again. The token hash and MAC are set here.
func (s *Store) Create(rec Record) (string, error) {
	tok, err := NewToken()
	if err != nil {
		return "", err
	}
	rec.TokenHash = Hash(tok)
	raw, err := s.seal(rec)
	if err != nil {
		return "", err
	}
	err = s.db.Update(func(tx *buntdb.Tx) error {
		if _, err := tx.Get("session:" + rec.ID); err == nil {
			return fmt.Errorf("sessions: session %s exists", rec.ID)
		}
		if _, _, err := tx.Set("session:"+rec.ID, raw, nil); err != nil {
			return err
		}
		_, _, err := tx.Set("token:"+rec.TokenHash, rec.ID, nil)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("sessions: create: %w", err)
	}
	return tok, nil
}

// Lookup returns the session a token names, or ErrUnknownToken. The
// token's hash is compared in constant time with the stored one, and a
// record that fails its MAC is ErrTampered.
func (s *Store) Lookup(tok string) (Record, error) {
	if !WellFormed(tok) {
		return Record{}, ErrUnknownToken
	}
	h := Hash(tok)
	var raw, key string
	err := s.db.View(func(tx *buntdb.Tx) error {
		id, err := tx.Get("token:" + h)
		if err != nil {
			return ErrUnknownToken
		}
		if raw, err = tx.Get("session:" + id); err != nil {
			return ErrUnknownToken
		}
		key = id
		return nil
	})
	if err != nil {
		return Record{}, err
	}
	rec, err := s.open(raw)
	if err != nil {
		return Record{}, err
	}
	rec = underKey(rec, key)
	if subtle.ConstantTimeCompare([]byte(rec.TokenHash), []byte(h)) != 1 {
		return Record{}, ErrUnknownToken
	}
	if rec.Tampered {
		return Record{}, fmt.Errorf("%w: session %s", ErrTampered, rec.ID)
	}
	return rec, nil
}

// Save stores sessions' current state and counters, in one fsynced
// transaction. A record that fails its MAC is not re-sealed: Save
// returns ErrTampered and changes nothing (see Quarantine).
func (s *Store) Save(infos ...policy.SessionInfo) error {
	return s.db.Update(func(tx *buntdb.Tx) error {
		for _, info := range infos {
			raw, err := tx.Get("session:" + info.ID)
			if err != nil {
				return fmt.Errorf("%w: %s", ErrNotFound, info.ID)
			}
			rec, err := s.open(raw)
			if err != nil {
				return err
			}
			if rec = underKey(rec, info.ID); rec.Tampered {
				return fmt.Errorf("%w: session %s", ErrTampered, info.ID)
			}
			rec.SessionInfo = info
			out, err := s.seal(rec)
			if err != nil {
				return err
			}
			if _, _, err := tx.Set("session:"+info.ID, out, nil); err != nil {
				return err
			}
		}
		return nil
	})
}

// Quarantine ends a session whose record failed its MAC, for good: the
// record is re-sealed as ended with reason, so its token opens nothing.
func (s *Store) Quarantine(id, reason string) error {
	return s.db.Update(func(tx *buntdb.Tx) error {
		raw, err := tx.Get("session:" + id)
		if err != nil {
			return fmt.Errorf("%w: %s", ErrNotFound, id)
		}
		var rec Record
		if json.Unmarshal([]byte(raw), &rec) != nil {
			rec = Record{SessionInfo: policy.SessionInfo{ID: id}}
		}
		rec.ID = id
		rec.State, rec.EndReason = policy.StateEnded, reason
		out, err := s.seal(rec)
		if err != nil {
			return err
		}
		_, _, err = tx.Set("session:"+id, out, nil)
		return err
	})
}

// Get returns one session by id; Tampered is set when it fails its MAC.
func (s *Store) Get(id string) (Record, error) {
	var raw string
	err := s.db.View(func(tx *buntdb.Tx) error {
		var err error
		if raw, err = tx.Get("session:" + id); err != nil {
			return ErrNotFound
		}
		return nil
	})
	if err != nil {
		return Record{}, err
	}
	rec, err := s.open(raw)
	if err != nil {
		return Record{}, err
	}
	return underKey(rec, id), nil
}

// underKey marks a record stored under another session's key (a moved
// record) as tampered, and names it by its key.
func underKey(rec Record, id string) Record {
	if rec.ID != id {
		rec.Tampered = true
		rec.ID = id
	}
	return rec
}

// List returns every stored session, oldest first; Tampered is set on
// those that fail their MAC. A record that is not even JSON is listed as
// a tampered record with its id alone.
func (s *Store) List() ([]Record, error) {
	var out []Record
	err := s.db.View(func(tx *buntdb.Tx) error {
		return tx.AscendKeys("session:*", func(k, v string) bool {
			rec, err := s.open(v)
			if err != nil {
				rec = Record{Tampered: true}
			}
			out = append(out, underKey(rec, k[len("session:"):]))
			return true
		})
	})
	sort.SliceStable(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, err
}

// PutConfig keeps a snapshot of a config file's bytes under their hex
// SHA-256; storing the same bytes again is a no-op.
func (s *Store) PutConfig(sha string, body []byte) error {
	if configHash(body) != sha {
		return fmt.Errorf("sessions: config snapshot %s does not match its bytes", sha)
	}
	return s.db.Update(func(tx *buntdb.Tx) error {
		if _, err := tx.Get("config:" + sha); err == nil {
			return nil
		}
		_, _, err := tx.Set("config:"+sha, string(body), nil)
		return err
	})
}

// Config returns the snapshot stored under sha: ErrNotFound when there is
// none, ErrTampered when its bytes no longer hash to sha.
func (s *Store) Config(sha string) ([]byte, error) {
	var body string
	err := s.db.View(func(tx *buntdb.Tx) error {
		var err error
		body, err = tx.Get("config:" + sha)
		return err
	})
	if errors.Is(err, buntdb.ErrNotFound) {
		return nil, fmt.Errorf("%w: no config snapshot %s", ErrNotFound, sha)
	}
	if err != nil {
		return nil, err
	}
	if configHash([]byte(body)) != sha {
		return nil, fmt.Errorf("%w: config snapshot %s", ErrTampered, sha)
	}
	return []byte(body), nil
}

func configHash(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
