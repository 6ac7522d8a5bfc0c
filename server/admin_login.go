package server

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/keyhole-dev/keyhole/server/admin"
	"github.com/keyhole-dev/keyhole/server/config"
	"github.com/keyhole-dev/keyhole/tools"
)

// Logins in progress: each waits at most loginTTL for its redirect, and
// at most maxLogins wait at once.
const (
	loginTTL  = 15 * time.Minute
	maxLogins = 16
)

// pendingLogins are the OAuth 2.0 logins begun and not yet finished, by
// state.
type pendingLogins struct {
	mu sync.Mutex
	m  map[string]pendingLogin
}

type pendingLogin struct {
	secret  string
	login   *tools.Login
	expires time.Time
}

// put stores a login, dropping expired ones; it refuses past maxLogins.
func (p *pendingLogins) put(l pendingLogin) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	if p.m == nil {
		p.m = map[string]pendingLogin{}
	}
	maps.DeleteFunc(p.m, func(_ string, l pendingLogin) bool { return !now.Before(l.expires) })
	if len(p.m) >= maxLogins {
		return fmt.Errorf("keyhole: %d logins are waiting for their redirect; finish or wait for them (%s)", len(p.m), loginTTL)
	}
	p.m[l.login.State] = l
	return nil
}

// take removes and returns the unexpired login of state for secret.
func (p *pendingLogins) take(secret, state string) (pendingLogin, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	l, ok := p.m[state]
	if !ok || l.secret != secret || !time.Now().Before(l.expires) {
		return pendingLogin{}, false
	}
	delete(p.m, state)
	return l, true
}

// loginTools returns the tools of cfg that use secret name and have a
// login, by tool name.
func loginTools(cfg *config.Loaded, name string) map[string]tools.Loginer {
	out := map[string]tools.Loginer{}
	for tn, t := range cfg.Tools {
		if l, ok := t.(tools.Loginer); ok && t.SecretName() == name {
			out[tn] = l
		}
	}
	return out
}

func (a *adminOps) SecretLoginStart(name, redirectURL string) (admin.LoginStart, error) {
	cfg, err := a.config()
	if err != nil {
		return admin.LoginStart{}, err
	}
	secret, err := a.vault.Get(name)
	if err != nil {
		return admin.LoginStart{}, err
	}
	candidates := loginTools(cfg, name)
	for _, tn := range slices.Sorted(maps.Keys(candidates)) {
		l, err := candidates[tn].StartLogin(secret.Bytes(), redirectURL)
		if errors.Is(err, tools.ErrNoLogin) {
			continue
		}
		if err != nil {
			return admin.LoginStart{}, fmt.Errorf("keyhole: login for secret %s (tool %s): %w", name, tn, err)
		}
		if err := a.logins.put(pendingLogin{secret: name, login: l, expires: time.Now().Add(loginTTL)}); err != nil {
			return admin.LoginStart{}, err
		}
		return admin.LoginStart{URL: l.URL, State: l.State, Tool: tn}, nil
	}
	return admin.LoginStart{}, fmt.Errorf("keyhole: no tool in %s uses secret %s with inject: oauth2 and flow: authorization_code, so it has no login", cfg.Path, name)
}

func (a *adminOps) SecretLoginFinish(name, state, code string) (admin.SecretMeta, error) {
	l, ok := a.logins.take(name, state)
	if !ok {
		return admin.SecretMeta{}, fmt.Errorf("keyhole: no login of secret %s is waiting for this redirect (it expired, finished, or was begun elsewhere); run `keyhole secret login %s` again", name, name)
	}
	secret, err := a.vault.Get(name)
	if err != nil {
		return admin.SecretMeta{}, err
	}
	next, err := l.login.Finish(context.Background(), secret.Bytes(), state, code)
	if err != nil {
		return admin.SecretMeta{}, err
	}
	defer clear(next)
	m, err := a.vault.Replace(name, secret.Bytes(), next)
	a.changed(name)
	if err != nil {
		return m, err
	}
	rec := changeRecord(a.changes.clock(), ToolSecretLogin, fmt.Sprintf("secret %s authorized by an OAuth login (version %d)", name, m.Version))
	rec.Credential, rec.CredVersion = name, m.Version
	return m, a.changes.write(rec)
}

// withLoginStatus marks the secrets that need a login before their tool's
// first call: used by an oauth2 tool with flow authorization_code, and
// holding no refresh token. A status the broker recorded is kept.
func (a *adminOps) withLoginStatus(metas []admin.SecretMeta) []admin.SecretMeta {
	cfg, err := a.config()
	if err != nil {
		return metas // no config: nothing to say about logins
	}
	for i, m := range metas {
		if m.Status != "" {
			continue
		}
		for _, l := range loginTools(cfg, m.Name) {
			secret, err := a.vault.Get(m.Name)
			if err == nil && l.LoginNeeded(secret.Bytes()) {
				metas[i].Status = tools.StatusNeedsLogin
				break
			}
		}
	}
	return metas
}
