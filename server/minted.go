package server

import (
	"context"
	"log/slog"

	"github.com/keyhole-dev/keyhole/server/audit"
	"github.com/keyhole-dev/keyhole/tools"
)

// secretWriter lets a call's tool store what it learns about its own
// secret (tools.SecretWriter): a rotated refresh token, or that it needs a
// login. Failures are logged here, by name; they never hold a value.
type secretWriter struct {
	secrets Secrets
	name    string
	log     *slog.Logger
	// changed, if set, is told that the secret's value changed.
	changed func(name string)
}

var _ tools.SecretWriter = secretWriter{}

// Replace implements tools.SecretWriter.
func (w secretWriter) Replace(prev, next []byte) error {
	m, err := w.secrets.Replace(w.name, prev, next)
	if w.changed != nil {
		w.changed(w.name)
	}
	if err != nil {
		w.log.Error("store renewed credential", LogSecret, w.name, LogError, err)
		return err
	}
	w.log.Info("stored renewed credential", LogSecret, w.name, "version", m.Version)
	return nil
}

// SetStatus implements tools.SecretWriter.
func (w secretWriter) SetStatus(status string) error {
	w.log.Warn("credential needs an operator", LogSecret, w.name, "status", status)
	if err := w.secrets.SetStatus(w.name, status); err != nil {
		w.log.Error("record credential status", LogSecret, w.name, LogError, err)
		return err
	}
	return nil
}

// auditCredential records what credential a call sent: its kind and the
// minted token's id and expiry, never a value.
func auditCredential(rec *audit.Record, c tools.CredentialInfo) {
	rec.CredentialKind, rec.TokenID = c.Kind, c.TokenID
	if !c.Expires.IsZero() {
		rec.TokenExpires = c.Expires.UTC()
	}
}

// endMinted tells every tool of the session's config that holds
// credentials minted for it (tools.SessionEnder) that the session is
// over, once: they revoke them upstream.
func (s *Session) endMinted(ctx context.Context, log *slog.Logger) {
	s.ended.Do(func() { s.revokeMinted(context.WithoutCancel(ctx), log) })
}

// revokeMinted has the session's tools revoke and forget what they minted
// for it. The session may go on: a later call mints anew.
func (s *Session) revokeMinted(ctx context.Context, log *slog.Logger) {
	for name, t := range s.cfg.Tools {
		if e, ok := t.(tools.SessionEnder); ok && s.Scope().HasTool(name) {
			if err := e.EndSession(ctx, s.ID()); err != nil {
				log.Warn("revoke session credential", LogSession, s.ID(), LogTool, name, LogError, err)
			}
		}
	}
}
