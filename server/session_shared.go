package server

import (
	"time"

	"github.com/keyhole-dev/keyhole/policy"
)

// A session of a store shared by several brokers is counted by the store:
// each call is one atomic UPDATE … RETURNING, which gives this call's
// number (max_calls is checked against it, so it holds exactly across
// brokers) and the session as the store holds it (a revocation or a
// tripwire through another broker ends it here at this call). A denial
// is counted there too, so the tripwire counts every broker's denials.
// These methods shadow policy.Session's for the pipeline; on the embedded
// store they are policy.Session's.

// CodeStoreUnavailable denies a call the shared store could not count:
// without the count neither revocation nor max_calls can be known.
const CodeStoreUnavailable = "session_store_unavailable"

// Decide counts the call in the shared store, takes what the store holds
// of the session, then decides as policy.Session.Decide does.
func (s *Session) Decide(now time.Time, req policy.Request) policy.Decision {
	if s.shared == nil {
		return s.Session.Decide(now, req)
	}
	sh, err := s.shared.CountCall(s.ID(), now)
	if err != nil {
		return policy.Decision{Code: CodeStoreUnavailable, Reason: "keyhole could not reach the store that counts this session's calls, so the call was not made; try again"}
	}
	before := s.Session.Adopt(now, sh)
	d := s.Session.DecideNth(now, req, sh.Calls)
	s.shareDenial(now, before.Denials)
	return d
}

// NoteDenial is policy.Session.NoteDenial, counted in the shared store.
func (s *Session) NoteDenial(now time.Time) policy.Tripwire {
	return s.noted(now, s.Session.NoteDenial)
}

// NoteScrubbed is policy.Session.NoteScrubbed, counted in the shared
// store.
func (s *Session) NoteScrubbed(now time.Time) policy.Tripwire {
	return s.noted(now, s.Session.NoteScrubbed)
}

func (s *Session) noted(now time.Time, note func(time.Time) policy.Tripwire) policy.Tripwire {
	if s.shared == nil {
		return note(now)
	}
	before := s.Info(now).Denials
	t := note(now)
	if info := s.shareDenial(now, before); t.Counted && !t.Ended && info.State == policy.StateEnded {
		t.Ended, t.Left = true, 0 // another broker's denials took it over the limit
	}
	return t
}

// shareDenial counts in the shared store the denial this broker just
// counted (if it did) and takes the store's total, which ends the
// session when every broker's denials together reach max_denials.
func (s *Session) shareDenial(now time.Time, before int) policy.SessionInfo {
	info := s.Info(now)
	if info.Denials <= before {
		return info
	}
	sh, err := s.shared.CountDenial(s.ID())
	if err != nil {
		return info // counted here; the store's total catches up at the next denial
	}
	return s.Session.Adopt(now, sh)
}
