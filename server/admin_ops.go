package server

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/keyhole-dev/keyhole/server/access"
	"github.com/keyhole-dev/keyhole/server/admin"
	"github.com/keyhole-dev/keyhole/server/audit"
	"github.com/keyhole-dev/keyhole/server/config"
	"github.com/keyhole-dev/keyhole/server/sessions"
	"github.com/keyhole-dev/keyhole/vault"
)

// adminOps carries out admin.Ops on a vault and the live sessions: in the
// broker, for its socket's admin routes; in a command, on a data dir it
// has locked.
type adminOps struct {
	vault *vault.Vault
	// sessions opens the live sessions on first use: secret commands
	// need neither the session store nor the config.
	sessions func() (*LiveSessions, error)
	reload   func() error
	// config is the config whose tools log in (secret login) and say
	// which secrets need a login (secret list).
	config func() (*config.Loaded, error)
	logins *pendingLogins
	// access holds the broker's access requests; nil in a command that
	// opened the data dir itself.
	access *access.Manager
	// changes records every change of who may do what in the audit log.
	changes recorder
	// secretChanged, if set, is told of every secret whose value changed
	// or was removed (the broker drops its cached copy).
	secretChanged func(name string)
}

// changed tells secretChanged, if set, that secret name changed.
func (a *adminOps) changed(name string) {
	if a.secretChanged != nil {
		a.secretChanged(name)
	}
}

var _ admin.Ops = (*adminOps)(nil)

func (a *adminOps) SecretSet(name string, value []byte, desc string) error {
	err := a.vault.Set(name, value, desc)
	a.changed(name)
	if err != nil {
		return err
	}
	rec := changeRecord(a.changes.clock(), ToolSecretSet, fmt.Sprintf("secret %s stored (version 1)", name))
	rec.Credential, rec.CredVersion = name, 1
	return a.changes.write(rec)
}

func (a *adminOps) SecretRotate(name string, value []byte) (admin.SecretMeta, error) {
	m, err := a.vault.Rotate(name, value)
	a.changed(name)
	if err != nil {
		return m, err
	}
	rec := changeRecord(a.changes.clock(), ToolSecretRotate, fmt.Sprintf("secret %s rotated to version %d", name, m.Version))
	rec.Credential, rec.CredVersion = name, m.Version
	return m, a.changes.write(rec)
}

func (a *adminOps) SecretMeta(name string) (admin.SecretMeta, error) { return a.vault.Meta(name) }
func (a *adminOps) SecretList() ([]admin.SecretMeta, error) {
	metas, err := a.vault.List()
	if err != nil {
		return nil, err
	}
	return a.withLoginStatus(metas), nil
}

func (a *adminOps) SecretDelete(name string) error {
	err := a.vault.Delete(name)
	a.changed(name)
	if err != nil {
		return err
	}
	rec := changeRecord(a.changes.clock(), ToolSecretRm, fmt.Sprintf("secret %s deleted", name))
	rec.Credential = name
	return a.changes.write(rec)
}

func (a *adminOps) SessionNew(scope string, ttl time.Duration, label string) (admin.SessionInfo, string, error) {
	m, err := a.sessions()
	if err != nil {
		return admin.SessionInfo{}, "", err
	}
	info, tok, err := m.Create(scope, ttl, label)
	if err != nil {
		return info, tok, err
	}
	if err := a.changes.write(sessionNewRecord(a.changes.clock(), info)); err != nil {
		// An unrecorded session must not be used: end it.
		_ = m.End(info.ID, "its start could not be recorded in the audit log")
		return admin.SessionInfo{}, "", err
	}
	return info, tok, nil
}

// sessionNewRecord records the start of a session: its scope, label and
// expiry, never its token.
func sessionNewRecord(now time.Time, info admin.SessionInfo) audit.Record {
	reason := fmt.Sprintf("session %s of scope %s started, expires %s", info.ID, info.Scope, info.Expires.UTC().Format(time.RFC3339))
	if info.Label != "" {
		reason += ", label " + info.Label
	}
	rec := changeRecord(now, ToolSessionNew, reason)
	rec.Session, rec.Scope = info.ID, info.Scope
	return rec
}

