package server

import (
	"github.com/jackc/pgx/v5/pgxpool"

	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/user"
	"strconv"

	"github.com/keyhole-dev/keyhole/policy"
	"github.com/keyhole-dev/keyhole/server/access"
	"github.com/keyhole-dev/keyhole/server/audit"
	"github.com/keyhole-dev/keyhole/tools"
)

// AccessFile is the file in a data dir that keeps access requests.
const AccessFile = "access.db"

// openAccess opens the access requests of a data dir: MAC'd with a key
// derived from the vault's root key, every step in the audit log, and
// webhook posts signed with the value of a vault secret.
func openAccess(dd *DataDir, sh *shared, v SecretStore, log *audit.Log, o RuntimeOptions) (*access.Manager, error) {
	var db *pgxpool.Pool
	var replica string
	if sh != nil {
		db, replica = sh.db, sh.replica
	}
	return access.Open(access.Options{
		Path:     dd.File(AccessFile),
		Postgres: db,
		Replica:  replica,
		Key:      v.DeriveKey(accessKeyLabel),
		Audit:    log,
		History:  log,
		Now:      o.Now,
		Logger:   o.Logger,
		WebhookKey: func(name string) ([]byte, error) {
			s, err := v.Get(name)
			if err != nil {
				return nil, err
			}
			return bytes.Clone(s.Bytes()), nil
		},
	})
}

// askPerson holds a call that policy says a person may approve (d.Ask):
// a grant with approve: true matched, or the scope turns its denials into
// access requests. It returns an allowing decision naming the approval
// when the call may proceed now, exactly as asked, or a denial and the
// message that tells the agent what its user must do.
func (b *Broker) askPerson(ctx context.Context, s *Session, tool tools.Tool, call *tools.Call, d policy.Decision, rec *audit.Record, cs *callSecrets) (policy.Decision, string) {
	if b.access == nil {
		if d.Code == policy.CodeNotGranted {
			s.NoteDenial(b.now()) // a plain denial after all
		}
		d.Ask = false
		d.Reason += "; access requests need the shared broker (keyhole stdio without --standalone, or keyhole serve) to hold the call for an answer"
		return d, "denied: " + d.Reason
	}
	secret, err := cs.get(tool.SecretName())
	if err != nil {
		// Nothing to scrub the request with, and nothing to run it with.
		return policy.Decision{Code: "secret_unavailable", Reason: fmt.Sprintf("secret %q unavailable: %v", tool.SecretName(), err)},
			fmt.Sprintf("keyhole cannot use the credential of tool %q; an operator must fix it (keyhole secret set %s)", tool.Name(), tool.SecretName())
	}
	sc := secret.scrubber(tool)
	ans := b.access.Ask(ctx, access.Ask{
		Session: s.ID(), Scope: s.Scope().Name(), Label: s.Info(b.now()).Label, Client: rec.Client,
		Config: s.cfg.Path, ConfigSHA256: s.cfg.Digest,
		Tool: tool.Name(), Credential: tool.SecretName(),
		Call: call.Canonical(), Request: call.Request, Decision: d,
		Approval: s.Scope().Approval(),
		Scrub:    func(str string) string { out, _ := sc.String(str); return out },
	})
	// The call may have waited long: what runs after the answer reads its
	// secrets afresh (an operator may have rotated one meanwhile).
	cs.release()
	if ans.CountDenial {
		s.NoteDenial(b.now())
	}
	if !ans.Approved {
		return policy.Decision{Code: ans.Code, Reason: ans.Reason}, ans.Message
	}
	// Revocation takes effect on the next call, held ones included.
	if live := s.Live(b.now()); !live.Allow {
		return live, "denied: " + live.Reason
	}
	return policy.Decision{Allow: true, Reason: ans.Reason, Grant: ans.Grant}, ""
}

// accessSessions lets the access manager reach live sessions by id.
type accessSessions struct{ m *LiveSessions }

var _ access.Sessions = accessSessions{}

func (a accessSessions) session(id string) (*Session, error) {
	rec, err := a.m.store.Get(id)
	if err != nil {
		return nil, fmt.Errorf("no session %s", id)
	}
	return a.m.get(rec)
}

// Live implements access.Sessions. A session this broker does not serve
// yet is judged from its stored record, not made live: the sweep asks
// about every session with a request, and must not keep a broker from
// its idle exit.
func (a accessSessions) Live(id string) error {
	now := a.m.now()
	a.m.mu.Lock()
	s, ok := a.m.live[id]
	a.m.mu.Unlock()
	if ok {
		if d := s.Live(now); !d.Allow {
			return errors.New(d.Reason)
		}
		return nil
	}
	rec, err := a.m.store.Get(id)
	if err != nil {
		return fmt.Errorf("no session %s", id)
	}
	if rec.Tampered {
		return fmt.Errorf("session %s: %s", id, reasonTampered)
	}
	// Judged under the config the session started with, never the file
	// as it is now.
	cfg, err := a.m.pinned(rec)
	if err != nil {
		return fmt.Errorf("session %s: its scope cannot be restored: %v", id, err)
	}
	sc, ok := cfg.Policy.Scope(rec.Scope)
	if !ok {
		return fmt.Errorf("session %s: its scope %s is not in the config it started with", id, rec.Scope)
	}
	if d := policy.RestoreSession(rec.SessionInfo, sc).Live(now); !d.Allow {
		return errors.New(d.Reason)
	}
	return nil
}

// AddGrant implements access.Sessions: the grant is stored with the
// session at once.
func (a accessSessions) AddGrant(id string, g policy.ExactGrant) error {
	s, err := a.session(id)
	if err != nil {
		return err
	}
	if err := s.AddGrant(a.m.now(), g); err != nil {
		return err
	}
	a.m.saveNow(s)
	return nil
}

// NoteDenial implements access.Sessions.
func (a accessSessions) NoteDenial(id string) {
	if s, err := a.session(id); err == nil {
		s.NoteDenial(a.m.now())
		a.m.saveNow(s)
	}
}

// decider names who answers an access request on the broker's socket:
// only the broker's own OS user can connect to it (SO_PEERCRED), so the
// operator is that user.
func decider() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return "os:" + u.Username
	}
	return "os:uid-" + strconv.Itoa(os.Getuid())
}
