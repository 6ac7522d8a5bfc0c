package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/keyhole-dev/keyhole/policy"
	"github.com/keyhole-dev/keyhole/server/admin"
	"github.com/keyhole-dev/keyhole/server/config"
	"github.com/keyhole-dev/keyhole/server/sessions"
)

// LiveSessions are the phantom-token sessions a broker serves: created by
// an operator (`keyhole session new`) or by a local stdio client through
// the broker, persisted in a sessions.Store in the data dir, and kept live
// in memory while the broker runs, so a session's counters and limiter
// hold across reconnects and revocation takes effect on the next call.
//
// A session runs the config it started with: its bytes are kept in the
// store beside the session, and a restarted broker compiles those, never
// the file as it is now. A change of state (an end, a revocation, a
// tripwire) is written at once; counters are written every second, and a
// restart takes them back from the audit log, which holds every call.
type LiveSessions struct {
	configs *Configs
	history func(id string) (SessionUsage, error)
	loaded  func(*config.Loaded, string)
	now     func() time.Time
	log     *slog.Logger
	store   SessionStore
	// replica is set on a broker of a shared store: see
	// LiveSessionsOptions.Replica.
	replica string

	mu     sync.Mutex
	live   map[string]*Session     // by session id
	byHash map[string]*Session     // by token hash, so a request needs no store read
	dirty  map[string]*Session     // counters changed since the last Flush
	saved  map[string]policy.State // the state last written, by session id
}

// SessionUsage is what the audit log holds of one session's calls.
type SessionUsage struct {
	Calls, Denials int
	LastCall       time.Time
}

// LiveSessionsOptions is what LiveSessions take from the broker.
type LiveSessionsOptions struct {
	// Configs are the configs sessions start with (Broker.Configs).
	Configs *Configs
	// History, if set, counts a session's calls and denials in the audit
	// log; a restored session takes the larger of those and its record's.
	History func(id string) (SessionUsage, error)
	// ConfigLoaded, if set, is told of every new version of a config file
	// a session start loaded, and why.
	ConfigLoaded func(cfg *config.Loaded, why string)
	// Now is the clock sessions expire by; nil is time.Now.
	Now    func() time.Time
	Logger *slog.Logger
	// Replica, set on a broker of a store shared by several brokers (its
	// name), makes it serve only sessions of a config version it loaded
	// from its own config file: every broker must load the same
	// keyhole.yaml, and one that loaded another refuses such a session's
	// calls (ConfigMismatchError) rather than run another scope, leaving
	// the session to the brokers that can serve it.
	Replica string
}

// NewLiveSessions serves the sessions of store. A store that counts calls
// itself (a SharedCounter) counts every call of every session.
func NewLiveSessions(store SessionStore, o LiveSessionsOptions) *LiveSessions {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &LiveSessions{configs: o.Configs, history: o.History, loaded: o.ConfigLoaded, now: o.Now, log: o.Logger, store: store, replica: o.Replica,
		live: map[string]*Session{}, byHash: map[string]*Session{}, dirty: map[string]*Session{}, saved: map[string]policy.State{}}
}

// ErrSessionDead is returned for a token whose session is expired, revoked
// or ended.
var ErrSessionDead = errors.New("session is not active")

// End reasons a broker gives.
const (
	reasonBrokerStopped = "broker stopped"
	reasonTampered      = "its record was changed on disk (it fails its MAC)"
)

// Create starts a session of a scope of the config the request names (the
// file as it is now) and returns its info and phantom token. A ttl
// longer than the scope allows is refused.
func (m *LiveSessions) Create(req admin.SessionRequest) (policy.SessionInfo, string, error) {
	cfg, changed, err := m.configs.Current(req.Config)
	if err != nil {
		return policy.SessionInfo{}, "", err
	}
	if changed && m.loaded != nil {
		m.loaded(cfg, "loaded for a new session of scope "+req.Scope)
	}
	sc, ok := cfg.Policy.Scope(req.Scope)
	if !ok {
		return policy.SessionInfo{}, "", fmt.Errorf("keyhole: scope %q is not defined in %s (defined: %v)", req.Scope, cfg.Path, cfg.Policy.ScopeNames())
	}
	if req.TTL != 0 {
		if _, err := sc.SessionTTL(req.TTL); err != nil {
			return policy.SessionInfo{}, "", err
		}
	}
	s := &Session{Session: policy.NewSession(NewSessionID(), sc, m.now(), req.TTL, req.Label), cfg: cfg, relay: req.Relay}
	info := s.Info(m.now())
	info.Config = cfg.Path
	s.Session = policy.RestoreSession(info, sc)
	if err := m.store.PutConfig(cfg.Digest, cfg.Source); err != nil {
		return policy.SessionInfo{}, "", err
	}
	tok, err := m.store.Create(sessions.Record{SessionInfo: info, ConfigSHA256: cfg.Digest, Relay: req.Relay})
	if err != nil {
		return policy.SessionInfo{}, "", err
	}
	m.track(s, sessions.Hash(tok), info.State)
	return info, tok, nil
}

