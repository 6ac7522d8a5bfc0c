package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/keyhole-dev/keyhole/server/access"
	"github.com/keyhole-dev/keyhole/server/admin"
	"github.com/keyhole-dev/keyhole/server/audit"
	"github.com/keyhole-dev/keyhole/server/config"
)

// adminOps carries out admin.Ops on a vault and the live sessions: in the
// broker, for its socket's admin routes; in a command, on a data dir it
// has locked.
type adminOps struct {
	vault SecretStore
	// sessions opens the live sessions on first use: secret commands
	// need neither the session store nor the config.
	sessions func() (*LiveSessions, error)
	reload   func(config string) (admin.Reloaded, error)
	// status and stop are the running broker's; nil in a command that
	// opened the data dir itself.
	status func() (admin.Status, error)
	stop   func() (admin.Stopping, error)
	log    *slog.Logger
	// config is the config whose tools log in (secret login) and say
	// which secrets need a login (secret list).
	config func() (*config.Loaded, error)
	logins *pendingLogins
	// access holds the broker's access requests; nil in a command that
	// opened the data dir itself.
	access *access.Manager
	// changes records every change of who may do what in the audit log.
	changes recorder
	// shared is the PostgreSQL store of a broker that shares one: its
	// access requests are answered through any broker.
	shared *shared
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

func (a *adminOps) SessionNew(req admin.SessionRequest) (admin.SessionInfo, string, error) {
	m, err := a.sessions()
	if err != nil {
		return admin.SessionInfo{}, "", err
	}
	if req.ClientVersion != "" && req.ClientVersion != Version && a.log != nil {
		a.log.Warn(fmt.Sprintf("a keyhole stdio of version %s joined this broker of version %s; its session runs %s until the broker restarts (keyhole stop, then start the client again)", req.ClientVersion, Version, Version),
			"client_version", req.ClientVersion, "broker_version", Version)
	}
	info, tok, err := m.Create(req)
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
	rec.Session, rec.Scope, rec.Config = info.ID, info.Scope, info.Config
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
	return a.revoke(id, scope, all, "operator "+Operator(), "")
}

// revoke revokes the sessions that match, naming by as who revoked them
// in their end reason, ends their access requests, and records each
// revocation (its reason followed by where, when where is set).
func (a *adminOps) revoke(id, scope string, all bool, by, where string) ([]string, error) {
	m, err := a.sessions()
	if err != nil {
		return nil, err
	}
	ids, err := m.Revoke(id, scope, all, "revoked by "+by)
	a.endAccess(ids, "was revoked")
	var errs []error
	for _, rid := range ids {
		rec := changeRecord(a.changes.clock(), ToolSessionRevoke, "session "+rid+" revoked"+where)
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

func (a *adminOps) Reload(config string) (admin.Reloaded, error) { return a.reload(config) }

func (a *adminOps) Status() (admin.Status, error) {
	if a.status == nil {
		return admin.Status{}, admin.ErrNoBroker
	}
	return a.status()
}

func (a *adminOps) Stop() (admin.Stopping, error) {
	if a.stop == nil {
		return admin.Stopping{}, admin.ErrNoBroker
	}
	return a.stop()
}

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
	l := &localAdmin{dd: dd}
	if o.Store != "" {
		replica := o.Replica
		if replica == "" {
			// Not a broker's chain: an admin command's changes get their own.
			h, err := DefaultReplica()
			if err != nil {
				dd.Close()
				return nil, err
			}
			replica = h + "-admin"
		}
		if l.shared, err = openShared(context.Background(), o.Store, replica, dd.Path); err != nil {
			dd.Close()
			return nil, err
		}
	}
	v, err := openSecrets(l.shared, dd.Path, o.Keys)
	if err != nil {
		l.closeShared()
		dd.Close()
		return nil, err
	}
	cfg := sync.OnceValues(func() (*config.Loaded, error) {
		path, err := filepath.Abs(o.ConfigPath)
		if err != nil {
			return nil, err
		}
		return config.Load(path, config.ToolEnv{})
	})
	l.adminOps = adminOps{
		vault:    v,
		config:   cfg,
		logins:   &pendingLogins{},
		sessions: sync.OnceValues(func() (*LiveSessions, error) { return l.openSessions(cfg, o, v) }),
		reload: func(string) (admin.Reloaded, error) {
			return admin.Reloaded{}, fmt.Errorf("keyhole: %w for %s; a new one reads keyhole.yaml when it starts", admin.ErrNoBroker, dd.Path)
		},
		changes: recorder{log: sync.OnceValues(func() (AuditLog, error) { return l.openAudit(o, v) }), now: o.Now},
		shared:  l.shared,
	}
	return l, nil
}

// localAdmin is admin.Admin on a data dir this process has locked.
type localAdmin struct {
	adminOps
	dd     *DataDir
	shared *shared // the PostgreSQL store, with --store
	store  SessionStore
	audit  *audit.Log
}

func (a *localAdmin) closeShared() {
	if a.shared != nil {
		a.shared.db.Close()
	}
}

// openAudit opens the data dir's audit log to record a change, with the
// audit: section of the config when there is one (its mirror gets the
// record too); a secret may be set before any config exists.
func (a *localAdmin) openAudit(o RuntimeOptions, v SecretStore) (AuditLog, error) {
	var section config.Audit
	if cfg, err := config.Load(o.ConfigPath, config.ToolEnv{}); err == nil {
		section = cfg.Config.Audit
	}
	l, err := openAuditLog(a.dd, a.shared, v, section, o.Now)
	if err != nil {
		return nil, err
	}
	a.audit = l
	return auditLog{l}, nil
}

// openSessions opens the session store of a data dir no broker owns. Its
// default config is the command's; a session names its own. Sessions a
// broker left behind are restored as a starting broker would (relayed
// ones ended: no broker serves their clients), without the audit's counts.
func (a *localAdmin) openSessions(loadConfig func() (*config.Loaded, error), o RuntimeOptions, v SecretStore) (*LiveSessions, error) {
	cfg, err := loadConfig()
	if err != nil {
		return nil, err
	}
	store, err := openSessionStore(a.shared, a.dd, v)
	if err != nil {
		return nil, err
	}
	a.store = store
	m := NewLiveSessions(store, LiveSessionsOptions{Configs: newConfigs(cfg, config.ToolEnv{}, nil), Now: o.Now, Logger: o.Logger})
	if _, _, err := m.Restore(); err != nil {
		return nil, err
	}
	return m, nil
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
	errs = append(errs, a.vault.Close())
	a.closeShared()
	errs = append(errs, a.dd.Close())
	return errors.Join(errs...)
}
