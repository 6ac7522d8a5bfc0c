package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/keyhole-dev/keyhole/policy"
	"github.com/keyhole-dev/keyhole/server/config"
	"github.com/keyhole-dev/keyhole/server/sessions"
)

// LiveSessions are the phantom-token sessions a broker serves: created by
// an operator (`keyhole session new`) or by a local stdio client through
// the broker, persisted in a sessions.Store in the data dir, and kept live
// in memory while the broker runs, so a session's counters and limiter
// hold across reconnects and revocation takes effect on the next call.
type LiveSessions struct {
	config func() *config.Loaded // the config new and restored sessions start with
	now    func() time.Time
	log    *slog.Logger
	store  *sessions.Store

	mu     sync.Mutex
	live   map[string]*Session // by session id
	byHash map[string]*Session // by token hash, so a request needs no store read
	dirty  map[string]*Session // counters changed since the last Flush
}

// LiveSessionsOptions is what LiveSessions take from the broker.
type LiveSessionsOptions struct {
	// Config returns the config new sessions start with (Broker.Config).
	Config func() *config.Loaded
	// Now is the clock sessions expire by; nil is time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// NewLiveSessions serves the sessions of store.
func NewLiveSessions(store *sessions.Store, o LiveSessionsOptions) *LiveSessions {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &LiveSessions{config: o.Config, now: o.Now, log: o.Logger, store: store,
		live: map[string]*Session{}, byHash: map[string]*Session{}, dirty: map[string]*Session{}}
}

// ErrSessionDead is returned for a token whose session is expired, revoked
// or ended.
var ErrSessionDead = errors.New("session is not active")

// Create starts a session of scope and returns its info and phantom
// token. A ttl longer than the scope allows is refused.
func (m *LiveSessions) Create(scope string, ttl time.Duration, label string) (policy.SessionInfo, string, error) {
	cfg := m.config()
	sc, ok := cfg.Policy.Scope(scope)
	if !ok {
		return policy.SessionInfo{}, "", fmt.Errorf("keyhole: scope %q is not defined in %s (defined: %v)", scope, cfg.Path, cfg.Policy.ScopeNames())
	}
	if ttl != 0 {
		if _, err := sc.SessionTTL(ttl); err != nil {
			return policy.SessionInfo{}, "", err
		}
	}
	s := &Session{Session: policy.NewSession(NewSessionID(), sc, m.now(), ttl, label), cfg: cfg}
	info := s.Info(m.now())
	tok, err := m.store.Create(info)
	if err != nil {
		return policy.SessionInfo{}, "", err
	}
	m.track(s, sessions.Hash(tok))
	return info, tok, nil
}

// track makes s live. Its counters are marked dirty after each call and
// written by Flush, so a call costs no store write; a state change
// (revoke, end) is written at once.
func (m *LiveSessions) track(s *Session, tokenHash string) {
	s.persist = func(policy.SessionInfo) {
		m.mu.Lock()
		m.dirty[s.ID()] = s
		m.mu.Unlock()
	}
	m.mu.Lock()
	m.live[s.ID()] = s
	m.byHash[tokenHash] = s
	m.mu.Unlock()
}

// Flush writes the counters of every session that served calls since the
// last Flush. The broker flushes every second and on shutdown, so a crash
// loses at most a second of counts.
func (m *LiveSessions) Flush() {
	m.mu.Lock()
	dirty := m.dirty
	m.dirty = map[string]*Session{}
	m.mu.Unlock()
	now := m.now()
	for _, s := range dirty {
		if err := m.store.Save(s.Info(now)); err != nil {
			m.log.Warn("save session", LogSession, s.ID(), LogError, err)
		}
	}
}

// saveNow writes one session's state immediately.
func (m *LiveSessions) saveNow(s *Session) {
	if err := m.store.Save(s.Info(m.now())); err != nil {
		m.log.Warn("save session", LogSession, s.ID(), LogError, err)
	}
}

// Authenticate returns the live session a phantom token names. Unknown
// tokens get sessions.ErrUnknownToken; a session that is no longer active
// gets ErrSessionDead.
func (m *LiveSessions) Authenticate(tok string) (*Session, error) {
	if !sessions.WellFormed(tok) {
		return nil, sessions.ErrUnknownToken
	}
	m.mu.Lock()
	s, ok := m.byHash[sessions.Hash(tok)]
	m.mu.Unlock()
	if !ok {
		rec, err := m.store.Lookup(tok)
		if err != nil {
			return nil, err
		}
		if s, err = m.get(rec); err != nil {
			return nil, err
		}
	}
	if info := s.Info(m.now()); info.State != policy.StateActive {
		return nil, &DeadSessionError{Info: info}
	}
	return s, nil
}

// get returns the live session of a stored record, restoring it under the
// current config when this broker has not served it yet.
func (m *LiveSessions) get(rec sessions.Record) (*Session, error) {
	m.mu.Lock()
	s, ok := m.live[rec.ID]
	m.mu.Unlock()
	if ok {
		return s, nil
	}
	cfg := m.config()
	sc, ok := cfg.Policy.Scope(rec.Scope)
	if !ok {
		return nil, fmt.Errorf("%w: scope %s is no longer defined", ErrSessionDead, rec.Scope)
	}
	s = &Session{Session: policy.RestoreSession(rec.SessionInfo, sc), cfg: cfg}
	m.mu.Lock()
	if existing, ok := m.live[rec.ID]; ok {
		m.mu.Unlock()
		return existing, nil
	}
	m.mu.Unlock()
	m.track(s, rec.TokenHash)
	return s, nil
}

// List returns every session's current state, oldest first. Without all,
// only active sessions.
func (m *LiveSessions) List(all bool) ([]policy.SessionInfo, error) {
	recs, err := m.store.List()
	if err != nil {
		return nil, err
	}
	now := m.now()
	var out []policy.SessionInfo
	for _, r := range recs {
		info := r.SessionInfo
		m.mu.Lock()
		if s, ok := m.live[r.ID]; ok {
			info = s.Info(now)
		}
		m.mu.Unlock()
		if info.State == policy.StateActive && !now.Before(info.Expires) {
			info.State = policy.StateExpired
		}
		if all || info.State == policy.StateActive {
			out = append(out, info)
		}
	}
	return out, nil
}

// Show returns one session's state.
func (m *LiveSessions) Show(id string) (policy.SessionInfo, error) {
	rec, err := m.store.Get(id)
	if err != nil {
		return policy.SessionInfo{}, fmt.Errorf("keyhole: no session %s (see `keyhole session list --all`): %w", id, err)
	}
	s, err := m.get(rec)
	if err != nil {
		return rec.SessionInfo, nil
	}
	return s.Info(m.now()), nil
}

// Revoke revokes the sessions that match: one id, every session of a
// scope, or all. It returns the ids revoked. The next call of a revoked
// session, even on an open connection, is denied.
func (m *LiveSessions) Revoke(id, scope string, all bool, reason string) ([]string, error) {
	recs, err := m.store.List()
	if err != nil {
		return nil, err
	}
	var done []string
	for _, r := range recs {
		if !(all || (id != "" && r.ID == id) || (scope != "" && r.Scope == scope)) {
			continue
		}
		s, err := m.get(r)
		if err != nil {
			continue
		}
		if s.Info(m.now()).State != policy.StateActive {
			continue
		}
		s.Revoke(reason)
		m.saveNow(s)
		s.endMinted(context.Background(), m.log)
		done = append(done, r.ID)
	}
	if id != "" && len(done) == 0 {
		if _, err := m.store.Get(id); err != nil {
			return nil, fmt.Errorf("keyhole: no session %s: %w", id, err)
		}
	}
	return done, nil
}

// End ends a session (its client is gone).
func (m *LiveSessions) End(id, reason string) error {
	rec, err := m.store.Get(id)
	if err != nil {
		return err
	}
	s, err := m.get(rec)
	if err != nil {
		return nil
	}
	s.End(reason)
	m.saveNow(s)
	s.endMinted(context.Background(), m.log)
	return nil
}

// ActiveCount is the number of active sessions this broker holds.
func (m *LiveSessions) ActiveCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	n := 0
	for _, s := range m.live {
		if s.Info(now).State == policy.StateActive {
			n++
		}
	}
	return n
}