// track makes s live. Its counters are marked dirty after each call and
// written by Flush, so a call costs no store write; a change of state
// (an end, a revocation, a tripwire, expiry) is written at once.
func (m *LiveSessions) track(s *Session, tokenHash string, saved policy.State) {
	if sc, ok := m.store.(SharedCounter); ok {
		s.shared = sc
	}
	s.persist = func(info policy.SessionInfo) {
		m.mu.Lock()
		changed := m.saved[info.ID] != info.State
		if !changed {
			m.dirty[info.ID] = s
		}
		m.mu.Unlock()
		if changed {
			m.saveNow(s)
		}
	}
	m.mu.Lock()
	m.live[s.ID()] = s
	m.byHash[tokenHash] = s
	m.saved[s.ID()] = saved
	m.mu.Unlock()
}

// Flush writes the counters of every session that served calls since the
// last Flush, in one transaction. The broker flushes every second and on
// shutdown; after a crash, a restart counts the calls in the audit log.
func (m *LiveSessions) Flush() error {
	m.mu.Lock()
	dirty := m.dirty
	m.dirty = map[string]*Session{}
	m.mu.Unlock()
	if len(dirty) == 0 {
		return nil
	}
	now := m.now()
	infos := make([]policy.SessionInfo, 0, len(dirty))
	for _, s := range dirty {
		infos = append(infos, s.Info(now))
	}
	if err := m.store.Save(infos...); err != nil {
		// One bad record must not lose the others' counters.
		var errs []error
		for _, s := range dirty {
			errs = append(errs, m.saveNow(s))
		}
		return errors.Join(errs...)
	}
	return nil
}

// saveNow writes one session's state immediately (fsynced).
func (m *LiveSessions) saveNow(s *Session) error {
	info := s.Info(m.now())
	if err := m.store.Save(info); err != nil {
		m.log.Warn("save session", LogSession, s.ID(), LogError, err)
		return err
	}
	m.mu.Lock()
	m.saved[info.ID] = info.State
	m.mu.Unlock()
	return nil
}

