package access

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/tidwall/buntdb"
)

// stored is a request as kept in the file, with its approval's binding
// HMAC.
type stored struct {
	Request
	Notify  Notify `json:"notify"`
	Binding string `json:"binding,omitempty"`
}

// envelope is a stored record's value: the record's exact encoding and
// its MAC over those bytes.
type envelope struct {
	MAC    string          `json:"mac"`
	Record json.RawMessage `json:"record"`
}

// store keeps request records, each MAC'd, in a backend: a buntdb file
// in the data dir, or a PostgreSQL store shared by several brokers. A
// nil store keeps nothing (a manager that lives only in memory, in
// tests).
type store struct {
	b    backend
	keys keys
}

// backend is where records are kept: id -> value (a MAC'd envelope).
type backend interface {
	set(id, value string) error
	del(id string) error
	each(fn func(id, value string)) error
	close() error
}

// fileBackend is a buntdb file.
type fileBackend struct{ db *buntdb.DB }

// openStore opens (or creates, 0600) the request file at path.
func openStore(path string, k keys) (*store, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("access: open %s: %w", path, err)
	}
	f.Close()
	db, err := buntdb.Open(path)
	if err != nil {
		return nil, fmt.Errorf("access: open %s: %w", path, err)
	}
	var cfg buntdb.Config
	if err := db.ReadConfig(&cfg); err != nil {
		db.Close()
		return nil, fmt.Errorf("access: open %s: %w", path, err)
	}
	cfg.SyncPolicy = buntdb.Always // requests are rare; an approval is durable once given
	cfg.AutoShrinkDisabled = true  // a shrink would recreate the file with a looser mode
	if err := db.SetConfig(cfg); err != nil {
		db.Close()
		return nil, fmt.Errorf("access: open %s: %w", path, err)
	}
	return &store{b: fileBackend{db}, keys: k}, nil
}

func (f fileBackend) set(id, value string) error {
	return f.db.Update(func(tx *buntdb.Tx) error {
		_, _, err := tx.Set("acr:"+id, value, nil)
		return err
	})
}

func (f fileBackend) del(id string) error {
	return f.db.Update(func(tx *buntdb.Tx) error {
		_, err := tx.Delete("acr:" + id)
		if errors.Is(err, buntdb.ErrNotFound) {
			return nil
		}
		return err
	})
}

func (f fileBackend) each(fn func(id, value string)) error {
	return f.db.View(func(tx *buntdb.Tx) error {
		return tx.AscendKeys("acr:*", func(key, v string) bool {
			fn(key[len("acr:"):], v)
			return true
		})
	})
}

func (f fileBackend) close() error { return f.db.Close() }

func (s *store) close() error {
	if s == nil {
		return nil
	}
	return s.b.close()
}

// put writes a request and its binding, MAC'd.
func (s *store) put(r Request, bindingMAC string) error {
	if s == nil {
		return nil
	}
	rec := stored{Request: r, Notify: r.Notify, Binding: bindingMAC}
	rec.Waiting = 0 // a held call does not outlive its process
	enc, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("access: encode %s: %w", r.ID, err)
	}
	out, err := json.Marshal(envelope{MAC: s.keys.recordMAC(enc), Record: enc})
	if err != nil {
		return fmt.Errorf("access: encode %s: %w", r.ID, err)
	}
	return s.b.set(r.ID, string(out))
}

// remove deletes a request's record.
func (s *store) remove(id string) error {
	if s == nil {
		return nil
	}
	return s.b.del(id)
}

// loaded is one record read back: valid, or (bad) only the id of one
// whose MAC does not verify: nothing else of it is trusted.
type loaded struct {
	rec stored
	bad bool
}

// load reads every record and checks its MAC.
func (s *store) load() ([]loaded, error) {
	if s == nil {
		return nil, nil
	}
	var out []loaded
	err := s.b.each(func(id, v string) {
		var env envelope
		var rec stored
		if json.Unmarshal([]byte(v), &env) != nil || !hmacEqualHex(s.keys.recordMAC(env.Record), env.MAC) ||
			json.Unmarshal(env.Record, &rec) != nil || rec.ID != id {
			out = append(out, loaded{rec: stored{Request: Request{ID: id}}, bad: true})
			return
		}
		out = append(out, loaded{rec: rec})
	})
	if err != nil {
		return nil, fmt.Errorf("access: read requests: %w", err)
	}
	return out, nil
}
