package server

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/keyhole-dev/keyhole/policy"
	"github.com/keyhole-dev/keyhole/server/sessions"
	"github.com/keyhole-dev/keyhole/tools"
	"github.com/keyhole-dev/keyhole/vault"
)

// Admin is what an operator does to a keyhole data dir: manage its secrets
// and sessions. The CLI gets one from OpenAdmin and never needs to know
// whether a broker owns the data dir (then the calls go over its socket) or
// not (then the data dir is opened in-process).
type Admin interface {
	SecretSet(name string, value []byte, description string) error
	SecretRotate(name string, value []byte) (vault.Meta, error)
	SecretMeta(name string) (vault.Meta, error)
	SecretList() ([]vault.Meta, error)
	SecretDelete(name string) error
	SessionNew(scope string, ttl time.Duration, label string) (policy.SessionInfo, string, error)
	SessionList(all bool) ([]policy.SessionInfo, error)
	SessionShow(id string) (policy.SessionInfo, error)
	SessionRevoke(id, scope string, all bool) ([]string, error)
	SessionEnd(id string) error
	// Reload re-reads keyhole.yaml in the running broker.
	Reload() error
	// Remote says the calls go to a running broker.
	Remote() bool
	Close() error
}

// ErrNoBroker is returned by operations that need a running broker.
var ErrNoBroker = errors.New("no keyhole broker is running")

// OpenAdmin connects to the broker that owns the data dir, or opens the
// data dir itself when none runs.
func OpenAdmin(o RuntimeOptions) (Admin, error) {
	if c, err := DialAdmin(o.DataDir); err == nil {
		return c, nil
	}
	dd, err := OpenDataDir(o.DataDir)
	if err != nil {
		return nil, err
	}
	v, err := vault.Open(dd.File(VaultFile), o.Keys)
	if err != nil {
		dd.Close()
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("keyhole: no vault in %s: run `keyhole init` first", dd.Path)
		}
		return nil, err
	}
	return &localAdmin{opts: o, dd: dd, vault: v}, nil
}

// localAdmin works on a data dir this process has locked.
type localAdmin struct {
	opts  RuntimeOptions
	dd    *DataDir
	vault *vault.Vault

	once     sync.Once
	sessions *Sessions
	store    *sessions.Store
	err      error
}

func (a *localAdmin) Remote() bool { return false }

func (a *localAdmin) SecretSet(name string, value []byte, desc string) error {
	return a.vault.Set(name, value, desc)
}
func (a *localAdmin) SecretRotate(name string, value []byte) (vault.Meta, error) {
	return a.vault.Rotate(name, value)
}
func (a *localAdmin) SecretMeta(name string) (vault.Meta, error) { return a.vault.Meta(name) }
func (a *localAdmin) SecretList() ([]vault.Meta, error)          { return a.vault.List() }
func (a *localAdmin) SecretDelete(name string) error             { return a.vault.Delete(name) }

// sessionManager opens the session store and the config on first use:
// secret commands need neither.
func (a *localAdmin) sessionManager() (*Sessions, error) {
	a.once.Do(func() {
		cfg, err := LoadConfig(a.opts.ConfigPath, tools.Env{})
		if err != nil {
			a.err = err
			return
		}
		store, err := sessions.Open(a.dd.File(SessionsFile))
		if err != nil {
			a.err = err
			return
		}
		a.store = store
		b := NewBroker(Options{Config: cfg, Secrets: a.vault, Logger: a.opts.Logger, Now: a.opts.Now})
		a.sessions = NewSessions(b, store)
	})
	return a.sessions, a.err
}

func (a *localAdmin) SessionNew(scope string, ttl time.Duration, label string) (policy.SessionInfo, string, error) {
	m, err := a.sessionManager()
	if err != nil {
		return policy.SessionInfo{}, "", err
	}
	return m.Create(scope, ttl, label)
}

func (a *localAdmin) SessionList(all bool) ([]policy.SessionInfo, error) {
	m, err := a.sessionManager()
	if err != nil {
		return nil, err
	}
	return m.List(all)
}

func (a *localAdmin) SessionShow(id string) (policy.SessionInfo, error) {
	m, err := a.sessionManager()
	if err != nil {
		return policy.SessionInfo{}, err
	}
	return m.Show(id)
}

func (a *localAdmin) SessionRevoke(id, scope string, all bool) ([]string, error) {
	m, err := a.sessionManager()
	if err != nil {
		return nil, err
	}
	return m.Revoke(id, scope, all, "revoked by operator")
}

func (a *localAdmin) SessionEnd(id string) error {
	m, err := a.sessionManager()
	if err != nil {
		return err
	}
	return m.End(id, "ended by client")
}

func (a *localAdmin) Reload() error {
	return fmt.Errorf("keyhole: %w for %s; a new one reads keyhole.yaml when it starts", ErrNoBroker, a.dd.Path)
}

func (a *localAdmin) Close() error {
	var errs []error
	if a.store != nil {
		errs = append(errs, a.store.Close())
	}
	errs = append(errs, a.vault.Close(), a.dd.Close())
	return errors.Join(errs...)
}
