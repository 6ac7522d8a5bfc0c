package policy

import (
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// State is where a session is in its life.
type State string

// Session states. Only an active session's calls are checked against its
// scope; the others are final.
const (
	StateActive  State = "active"
	StateExpired State = "expired"
	StateRevoked State = "revoked"
	StateEnded   State = "ended"
)

// SessionInfo is a session's exportable state: what the server persists
// and lists, and what RestoreSession takes back.
type SessionInfo struct {
	ID      string    `json:"id"`
	Scope   string    `json:"scope"`
	Label   string    `json:"label,omitempty"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires"`
	State   State     `json:"state"`
	// Calls counts every call Decide checked while the session was live.
	Calls int `json:"calls"`
	// Denials counts what the tripwire counts: calls the scope refused,
	// plus NoteDenial and NoteScrubbed. Rate and max_calls refusals are
	// limits, not probing, and are not counted.
	Denials   int       `json:"denials"`
	LastCall  time.Time `json:"last_call,omitzero"`
	EndReason string    `json:"end_reason,omitempty"`
	// Config names the config file the session's scope came from (its
	// absolute path). Policy does not read it; it is shown and audited.
	Config string `json:"config,omitempty"`
	// Grants are the exact grants people added to this session by
	// approving access requests with --for-session.
	Grants []ExactGrant `json:"grants,omitempty"`
}

// Session is one run of one agent under one scope. Its methods are safe
// for concurrent use. Time is always passed in: expiry is decided by the
// caller's clock, never by a store's TTL.
type Session struct {
	scope   *Scope
	limiter *rate.Limiter // nil: no rate limit

	mu   sync.Mutex
	info SessionInfo
}

// NewSession starts an active session of scope at now. ttl 0, negative,
// or longer than the scope's ttl gives the scope's ttl: a session never
// outlives its scope's limit (use Scope.SessionTTL to refuse instead).
func NewSession(id string, scope *Scope, now time.Time, ttl time.Duration, label string) *Session {
	if ttl <= 0 || ttl > scope.ttl {
		ttl = scope.ttl
	}
	return RestoreSession(SessionInfo{
		ID:      id,
		Scope:   scope.name,
		Label:   label,
		Created: now,
		Expires: now.Add(ttl),
		State:   StateActive,
	}, scope)
}

// RestoreSession rebuilds a persisted session under scope. Counters and
// state are kept; the rate limiter starts full. An empty State is active.
// A session never comes back with more than its scope gives: its expiry
// is clamped to Created + the scope's ttl, and an active session whose
// denials have reached max_denials is ended by the tripwire.
func RestoreSession(info SessionInfo, scope *Scope) *Session {
	if info.State == "" {
		info.State = StateActive
	}
	info.Scope = scope.name
	if latest := info.Created.Add(scope.ttl); !info.Created.IsZero() && info.Expires.After(latest) {
		info.Expires = latest
	}
	s := &Session{scope: scope, info: info}
	if info.State == StateActive && s.scope.maxDenials > 0 && info.Denials >= s.scope.maxDenials {
		s.info.Denials-- // denyLocked counts the one that trips
		s.denyLocked()
	}
	if scope.limit.burst > 0 {
		s.limiter = rate.NewLimiter(scope.limit.every, scope.limit.burst)
	}
	return s
}

// ID returns the session's id.
func (s *Session) ID() string { return s.info.ID }

// Scope returns the scope the session runs under.
func (s *Session) Scope() *Scope { return s.scope }

// Info returns the session's state as of now. An active session shows as
// expired once now >= Expires, and stays expired from then on even if the
// clock goes back.
func (s *Session) Info(now time.Time) SessionInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checkExpiry(now)
	return s.info
}

// Decide is the full per-call check, in order: the session's state
// (revoked or ended is denied), expiry (now >= Expires is
// session_expired, permanently), max_calls (every call that gets this far
// counts, allowed or not), rate, then the scope's grants. A call the scope
// refuses counts as a denial; when denials reach the scope's max_denials
// the session ends and that call's code is too_many_denials.
func (s *Session) Decide(now time.Time, req Request) Decision {
	return s.decide(now, req, 0)
}