func (a *adminOps) SessionList(all bool) ([]admin.SessionInfo, error) {
	m, err := a.sessions()
	if err != nil {
		return nil, err
	}
	return m.List(all)
}

func (a *adminOps) SessionShow(id string) (admin.SessionInfo, error) {
	m, err := a.sessions()
	if err != nil {
		return admin.SessionInfo{}, err
	}
	return m.Show(id)
}

func (a *adminOps) SessionRevoke(id, scope string, all bool) ([]string, error) {
	m, err := a.sessions()
	if err != nil {
		return nil, err
	}
	ids, err := m.Revoke(id, scope, all, "revoked by operator "+Operator())
	a.endAccess(ids, "was revoked")
	var errs []error
	for _, rid := range ids {
		rec := changeRecord(a.changes.clock(), ToolSessionRevoke, "session "+rid+" revoked")
		rec.Session = rid
		if info, err := m.Show(rid); err == nil {
			rec.Scope = info.Scope
		}
		errs = append(errs, a.changes.write(rec))
	}
	return ids, errors.Join(append(errs, err)...)
}

func (a *adminOps) SessionEnd(id string) error {
	m, err := a.sessions()
	if err != nil {
		return err
	}
	err = m.End(id, "ended by client")
	a.endAccess([]string{id}, "ended (its client is gone)")
	return err
}

func (a *adminOps) Reload() error { return a.reload() }

// OpenAdmin connects to the broker that owns the data dir, or opens the
// data dir itself when none runs.
func OpenAdmin(o RuntimeOptions) (admin.Admin, error) {
	if c, err := admin.Dial(o.DataDir); err == nil {
		return c, nil
	}
	dd, err := OpenDataDir(o.DataDir)
	if err != nil {
		return nil, err
	}
	v, err := openVault(dd.Path, o.Keys)
	if err != nil {
		dd.Close()
		return nil, err
	}
	l := &localAdmin{dd: dd}
	cfg := sync.OnceValues(func() (*config.Loaded, error) { return config.Load(o.ConfigPath, config.ToolEnv{}) })
	l.adminOps = adminOps{
		vault:    v,
		config:   cfg,
		logins:   &pendingLogins{},
		sessions: sync.OnceValues(func() (*LiveSessions, error) { return l.openSessions(cfg, o, v) }),
		reload: func() error {
			return fmt.Errorf("keyhole: %w for %s; a new one reads keyhole.yaml when it starts", admin.ErrNoBroker, dd.Path)
		},
		changes: recorder{log: sync.OnceValues(func() (AuditLog, error) { return l.openAudit(o, v) }), now: o.Now},
	}
	return l, nil
}

// localAdmin is admin.Admin on a data dir this process has locked.
type localAdmin struct {
	adminOps
	dd    *DataDir
	store *sessions.Store
	audit *audit.Log
}

// openAudit opens the data dir's audit log to record a change, with the
// audit: section of the config when there is one (its mirror gets the
// record too); a secret may be set before any config exists.
func (a *localAdmin) openAudit(o RuntimeOptions, v *vault.Vault) (AuditLog, error) {
	var section config.Audit
	if cfg, err := config.Load(o.ConfigPath, config.ToolEnv{}); err == nil {
		section = cfg.Config.Audit
	}
	l, err := openAuditLog(a.dd, v, section, o.Now)
	if err != nil {
		return nil, err
	}
	a.audit = l
	return auditLog{l}, nil
}

func (a *localAdmin) openSessions(loadConfig func() (*config.Loaded, error), o RuntimeOptions, v *vault.Vault) (*LiveSessions, error) {
	cfg, err := loadConfig()
	if err != nil {
		return nil, err
	}
	store, err := sessions.Open(a.dd.File(SessionsFile))
	if err != nil {
		return nil, err
	}
	a.store = store
	return NewLiveSessions(store, LiveSessionsOptions{Config: func() *config.Loaded { return cfg }, Now: o.Now, Logger: o.Logger}), nil
}

func (a *localAdmin) Remote() bool { return false }

func (a *localAdmin) Close() error {
	var errs []error
	if a.store != nil {
		errs = append(errs, a.store.Close())
	}
	if a.audit != nil {
		errs = append(errs, a.audit.Close())
	}
	errs = append(errs, a.vault.Close(), a.dd.Close())
	return errors.Join(errs...)
}