// Authenticate returns the live session a phantom token names. Unknown
// tokens get sessions.ErrUnknownToken; a session that is no longer active
// (or whose record was changed on disk) gets ErrSessionDead.
func (m *LiveSessions) Authenticate(tok string) (*Session, error) {
	if !sessions.WellFormed(tok) {
		return nil, sessions.ErrUnknownToken
	}
	m.mu.Lock()
	s, ok := m.byHash[sessions.Hash(tok)]
	m.mu.Unlock()
	if !ok {
		rec, err := m.store.Lookup(tok)
		if errors.Is(err, sessions.ErrTampered) {
			m.quarantine(rec.ID)
			return nil, fmt.Errorf("%w: %s", ErrSessionDead, reasonTampered)
		}
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

// quarantine ends a session whose record failed its MAC.
func (m *LiveSessions) quarantine(id string) {
	if id == "" {
		return
	}
	if err := m.store.Quarantine(id, reasonTampered); err != nil {
		m.log.Warn("end a session whose record was changed", LogSession, id, LogError, err)
		return
	}
	m.log.Warn("session ended: its record was changed on disk", LogSession, id)
}

// get returns the live session of a stored record, restoring it when this
// broker has not served it yet (see restore).
func (m *LiveSessions) get(rec sessions.Record) (*Session, error) {
	m.mu.Lock()
	s, ok := m.live[rec.ID]
	m.mu.Unlock()
	if ok {
		return s, nil
	}
	if rec.Tampered {
		m.quarantine(rec.ID)
		return nil, fmt.Errorf("%w: %s", ErrSessionDead, reasonTampered)
	}
	s, err := m.restore(rec)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	if existing, ok := m.live[rec.ID]; ok {
		m.mu.Unlock()
		return existing, nil
	}
	m.mu.Unlock()
	m.track(s, rec.TokenHash, rec.State)
	if info := s.Info(m.now()); !reflect.DeepEqual(info, rec.SessionInfo) {
		m.saveNow(s)
	}
	return s, nil
}

// restore rebuilds a stored session under the config it started with,
// compiled from the bytes kept with it. An active session takes back the
// calls and denials the audit log holds of it, its expiry is clamped to
// its creation plus its scope's ttl, and its tripwire fires if its
// denials reached max_denials. A session whose config cannot be had or
// compiled any more is ended with the reason.
func (m *LiveSessions) restore(rec sessions.Record) (*Session, error) {
	cfg, err := m.pinned(rec)
	var mismatch *ConfigMismatchError
	if errors.As(err, &mismatch) {
		return nil, err // not ended: another broker serves it
	}
	var sc *policy.Scope
	if err == nil {
		var ok bool
		if sc, ok = cfg.Policy.Scope(rec.Scope); !ok {
			err = fmt.Errorf("scope %s is not in the config it started with", rec.Scope)
		}
	}
	if err != nil {
		if rec.State == policy.StateActive {
			rec.State, rec.EndReason = policy.StateEnded, "its scope cannot be restored: "+err.Error()
			if serr := m.store.Save(rec.SessionInfo); serr != nil {
				m.log.Warn("end session", LogSession, rec.ID, LogError, serr)
			}
			m.log.Warn("session ended: its scope cannot be restored", LogSession, rec.ID, LogError, err)
		}
		return nil, fmt.Errorf("%w: %s", ErrSessionDead, rec.EndReason)
	}
	info := rec.SessionInfo
	if info.State == policy.StateActive && m.history != nil {
		u, err := m.history(rec.ID)
		if err != nil {
			m.log.Warn("count a session's calls in the audit log", LogSession, rec.ID, LogError, err)
		}
		info.Calls, info.Denials = max(info.Calls, u.Calls), max(info.Denials, u.Denials)
		if u.LastCall.After(info.LastCall) {
			info.LastCall = u.LastCall
		}
	}
	return &Session{Session: policy.RestoreSession(info, sc), cfg: cfg, relay: rec.Relay}, nil
}

// pinned returns the config a stored session started with.
func (m *LiveSessions) pinned(rec sessions.Record) (*config.Loaded, error) {
	if rec.ConfigSHA256 == "" {
		return nil, errors.New("its record names no config (it was written by an older keyhole)")
	}
	if m.replica != "" && !m.configs.FromFile(rec.ConfigSHA256) {
		return nil, &ConfigMismatchError{Session: rec.ID, Replica: m.replica, Want: rec.ConfigSHA256, Path: rec.Config, Have: m.configs.Digests()}
	}
	body, err := m.store.Config(rec.ConfigSHA256)
	if err != nil {
		return nil, fmt.Errorf("the config it started with is not kept: %w", err)
	}
	cfg, err := m.configs.Pinned(rec.ConfigSHA256, rec.Config, body)
	if err != nil {
		return nil, fmt.Errorf("the config it started with no longer loads: %w", err)
	}
	return cfg, nil
}

// Restore runs when a broker starts: every session a stopped or killed
// broker left active is restored under its own config (see restore) and
// written back; a relayed stdio session, whose client went with that
// broker, is ended (reason: broker stopped); a record changed on disk is
// ended for good. It returns how many sessions it restored and ended.
func (m *LiveSessions) Restore() (restored, ended int, err error) {
	if m.replica != "" {
		// A shared store's sessions are served by every broker: each is
		// restored when a broker first sees its token, and a relayed
		// stdio session may be another live broker's.
		return 0, 0, nil
	}
	recs, err := m.store.List()
	if err != nil {
		return 0, 0, err
	}
	now := m.now()
	for _, r := range recs {
		switch {
		case r.Tampered:
			if r.State != policy.StateEnded || r.EndReason != reasonTampered {
				m.quarantine(r.ID)
				ended++
			}
		case r.State != policy.StateActive || !now.Before(r.Expires):
		case r.Relay:
			r.State, r.EndReason = policy.StateEnded, reasonBrokerStopped
			if err := m.store.Save(r.SessionInfo); err != nil {
				return restored, ended, err
			}
			ended++
		default:
			s, err := m.get(r)
			if err != nil || s.Info(now).State != policy.StateActive {
				ended++
				continue
			}
			restored++
		}
	}
	return restored, ended, nil
}

// EndRelays ends every relayed stdio session this broker serves: their
// clients cannot reach a broker that stops.
func (m *LiveSessions) EndRelays(reason string) {
	m.mu.Lock()
	var relays []*Session
	for _, s := range m.live {
		if s.relay {
			relays = append(relays, s)
		}
	}
	m.mu.Unlock()
	for _, s := range relays {
		if s.Info(m.now()).State == policy.StateActive {
			s.End(reason)
			m.saveNow(s)
			s.endMinted(context.Background(), m.log)
		}
	}
}

// RevokeMinted revokes, as the broker stops, what the tools minted for
// each session it holds (GitHub App installation tokens). The sessions
// outlive the broker (the next one restores them and mints its own
// tokens); the tokens would otherwise stay valid until they expire. What
// ctx's deadline leaves unrevoked expires on its own.
func (m *LiveSessions) RevokeMinted(ctx context.Context) {
	m.mu.Lock()
	live := make([]*Session, 0, len(m.live))
	for _, s := range m.live {
		live = append(live, s)
	}
	m.mu.Unlock()
	for _, s := range live {
		s.revokeMinted(ctx, m.log)
	}
}

// List returns every session's current state, oldest first. Without all,
// only active sessions. A record changed on disk is listed as ended.
func (m *LiveSessions) List(all bool) ([]policy.SessionInfo, error) {
	recs, err := m.store.List()
	if err != nil {
		return nil, err
	}
	now := m.now()
	var out []policy.SessionInfo
	for _, r := range recs {
		info := r.SessionInfo
		if r.Tampered {
			info.State, info.EndReason = policy.StateEnded, reasonTampered
		}
		m.mu.Lock()
		if s, ok := m.live[r.ID]; ok {
			info = s.Info(now)
			if m.replica != "" {
				// Other brokers' calls are in the store's counters.
				info = s.Adopt(now, policy.Shared{State: r.State, EndReason: r.EndReason, Calls: r.Calls, Denials: r.Denials})
			}
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
		// Not live: as stored (restore may just have ended it).
		if again, gerr := m.store.Get(id); gerr == nil {
			rec = again
		}
		if rec.Tampered {
			rec.State, rec.EndReason = policy.StateEnded, reasonTampered
		}
		return rec.SessionInfo, nil
	}
	if m.replica != "" {
		// Other brokers' calls and ends are in the store's record.
		return s.Adopt(m.now(), policy.Shared{State: rec.State, EndReason: rec.EndReason, Calls: rec.Calls, Denials: rec.Denials}), nil
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
		var mismatch *ConfigMismatchError
		if errors.As(err, &mismatch) && r.State == policy.StateActive && m.now().Before(r.Expires) {
			// This broker cannot serve it, but may end it for all.
			info := r.SessionInfo
			info.State, info.EndReason = policy.StateRevoked, reason
			if err := m.store.Save(info); err == nil {
				done = append(done, r.ID)
			}
			continue
		}
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
	n, _ := m.counts()
	return n
}

// counts returns the active sessions this broker holds, and how many of
// them are relayed stdio clients.
func (m *LiveSessions) counts() (active, relays int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	for _, s := range m.live {
		if s.Info(now).State == policy.StateActive {
			active++
			if s.relay {
				relays++
			}
		}
	}
	return active, relays
}

// ConfigMismatchError is a session of a shared store started under a
// config version this broker did not load from its config file: it
// refuses the session's calls rather than run another scope.
type ConfigMismatchError struct {
	Session, Replica string
	// Want is the SHA-256 of the config the session runs (from Path on
	// the broker that started it); Have are those this broker loaded.
	Want, Path string
	Have       []string
}

func (e *ConfigMismatchError) Error() string {
	have := "none"
	if len(e.Have) > 0 {
		short := make([]string, len(e.Have))
		for i, h := range e.Have {
			short[i] = h[:min(12, len(h))]
		}
		have = strings.Join(short, ", ")
	}
	return fmt.Sprintf("session %s runs config %s (sha256 %s), which broker %s did not load (it loaded sha256 %s): every broker of a shared store must load the same keyhole.yaml; reload this broker with that file, or start a new session",
		e.Session, e.Path, e.Want[:min(12, len(e.Want))], e.Replica, have)
}