// DecideNth is Decide for a call that a store shared by several brokers
// counted as the session's n-th (see Adopt): max_calls is checked
// against n, so it holds exactly however the calls are spread over
// brokers. n is counted only while the session is live.
func (s *Session) DecideNth(now time.Time, req Request, n int) Decision {
	return s.decide(now, req, n)
}

func (s *Session) decide(now time.Time, req Request, n int) Decision {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d, live := s.liveLocked(now); !live {
		return d
	}
	s.info.Calls++
	if n > 0 {
		s.info.Calls = max(s.info.Calls-1, n)
	} else {
		n = s.info.Calls
	}
	s.info.LastCall = now
	if max := s.scope.maxCalls; max > 0 && n > max {
		return Decision{Code: CodeMaxCalls, Reason: "session " + s.info.ID + " has used all " + strconv.Itoa(max) + " calls of scope " + s.scope.name}
	}
	if s.limiter != nil && !s.limiter.AllowN(now, 1) {
		return Decision{Code: CodeRateLimited, Reason: "scope " + s.scope.name + " allows " + s.scope.limit.text + "; slow down and retry"}
	}
	d := s.scope.Decide(req)
	if d.Allow {
		return d
	}
	if ed, ok := s.exactLocked(req); ok {
		return ed
	}
	if d.Code == CodeNotGranted && s.scope.approval.OnDenyRequest {
		// Not a denial yet: a person may approve it. The caller counts
		// it (NoteDenial) if it cannot become a request.
		d.Ask = true
	}
	if !d.Ask && s.denyLocked() {
		d.Code = CodeTripwire
		d.Reason += "; " + s.info.EndReason
	}
	return d
}

// Shared is a session as a store shared by several brokers holds it: its
// state (an operator may have revoked it through another broker, or a
// tripwire ended it there) and its counters, counted by the store.
type Shared struct {
	State     State
	EndReason string
	Calls     int
	Denials   int
}

// Adopt takes what the shared store holds of the session: a final state
// reached on another broker is this session's final state, and its
// counters only grow. An active session whose denials reached
// max_denials is ended by the tripwire. It returns the session's info
// afterwards.
func (s *Session) Adopt(now time.Time, sh Shared) SessionInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checkExpiry(now)
	s.info.Calls = max(s.info.Calls, sh.Calls)
	if s.info.State == StateActive {
		switch sh.State {
		case StateRevoked, StateEnded, StateExpired:
			s.info.State, s.info.EndReason = sh.State, sh.EndReason
		}
	}
	if sh.Denials > s.info.Denials {
		s.info.Denials = sh.Denials
		if s.info.State == StateActive && s.scope.maxDenials > 0 && s.info.Denials >= s.scope.maxDenials {
			s.info.Denials-- // denyLocked counts the one that trips
			s.denyLocked()
		}
	}
	return s.info
}

// Tripwire is where a session stands against its max_denials after a
// denial was counted.
type Tripwire struct {
	// Counted says the denial counted toward max_denials (the scope has
	// one and the session was live).
	Counted bool
	// Left is how many more denials end the session.
	Left int
	// Ended says this denial ended the session.
	Ended bool
}

// NoteScrubbed records that a result of this session had a secret
// scrubbed from it. It counts as a denial toward the tripwire.
func (s *Session) NoteScrubbed(now time.Time) Tripwire { return s.note(now) }

// NoteDenial records a call refused before Decide (invalid arguments). It
// counts as a denial toward the tripwire.
func (s *Session) NoteDenial(now time.Time) Tripwire { return s.note(now) }

func (s *Session) note(now time.Time) Tripwire {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, live := s.liveLocked(now); !live {
		return Tripwire{}
	}
	ended := s.denyLocked()
	if s.scope.maxDenials <= 0 {
		return Tripwire{}
	}
	return Tripwire{Counted: true, Left: max(0, s.scope.maxDenials-s.info.Denials), Ended: ended}
}

