package server

import (
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/keyhole-dev/keyhole/policy"
	"github.com/keyhole-dev/keyhole/server/admin"
	"github.com/keyhole-dev/keyhole/server/config"
	"github.com/keyhole-dev/keyhole/server/report"
	"github.com/keyhole-dev/keyhole/server/sessions"
	"github.com/keyhole-dev/keyhole/vault"
)

// ReportSources returns what reports read in the reader's data dir: the
// audit log, the vault's metadata (never a value) and the session records
// (through the broker's socket when one runs, else a snapshot of the
// session store), with cfg as the config and now as the report's time.
// Nothing takes the data dir's lock.
func (r *AuditReader) ReportSources(cfg *config.Loaded, now time.Time) (*report.Sources, error) {
	metas, err := r.vault.List()
	if err != nil {
		return nil, err
	}
	src := &report.Sources{Log: r.Log, Config: cfg, Secrets: metas, Now: now}
	src.Sessions, src.SessionsNote = sessionRecords(r.dir, r.vault.DeriveKey(sessions.KeyLabel))
	return src, nil
}

// sessionRecords reads every session record of dir (key checks their MACs
// when they are read from the store), or says why it could not.
func sessionRecords(dir string, key []byte) ([]policy.SessionInfo, string) {
	if c, err := admin.Dial(dir); err == nil {
		list, err := c.SessionList(true)
		if err == nil {
			return list, ""
		}
		return nil, fmt.Sprintf("the broker did not list its sessions: %v", err)
	}
	recs, err := sessions.Snapshot(filepath.Join(dir, SessionsFile), key)
	if errors.Is(err, sessions.ErrNoStore) {
		return nil, "no phantom-token session was ever started here"
	}
	if err != nil {
		return nil, fmt.Sprintf("the session store could not be read: %v", err)
	}
	return trusted(recs)
}

// ReportSourcesWithoutLog is ReportSources for a data dir in which no call
// was ever recorded: the vault's metadata and the session records, and a
// log without calls.
func ReportSourcesWithoutLog(dir string, keys KeySource, cfg *config.Loaded, now time.Time) (*report.Sources, error) {
	v, err := vault.OpenReadOnly(filepath.Join(dir, VaultFile), keys)
	if err != nil {
		return nil, err
	}
	defer v.Close()
	metas, err := v.List()
	if err != nil {
		return nil, err
	}
	src := &report.Sources{Log: report.NoCalls, Config: cfg, Secrets: metas, Now: now}
	src.Sessions, src.SessionsNote = sessionRecords(dir, v.DeriveKey(sessions.KeyLabel))
	return src, nil
}