// Trip ends a live session at once, as a tripwire with its own reason and
// code (CodeSecretInArguments, say): the call that tripped it showed the
// agent is probing, whatever max_denials allows. It returns the denial
// of that call. A session already over keeps its state.
func (s *Session) Trip(now time.Time, code, why string) Decision {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d, live := s.liveLocked(now); !live {
		return d
	}
	s.info.Calls++
	s.info.LastCall = now
	s.info.Denials++
	s.info.State = StateEnded
	s.info.EndReason = "tripwire: this session was ended because " + why + "; ask the user for a new session"
	return Decision{Code: code, Reason: "session " + s.info.ID + " ended: " + s.info.EndReason}
}

// Revoke ends a live session by an operator's decision; its next call is
// session_revoked. A session already expired, revoked or ended keeps its
// state.
func (s *Session) Revoke(reason string) { s.finish(StateRevoked, reason) }

// End ends a live session (the run is over, or a tripwire fired); its
// next call is session_ended. A session already expired, revoked or ended
// keeps its state.
func (s *Session) End(reason string) { s.finish(StateEnded, reason) }

func (s *Session) finish(st State, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.info.State == StateActive {
		s.info.State, s.info.EndReason = st, reason
	}
}

// checkExpiry marks an active session expired once now >= Expires.
func (s *Session) checkExpiry(now time.Time) {
	if s.info.State == StateActive && !now.Before(s.info.Expires) {
		s.info.State = StateExpired
	}
}

// liveLocked reports whether the session may make a call at now, and
// the denial if not.
func (s *Session) liveLocked(now time.Time) (Decision, bool) {
	s.checkExpiry(now)
	switch s.info.State {
	case StateActive:
		return Decision{}, true
	case StateExpired:
		return Decision{Code: CodeSessionExpired, Reason: s.info.DeadReason()}, false
	case StateRevoked:
		return Decision{Code: CodeSessionRevoked, Reason: s.info.DeadReason()}, false
	default:
		return Decision{Code: CodeSessionEnded, Reason: s.info.DeadReason()}, false
	}
}

// DeadReason says why a session that is not active gets nothing, in
// words its agent can pass on to the user ("" for an active session):
// the same text every call of the session is denied with.
func (i SessionInfo) DeadReason() string {
	switch i.State {
	case StateActive, "":
		return ""
	case StateExpired:
		return "session " + i.ID + " expired at " + i.Expires.UTC().Format(time.RFC3339) + "; start a new session"
	case StateRevoked:
		return "session " + i.ID + " was revoked" + because(i.EndReason)
	default:
		return "session " + i.ID + " has ended" + because(i.EndReason)
	}
}

// denyLocked counts a denial and reports whether it tripped the tripwire,
// ending the session.
func (s *Session) denyLocked() bool {
	s.info.Denials++
	max := s.scope.maxDenials
	if max <= 0 || s.info.Denials < max {
		return false
	}
	s.info.State = StateEnded
	s.info.EndReason = "tripwire: this session was ended after " + strconv.Itoa(s.info.Denials) + " denials; ask the user for a new session (max_denials " + strconv.Itoa(max) + " of scope " + s.scope.name + ")"
	return true
}

func because(reason string) string {
	if reason == "" {
		return ""
	}
	return ": " + reason
}

// Live returns whether the session may make a call at now: an allowing
// Decision while it is active, else the denial Decide would give. It
// counts nothing.
func (s *Session) Live(now time.Time) Decision {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d, live := s.liveLocked(now); !live {
		return d
	}
	return Decision{Allow: true, Reason: "session " + s.info.ID + " is active"}
}

// Recheck decides a follow-up request of a call Decide already allowed (a
// redirect hop): the session must still be live and the scope (or an
// exact grant of the session) must grant the request; one that needs a
// person's approval is refused. It spends nothing: no call, rate or denial is counted, so a
// hop cannot use up the session's limits or trip its tripwire.
func (s *Session) Recheck(now time.Time, req Request) Decision {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d, live := s.liveLocked(now); !live {
		return d
	}
	d := s.scope.Decide(req)
	if !d.Allow {
		if ed, ok := s.exactLocked(req); ok {
			return ed
		}
		d.Ask = false // a hop is part of its call; nobody is asked
	}
	return d
}
